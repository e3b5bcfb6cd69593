"""Checks that need CUDA: skipped on machines without a GPU (CI), run by bench/device_check.sh."""

import warnings

import pytest
import torch

from pipeline.cudagraph import GraphCaptureWarning
from pipeline.images import load_image
from pipeline.losses import TemporalLoss
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


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_graph_replay_gives_the_eager_result(images, precision):
    content, style = images
    eager = Stylizer([style], StyleSettings(iterations=30, precision=precision), device="cuda").stylize(content)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GraphCaptureWarning)  # a failed capture would only be slower
        graphed = Stylizer(
            [style], StyleSettings(iterations=30, precision=precision, cuda_graphs=True), device="cuda"
        ).stylize(content)
    assert len(graphed.history) == 30
    losses = torch.tensor([h["loss"] for h in eager.history]), torch.tensor([h["loss"] for h in graphed.history])
    assert torch.allclose(*losses, rtol=1e-3)
    assert (graphed.image - eager.image).abs().max().item() < 2 / 255


@pytest.mark.parametrize("cuda_graphs, preserve_color", [(False, "none"), (True, "none"), (True, "luminance")])
def test_no_synchronisation_inside_the_loop_on_the_gpu(images, cuda_graphs, preserve_color):
    """CUDA's own count of the operations that make the host wait (torch's sync debug mode)."""
    content, style = images
    settings = StyleSettings(
        iterations=4, precision="bf16", cuda_graphs=cuda_graphs, preserve_color=preserve_color, tv_weight=1.0
    )
    stylizer = Stylizer([style], settings, device="cuda")
    temporal = {"temporal": TemporalLoss(content.flip(3).cuda(), torch.ones(1, 1, *content.shape[-2:], device="cuda"))}
    stylizer.stylize(content, iterations=8, extra_losses=temporal)  # cuDNN's benchmark, lazy set-up

    def synchronisations(iterations: int) -> int:
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                stylizer.report_every = iterations  # one read-back, at the end
                stylizer.stylize(content, iterations=iterations, extra_losses=temporal)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)

    assert synchronisations(40) == synchronisations(10)


def test_1080p_with_cuda_graphs_fits_in_8_gb():
    content = torch.rand(1, 3, 1080, 1920)
    style = torch.rand(1, 3, 512, 512)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    Stylizer([style], StyleSettings(iterations=6, scales=1, cuda_graphs=True), device="cuda").stylize(content)
    assert torch.cuda.max_memory_allocated() < 8 * 2**30
