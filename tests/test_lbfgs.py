import torch

from pipeline.lbfgs import BatchedLBFGS


def rosenbrock_like(x: torch.Tensor) -> torch.Tensor:
    """A non-quadratic test function with per-image values, x: (B, 1, 2, 4)."""
    flat = x.flatten(1)
    a, b = flat[:, :-1], flat[:, 1:]
    return ((1 - a) ** 2 + 10 * (b - a**2) ** 2).sum(1)


def optimize(start: torch.Tensor, steps: int, make_optimizer) -> torch.Tensor:
    x = start.clone().requires_grad_(True)
    opt = make_optimizer(x)

    def closure():
        opt.zero_grad()
        loss = rosenbrock_like(x).sum()
        loss.backward()
        return loss

    for _ in range(steps):
        opt.step(closure)
    return x.detach()


def run_batched(start: torch.Tensor, steps: int) -> torch.Tensor:
    return optimize(start, steps, lambda x: BatchedLBFGS(x, history_size=5))


def run_torch(start: torch.Tensor, steps: int) -> torch.Tensor:
    make = lambda x: torch.optim.LBFGS([x], lr=1, max_iter=1, history_size=5, tolerance_grad=0, tolerance_change=0)  # noqa: E731
    return optimize(start, steps, make)


def test_matches_torch_lbfgs_for_one_image():
    start = torch.linspace(-0.5, 0.7, 8, dtype=torch.float64).view(1, 1, 2, 4)
    ours, reference = run_batched(start, 12), run_torch(start, 12)
    assert torch.allclose(ours, reference, rtol=1e-6, atol=1e-8)
    assert rosenbrock_like(ours).item() < 0.5 * rosenbrock_like(start).item()


def test_images_of_a_batch_do_not_influence_each_other():
    first = torch.linspace(-0.5, 0.7, 8, dtype=torch.float64).view(1, 1, 2, 4)
    second = torch.linspace(1.5, -0.3, 8, dtype=torch.float64).view(1, 1, 2, 4)
    together = run_batched(torch.cat([first, second]), 10)
    assert torch.allclose(together[:1], run_batched(first, 10), rtol=1e-9, atol=1e-12)
    assert torch.allclose(together[1:], run_batched(second, 10), rtol=1e-9, atol=1e-12)
    # Whereas one shared L-BFGS over the batch couples them.
    coupled = run_torch(torch.cat([first, second]), 10)
    assert not torch.allclose(coupled[:1], together[:1], rtol=1e-6, atol=1e-8)
