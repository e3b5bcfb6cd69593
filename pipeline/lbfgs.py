"""L-BFGS with one curvature history per image of a batch.

torch.optim.LBFGS treats its parameters as one vector, so images optimized together in a batch
would share step directions and the result of one image would depend on its batchmates. This
optimizer runs the same algorithm as torch's (two-loop recursion, fixed step, no line search, the
same first step and curvature check) independently for every image, with all per-image scalars
kept as tensors: no host-device synchronisation inside a step. Departure from torch: a pair that
fails the curvature check still takes a (no-op) history slot, so that the slots stay aligned
across the batch.
"""

from __future__ import annotations

from typing import Callable

import torch


class BatchedLBFGS:
    def __init__(self, image: torch.Tensor, *, lr: float = 1.0, history_size: int = 100):
        self.image = image
        self.lr = lr
        self.history_size = history_size
        batch = image.shape[0]
        self.old_steps: list[torch.Tensor] = []  # s_k = x_{k+1} - x_k, each (B, D)
        self.old_grad_diffs: list[torch.Tensor] = []  # y_k = g_{k+1} - g_k
        self.rhos: list[torch.Tensor] = []  # 1 / (y_k . s_k), 0 where the pair was rejected
        self.h_diag = torch.ones(batch, 1, device=image.device)
        self.has_curvature = torch.zeros(batch, 1, dtype=torch.bool, device=image.device)
        self.prev_grad: torch.Tensor | None = None
        self.prev_step: torch.Tensor | None = None

    @staticmethod
    def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a * b).sum(1, keepdim=True)

    def step(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:
        with torch.enable_grad():
            loss = closure()
        grad = self.image.grad.detach().flatten(1).float()
        # torch's first step: t = min(1, 1/|g|_1) * lr, so the first move is at most lr.
        first_step = torch.clamp(1.0 / grad.abs().sum(1, keepdim=True), max=1.0) * self.lr
        if self.prev_grad is None:
            direction = -grad
            step_size = first_step
        else:
            y = grad - self.prev_grad
            s = self.prev_step
            ys = self._dot(y, s)
            # Curvature check per image; a rejected pair keeps its slot with rho = 0 (a no-op).
            accept = ys > 1e-10
            self.old_grad_diffs.append(torch.where(accept, y, 0.0))
            self.old_steps.append(torch.where(accept, s, 0.0))
            self.rhos.append(torch.where(accept, 1.0 / ys.clamp(min=1e-10), 0.0))
            if len(self.rhos) > self.history_size:
                del self.old_grad_diffs[0], self.old_steps[0], self.rhos[0]
            self.h_diag = torch.where(accept, ys / self._dot(y, y).clamp(min=1e-30), self.h_diag)
            self.has_curvature = self.has_curvature | accept
            q = -grad
            alphas = []
            for s_i, y_i, rho_i in zip(reversed(self.old_steps), reversed(self.old_grad_diffs), reversed(self.rhos)):
                alpha = self._dot(s_i, q) * rho_i
                q = q - alpha * y_i
                alphas.append(alpha)
            direction = q * self.h_diag
            for s_i, y_i, rho_i, alpha in zip(self.old_steps, self.old_grad_diffs, self.rhos, reversed(alphas)):
                beta = self._dot(y_i, direction) * rho_i
                direction = direction + s_i * (alpha - beta)
            # Where the direction is not a descent direction, fall back to scaled steepest descent.
            descent = self._dot(grad, direction) < 0
            direction = torch.where(descent, direction, -grad * self.h_diag)
            # Departure from torch: until a curvature pair has been accepted, h_diag is still 1,
            # not a scale; keep the small first step there instead of a unit step along -grad,
            # which can throw the pixels to 1e12 (seen on flat content images).
            step_size = torch.where(self.has_curvature, self.lr, first_step)
        self.prev_grad = grad
        self.prev_step = direction * step_size
        with torch.no_grad():
            self.image.add_(self.prev_step.view_as(self.image).to(self.image.dtype))
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.image.grad = None
