"""The loss terms against hand-computed values and the formulas of DESIGN.md.

Expected numbers are worked out by hand (in the comments) or recomputed with plain numpy loops,
never copied from running the code.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from pipeline.losses import ContentLoss, StyleLoss, TemporalLoss, TVLoss, gram_matrix

# A 1x2x2x2 feature map: N = 2 filters, M = 4 positions.
#   F_0 = [[1, 2], [3, 4]]   -> flattened (1, 2, 3, 4)
#   F_1 = [[0, 1], [-1, 2]]  -> flattened (0, 1, -1, 2)
F = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 1.0], [-1.0, 2.0]]]])
# G_00 = 1 + 4 + 9 + 16 = 30, G_01 = 0 + 2 - 3 + 8 = 7, G_11 = 0 + 1 + 1 + 4 = 6
F_GRAM = torch.tensor([[[30.0, 7.0], [7.0, 6.0]]])

# A second map (the "style"): a_0 = (1, 0, 0, 1), a_1 = (1, 1, 1, 1)
A = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]], [[1.0, 1.0], [1.0, 1.0]]]])
# A_00 = 2, A_01 = 1 + 0 + 0 + 1 = 2, A_11 = 4
A_GRAM = torch.tensor([[[2.0, 2.0], [2.0, 4.0]]])
# G - A = [[28, 5], [5, 2]]; sum of squares = 784 + 25 + 25 + 4 = 838;
# E = 838 / (4 N^2 M^2) = 838 / (4 * 4 * 16) = 838 / 256
F_VS_A_STYLE = 838.0 / 256.0


def numpy_style_loss(features: np.ndarray, style: np.ndarray) -> np.ndarray:
    """E = 1/(4 N^2 M^2) sum_ij (G_ij - A_ij)^2 per image, with explicit loops (same-size maps)."""
    b, n, h, w = features.shape
    m = h * w
    flat, style_flat = features.reshape(b, n, m), style.reshape(style.shape[0], n, m)
    out = np.zeros(b)
    for image in range(b):
        s = style_flat[image if style.shape[0] == b else 0]
        total = 0.0
        for i in range(n):
            for j in range(n):
                g = sum(flat[image, i, k] * flat[image, j, k] for k in range(m))
                a = sum(s[i, k] * s[j, k] for k in range(m))
                total += (g - a) ** 2
        out[image] = total / (4 * n**2 * m**2)
    return out


# --- Gram matrix ---------------------------------------------------------------------------


def test_gram_matrix_hand_computed():
    assert torch.equal(gram_matrix(F), F_GRAM)
    assert torch.equal(gram_matrix(A), A_GRAM)


def test_gram_matrix_is_per_image_in_a_batch():
    gram = gram_matrix(torch.cat([F, A]))
    assert gram.shape == (2, 2, 2)
    assert torch.equal(gram[0], F_GRAM[0])
    assert torch.equal(gram[1], A_GRAM[0])


def test_gram_matrix_against_numpy_loops():
    x = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    arr = x.numpy().reshape(2, 3, 20)
    expected = np.zeros((2, 3, 3))
    for b, i, j in itertools.product(range(2), range(3), range(3)):
        expected[b, i, j] = sum(arr[b, i, k] * arr[b, j, k] for k in range(20))
    np.testing.assert_allclose(gram_matrix(x).detach().numpy(), expected, rtol=1e-6)


def test_gram_matrix_of_half_precision_is_fp32():
    """Accumulated in fp32: 16-bit features (autocast) must not overflow or lose the sum."""
    x = torch.full(
        (1, 2, 64, 64), 8.0, dtype=torch.float16
    )  # each entry 8*8 * 4096 positions = 262144 > fp16 max 65504
    gram = gram_matrix(x)
    assert gram.dtype == torch.float32
    assert torch.isfinite(gram).all()
    assert torch.allclose(gram, torch.full((1, 2, 2), 8.0 * 8 * 64 * 64))


# --- content loss --------------------------------------------------------------------------


def test_content_loss_hand_computed():
    # P_0 = all ones, P_1 = all zeros. F - P: channel 0 (0, 1, 2, 3) -> squares 0+1+4+9 = 14;
    # channel 1 (0, 1, -1, 2) -> 0+1+1+4 = 6. L = 1/2 * 20 = 10.
    p = torch.tensor([[[[1.0, 1.0], [1.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]]]])
    loss = ContentLoss(p)(F)
    assert loss.shape == (1,)
    assert loss.item() == pytest.approx(10.0)


def test_content_loss_is_zero_at_the_target_and_symmetric():
    assert ContentLoss(F)(F).item() == 0.0
    assert ContentLoss(F)(A).item() == pytest.approx(ContentLoss(A)(F).item())
    # (F - A): ch0 (0, 2, 3, 3) -> 0+4+9+9 = 22; ch1 (-1, 0, -2, 1) -> 1+0+4+1 = 6; half of 28 = 14
    assert ContentLoss(A)(F).item() == pytest.approx(14.0)


def test_content_loss_per_image_in_a_batch():
    target = torch.cat([A, F])
    loss = ContentLoss(target)(torch.cat([F, F]))
    assert loss.shape == (2,)
    assert loss[0].item() == pytest.approx(14.0)
    assert loss[1].item() == 0.0


def test_content_loss_target_is_detached():
    p = A.clone().requires_grad_(True)
    loss = ContentLoss(p)(F.clone().requires_grad_(True))
    loss.sum().backward()
    assert p.grad is None


# --- style loss ----------------------------------------------------------------------------


def test_style_loss_hand_computed():
    loss = StyleLoss(StyleLoss.target_from(A))(F)
    assert loss.shape == (1,)
    assert loss.item() == pytest.approx(F_VS_A_STYLE, rel=1e-6)


def test_style_target_is_the_gram_per_position():
    # A_GRAM / M with M = 4 positions
    assert torch.allclose(StyleLoss.target_from(A), A_GRAM / 4)


def test_style_loss_matches_the_formula_with_loops():
    g = torch.Generator().manual_seed(2)
    features = torch.randn(3, 4, 3, 5, generator=g)
    style = torch.randn(1, 4, 3, 5, generator=g).abs()
    loss = StyleLoss(StyleLoss.target_from(style))(features)
    expected = numpy_style_loss(features.double().numpy(), style.double().numpy())
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5)


def test_style_loss_is_zero_for_its_own_target_and_invariant_to_spatial_shuffles():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(1, 5, 6, 7, generator=g)
    loss = StyleLoss(StyleLoss.target_from(x))
    assert loss(x).item() == pytest.approx(0.0, abs=1e-9)
    # The Gram matrix ignores where things are: permuting the positions changes nothing.
    permuted = x.flatten(2)[:, :, torch.randperm(42, generator=g)].view_as(x)
    assert loss(permuted).item() == pytest.approx(0.0, abs=1e-6)
    # ... but changing the statistics does.
    assert loss(x * 1.5).item() > 1e-3


def test_style_target_from_a_larger_style_image_is_size_independent():
    """A style map tiled 2x2 has 4x the Gram matrix and 4x the positions: same target per position,
    so the loss of the original against it is zero (style and output of different sizes)."""
    x = torch.rand(1, 3, 4, 5, generator=torch.Generator().manual_seed(4))
    tiled = x.repeat(1, 1, 2, 2)
    assert torch.allclose(StyleLoss.target_from(tiled), StyleLoss.target_from(x), rtol=1e-6)
    assert StyleLoss(StyleLoss.target_from(tiled))(x).item() == pytest.approx(0.0, abs=1e-9)


def test_style_loss_per_image_in_a_batch():
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(1, 4, 3, 3, generator=g), torch.randn(1, 4, 3, 3, generator=g)
    # Target from a 4-channel map; evaluate a batch of two and each image alone.
    loss = StyleLoss(StyleLoss.target_from(torch.rand(1, 4, 3, 3, generator=g)))
    batch = loss(torch.cat([a, b]))
    assert batch.shape == (2,)
    assert torch.allclose(batch[0], loss(a)[0], rtol=1e-6)
    assert torch.allclose(batch[1], loss(b)[0], rtol=1e-6)
    assert not torch.allclose(batch[0], batch[1])
    # Gradients stay per image too: the loss of image 0 does not depend on image 1.
    both = torch.cat([a, b]).requires_grad_(True)
    loss(both)[0].backward()
    assert both.grad[1].abs().max().item() == 0.0
    assert both.grad[0].abs().max().item() > 0.0


# --- total variation ------------------------------------------------------------------------


def test_tv_loss_hand_computed():
    # [[1, 2], [4, 8]]: vertical (4-1)^2 + (8-2)^2 = 9 + 36 = 45; horizontal (2-1)^2 + (8-4)^2 = 1 + 16 = 17
    image = torch.tensor([[[[1.0, 2.0], [4.0, 8.0]]]])
    assert TVLoss()(image).item() == pytest.approx(62.0)
    # Summed over colour channels: a second channel [[0, 0], [0, 3]] adds 9 (vertical) + 9 (horizontal)
    two = torch.tensor([[[[1.0, 2.0], [4.0, 8.0]], [[0.0, 0.0], [0.0, 3.0]]]])
    assert TVLoss()(two).item() == pytest.approx(80.0)


def test_tv_loss_zero_for_flat_images_and_per_image():
    flat = torch.full((1, 3, 5, 6), 0.3)
    ramp = torch.arange(6.0).view(1, 1, 1, 6).expand(1, 3, 5, 6) / 10
    # ramp: 5 horizontal steps of 0.1 per row, 5 rows, 3 channels: 75 * 0.01 = 0.75; no vertical change
    loss = TVLoss()(torch.cat([flat, ramp]))
    assert loss.shape == (2,)
    assert loss[0].item() == 0.0
    assert loss[1].item() == pytest.approx(0.75, rel=1e-5)


# --- temporal loss (Ruder et al.) ---------------------------------------------------------------


def test_temporal_loss_hand_computed():
    """1/D sum_k c_k (x_k - w_k)^2 on the 0..255 scale, D = C*H*W values of one image
    (Ruder et al. define D as the image's dimensionality W x H x C)."""
    x = torch.zeros(1, 3, 1, 2)
    warped = torch.tensor([[[[0.1, 0.9]], [[0.2, 0.9]], [[0.3, 0.9]]]])
    mask = torch.tensor([[[[1.0, 0.0]]]])  # second pixel unreliable: ignored in every channel
    # (255 * 0.1)^2 + (255 * 0.2)^2 + (255 * 0.3)^2 = 65025 * 0.14 = 9103.5; D = 6
    loss = TemporalLoss(warped, mask)(x)
    assert loss.shape == (1,)
    assert loss.item() == pytest.approx(9103.5 / 6, rel=1e-5)


def test_temporal_loss_mask_and_batch():
    g = torch.Generator().manual_seed(6)
    warped = torch.rand(2, 3, 4, 4, generator=g)
    assert torch.equal(TemporalLoss(warped, torch.ones(2, 1, 4, 4))(warped), torch.zeros(2))
    x = torch.rand(2, 3, 4, 4, generator=g)
    assert torch.equal(TemporalLoss(warped, torch.zeros(2, 1, 4, 4))(x), torch.zeros(2))
    mask = torch.ones(2, 1, 4, 4)
    mask[1] = 0
    loss = TemporalLoss(warped, mask)(x)
    expected0 = (((x[0] - warped[0]) * 255) ** 2).mean()
    assert loss[0].item() == pytest.approx(expected0.item(), rel=1e-5)
    assert loss[1].item() == 0.0


# --- gradient checks (float64) -----------------------------------------------------------------


def _double(*shape, seed):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_gradcheck_gram_matrix():
    x = _double(2, 3, 2, 3, seed=10).requires_grad_(True)
    assert torch.autograd.gradcheck(gram_matrix, (x,))


def test_gradcheck_content_loss():
    loss = ContentLoss(_double(2, 3, 2, 3, seed=11))
    x = _double(2, 3, 2, 3, seed=12).requires_grad_(True)
    assert torch.autograd.gradcheck(loss, (x,))


def test_gradcheck_style_loss():
    loss = StyleLoss(StyleLoss.target_from(_double(1, 3, 3, 3, seed=13)))
    x = _double(2, 3, 2, 3, seed=14).requires_grad_(True)
    assert torch.autograd.gradcheck(loss, (x,))


def test_gradcheck_tv_loss():
    x = _double(2, 3, 3, 4, seed=15).requires_grad_(True)
    assert torch.autograd.gradcheck(TVLoss(), (x,))


def test_gradcheck_temporal_loss():
    mask = (_double(2, 1, 3, 3, seed=16) > 0.3).double()
    loss = TemporalLoss(_double(2, 3, 3, 3, seed=17), mask)
    x = _double(2, 3, 3, 3, seed=18).requires_grad_(True)
    assert torch.autograd.gradcheck(loss, (x,))


def test_losses_keep_float64_precision():
    """A float64 input must not be silently rounded to float32: the difference between two
    feature maps that differ by 1e-9 must still be seen."""
    x = _double(1, 2, 2, 2, seed=19) + 1.0
    y = x.clone()
    y[0, 0, 0, 0] += 1e-9
    assert ContentLoss(x)(y).item() > 0.0
    assert gram_matrix(y)[0, 0, 0] != gram_matrix(x)[0, 0, 0]


# --- composing the objective (pipeline.objective) --------------------------------------------


def test_scale_layer_apply_and_sum_compose_terms_on_named_features():
    from pipeline.objective import LayerApply, Scale, SumLoss

    x, y = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[0.5], [-1.0]])
    term = SumLoss([Scale(LayerApply(lambda t: t.sum(1), "a"), 2.0), LayerApply(lambda t: t.pow(2).sum(1), "b")])
    # image 0: 2 x (1 + 2) + 0.25 = 6.25; image 1: 2 x (3 + 4) + 1 = 15
    assert torch.equal(term({"a": x, "b": y, "unused": None}), torch.tensor([6.25, 15.0]))


def test_term_log_sums_each_term_over_the_batch_and_restarts_after_a_read():
    from pipeline.objective import TermLog

    log = TermLog(["content", "style"], rows=3, device=torch.device("cpu"))
    log.write(torch.tensor(10.0), {"content": torch.tensor([1.0, 2.0]), "style": torch.tensor([3.0, 4.0])})
    log.write(torch.tensor(20.0), {"content": torch.tensor([0.5, 0.5]), "style": torch.tensor([9.0, 10.0])})
    assert log.read(2) == [
        {"total": 10.0, "content": 3.0, "style": 7.0},
        {"total": 20.0, "content": 1.0, "style": 19.0},
    ]
    log.write(torch.tensor(5.0), {"content": torch.tensor([2.0, 0.0]), "style": torch.tensor([0.0, 3.0])})
    assert log.read(1) == [{"total": 5.0, "content": 2.0, "style": 3.0}]
