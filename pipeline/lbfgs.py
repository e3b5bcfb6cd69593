"""L-BFGS with one curvature history per image of a batch.

torch.optim.LBFGS treats its parameters as one vector, so images optimized together in a batch
would share step directions and the result of one image would depend on its batchmates. This
optimizer runs the same algorithm as torch's (fixed step, no line search, the same first step and
curvature check) independently for every image. A step is a fixed sequence of tensor operations
on buffers allocated once, updated in place: no host-device synchronisation, no Python-side
branch on the data, the same shapes every step, so that it can be recorded as a CUDA graph.

The product of the inverse-Hessian estimate with the gradient uses the compact representation of
Byrd, Nocedal and Schnabel (1994; Nocedal and Wright eq. 7.24) instead of torch's two-loop
recursion: the same direction in exact arithmetic, but a handful of batched matrix products
instead of ~10 small kernels per stored pair, which on a GPU would cost more than the network.

Departures from torch: a pair that fails the curvature check still takes a (neutral, all-zero)
history slot, so that the slots stay aligned across the batch (the first step stores such a pair,
and empty slots are zero too, so the products always run over the whole history); until a pair
has been accepted the small first step is kept (torch's unit step along -grad can throw a flat
image's pixels to 1e12); a direction that is not a descent direction falls back to scaled
steepest descent.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .settings import HISTORY_SIZE


class BatchedLBFGS:
    def __init__(self, image: torch.Tensor, *, lr: float = 1.0, history_size: int = HISTORY_SIZE):
        self.image = image
        self.lr = lr
        self.capacity = history_size
        batch, size = image.shape[0], image[0].numel()
        self.dtype = torch.promote_types(image.dtype, torch.float32)
        options = {"device": image.device, "dtype": self.dtype}
        # Ring buffers of steps s_k = x_{k+1} - x_k and gradient changes y_k = g_{k+1} - g_k, and
        # their inner products, updated one row and column per step instead of recomputed.
        self.steps = torch.zeros(batch, history_size, size, **options)
        self.grad_diffs = torch.zeros(batch, history_size, size, **options)
        self.sy = torch.zeros(batch, history_size, history_size, **options)  # sy[i, j] = s_i . y_j
        self.yy = torch.zeros(batch, history_size, history_size, **options)
        # The slot of the newest pair, on the device: the first pair goes to slot 0.
        self.newest = torch.full((1,), history_size - 1, dtype=torch.long, device=image.device)
        self.slots = torch.arange(history_size, device=image.device)
        self.h_diag = torch.ones(batch, 1, **options)  # gamma = s.y / y.y of the newest accepted pair
        self.has_curvature = torch.zeros(batch, 1, dtype=torch.bool, device=image.device)
        # Zeros before the first step: its pair (s = 0) fails the curvature check.
        self.prev_grad = torch.zeros(batch, size, **options)
        self.prev_step = torch.zeros(batch, size, **options)

    @staticmethod
    def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a * b).sum(1, keepdim=True)

    def _remember(self, s: torch.Tensor, y: torch.Tensor) -> None:
        """Store a pair in the oldest slot; where an image rejected it, store zeros (neutral in the products)."""
        self.newest.add_(1).remainder_(self.capacity)
        slot = self.newest
        self.steps.index_copy_(1, slot, s.unsqueeze(1))
        self.grad_diffs.index_copy_(1, slot, y.unsqueeze(1))
        self.sy.index_copy_(1, slot, torch.bmm(self.grad_diffs, s.unsqueeze(2)).transpose(1, 2))  # s_new . y_j
        self.sy.index_copy_(2, slot, torch.bmm(self.steps, y.unsqueeze(2)))  # s_i . y_new
        y_products = torch.bmm(self.grad_diffs, y.unsqueeze(2))
        self.yy.index_copy_(1, slot, y_products.transpose(1, 2))
        self.yy.index_copy_(2, slot, y_products)

    def _inverse_hessian_times(self, grad: torch.Tensor) -> torch.Tensor:
        """H g = gamma g + S t - gamma Y p, with p = R^-1 S^T g and
        t = R^-T ((D + gamma Y^T Y) p - gamma Y^T g), R = upper triangle of S^T Y (oldest first)."""
        gamma = self.h_diag.unsqueeze(2)
        order = (self.newest + 1 + self.slots).remainder_(self.capacity)  # slots, oldest pair first
        position = (self.slots - self.newest - 1).remainder_(self.capacity)  # each slot's place in order
        sy = self.sy.index_select(1, order).index_select(2, order)
        yy = self.yy.index_select(1, order).index_select(2, order)
        diagonal = torch.diagonal(sy, dim1=1, dim2=2)
        # A rejected pair is all zeros: a unit diagonal keeps R invertible and the pair inert.
        r = torch.triu(sy) + torch.diag_embed((diagonal == 0).to(sy.dtype))
        s_g = torch.bmm(self.steps, grad.unsqueeze(2)).index_select(1, order)  # (B, m, 1)
        y_g = torch.bmm(self.grad_diffs, grad.unsqueeze(2)).index_select(1, order)
        p = torch.linalg.solve_triangular(r, s_g, upper=True)
        rhs = diagonal.unsqueeze(2) * p + gamma * torch.bmm(yy, p) - gamma * y_g
        t = torch.linalg.solve_triangular(r.transpose(1, 2), rhs, upper=False)
        # Back from oldest-first order to slot order, as rows (B, 1, m) for the products.
        weights_s = t.index_select(1, position).transpose(1, 2)
        weights_y = -(gamma * p).index_select(1, position).transpose(1, 2)
        return (
            gamma.squeeze(2) * grad
            + torch.bmm(weights_s, self.steps).squeeze(1)
            + torch.bmm(weights_y, self.grad_diffs).squeeze(1)
        )

    def step(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:
        """torch.optim's interface: `closure` computes the loss and its gradient into image.grad."""
        with torch.enable_grad():
            loss = closure()
        self.update(self.image.grad)
        return loss

    def update(self, grad: torch.Tensor) -> None:
        """One step of every image from the gradient at the current image."""
        grad = grad.detach().flatten(1).to(self.dtype)
        y = grad - self.prev_grad
        s = self.prev_step
        ys = self._dot(y, s)
        accept = ys > 1e-10  # torch's curvature check, per image
        self._remember(torch.where(accept, s, 0.0), torch.where(accept, y, 0.0))
        self.h_diag.copy_(torch.where(accept, ys / self._dot(y, y).clamp(min=1e-30), self.h_diag))
        self.has_curvature.logical_or_(accept)
        direction = -self._inverse_hessian_times(grad)
        descent = self._dot(grad, direction) < 0
        direction = torch.where(descent, direction, -grad * self.h_diag)
        # torch's first step: t = min(1, 1/|g|_1) * lr, kept until a pair has been accepted.
        first_step = torch.clamp(1.0 / grad.abs().sum(1, keepdim=True), max=1.0) * self.lr
        step_size = torch.where(self.has_curvature, self.lr, first_step)
        self.prev_grad.copy_(grad)
        torch.mul(direction, step_size, out=self.prev_step)
        with torch.no_grad():
            self.image.add_(self.prev_step.view_as(self.image).to(self.image.dtype))

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.image.grad = None
