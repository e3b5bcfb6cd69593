"""Checks that need CUDA: skipped on machines without a GPU (CI), run by bench/device_check.sh."""

import pytest
import torch

from pipeline.images import load_image
from pipeline.score import reference_losses, reference_vgg
from pipeline.stylize import StyleSettings, Stylizer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def images():
    return load_image("samples/chelsea.png", 256), load_image("samples/ihc.png", 256)


@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_gpu_paths_reach_the_cpu_quality(images, precision):
    content, style = images
    vgg = reference_vgg()
    settings = StyleSettings(iterations=40, precision=precision)
    cpu = Stylizer([style], settings, device="cpu").stylize(content).image
    gpu = Stylizer([style], settings, device="cuda").stylize(content).image.cpu()
    cpu_score = reference_losses(cpu, content, [style], vgg=vgg, size=256)["total"]
    gpu_score = reference_losses(gpu, content, [style], vgg=vgg, size=256)["total"]
    assert torch.isfinite(torch.tensor(gpu_score))
    assert gpu_score < 1.15 * cpu_score


def test_batched_gpu_images_do_not_depend_on_batchmates(images):
    content, style = images
    stylizer = Stylizer([style], StyleSettings(iterations=20, precision="fp32"), device="cuda")
    other = torch.flip(content, dims=[3])
    together = stylizer.stylize(torch.cat([content, other])).image
    alone = stylizer.stylize(content).image
    assert (together[:1] - alone).abs().max().item() < 2 / 255


def test_1080p_fits_in_8_gb():
    content = torch.rand(1, 3, 1080, 1920)
    style = torch.rand(1, 3, 512, 512)
    torch.cuda.reset_peak_memory_stats()
    Stylizer([style], StyleSettings(iterations=3, scales=1), device="cuda").stylize(content)
    assert torch.cuda.max_memory_allocated() < 8 * 2**30
