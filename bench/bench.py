"""Speed benchmark (not a test): ms per iteration of our path against a straightforward reference
loop and pastiche, in one process on one device, and the time to reach the quality pastiche
reaches, scored with the fixed evaluator. Writes bench-results/bench.json and bench.md.

    python bench/bench.py [--device auto] [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F

from pipeline.devices import pick_device
from pipeline.images import load_image
from pipeline.losses import ContentLoss, StyleLoss
from pipeline.score import Scorer, reference_vgg
from pipeline.stylize import CONTENT_LAYER, REFERENCE_PIXELS, STYLE_LAYERS, StyleSettings, Stylizer

ROOT = Path(__file__).resolve().parent.parent
CONTENT, STYLE = ROOT / "samples/chelsea.png", ROOT / "samples/ihc.png"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def image_of_size(path: Path, height: int, width: int) -> torch.Tensor:
    return F.interpolate(load_image(path), size=(height, width), mode="bicubic", antialias=True).clamp(0, 1)


def time_ours(
    content, style, device, iterations: int, batch: int = 1, cuda_graphs: bool = False
) -> tuple[float, float | None]:
    # One scale: ms per iteration at this size, as the reference loop runs it.
    settings = StyleSettings(iterations=iterations, scales=1, cuda_graphs=cuda_graphs)
    stylizer = Stylizer([style], settings, device=device, report_every=iterations)  # one read-back a run
    content = content.expand(batch, -1, -1, -1).contiguous()
    stylizer.stylize(content, iterations=3)  # warm-up: cuDNN autotuning, allocator
    reset_peak(device)
    sync(device)
    start = time.perf_counter()
    stylizer.stylize(content, iterations=iterations)
    sync(device)
    return 1000 * (time.perf_counter() - start) / iterations, peak_memory_mb(device)


def reference_loop(content, style, device, iterations: int) -> tuple[torch.Tensor, float, float | None]:
    """The straightforward loop: fp32, torch.optim.LBFGS as pastiche drives it, same layers and
    weights, the loss read back every iteration."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    vgg = reference_vgg().to(device)
    content, style = content.to(device), style.to(device)
    h, w = content.shape[-2:]
    settings = StyleSettings()
    with torch.no_grad():
        content_loss = ContentLoss(vgg(content)[CONTENT_LAYER])
        style_features = vgg(F.interpolate(style, size=(h, w), mode="bicubic", antialias=True))
        style_losses = [StyleLoss(StyleLoss.target_from(style_features[layer])) for layer in STYLE_LAYERS]
    image = content.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([image], lr=1, max_iter=1)

    def closure():
        optimizer.zero_grad()
        features = vgg(image)
        loss = settings.content_weight * REFERENCE_PIXELS / (h * w) * content_loss(features[CONTENT_LAYER]).sum()
        for weight, style_loss, layer in zip(settings.style_layer_weights, style_losses, STYLE_LAYERS):
            loss = loss + settings.style_weight * weight * style_loss(features[layer]).sum()
        loss.backward()
        loss.item()
        return loss

    optimizer.step(closure)  # warm-up
    reset_peak(device)
    sync(device)
    start = time.perf_counter()
    for _ in range(iterations):
        optimizer.step(closure)
    sync(device)
    ms = 1000 * (time.perf_counter() - start) / iterations
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    return image.detach().clamp(0, 1), ms, peak_memory_mb(device)


def run_pastiche(size: int, device, steps: int) -> tuple[torch.Tensor, float] | None:
    """pastiche itself, when installed: its output after `steps` draws, and ms per draw."""
    try:
        from pastiche.pastiche import VGG_MEAN, PasticheArtist
    except ImportError:
        return None
    artist = PasticheArtist(str(CONTENT), [str(STYLE)], size=size, device=str(device))
    artist.draw()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        artist.draw()
    sync(device)
    ms = 1000 * (time.perf_counter() - start) / steps
    bgr = artist.pastiche.detach()[0].cpu() + torch.tensor(VGG_MEAN).view(3, 1, 1)
    return (bgr[[2, 1, 0]] / 255).clamp(0, 1).unsqueeze(0), ms


def iterations_to_reach(target: float, content, scorer: Scorer, size: int, candidates: list[int]) -> int | None:
    """The fewest iterations (from `candidates`) after which our output scores <= target."""
    style, device = scorer.styles[0], scorer.device
    for iterations in candidates:
        stylizer = Stylizer([style], StyleSettings(iterations=iterations), device=device, report_every=iterations)
        result = stylizer.stylize(content)
        if scorer(result.image, content, size=size)["total"] <= target:
            return iterations
    return None


def video_throughput(device, *, size: int, frames: int, workdir: Path, cuda_graphs: bool = False) -> dict:
    """Frames per second of a whole video job (decode, flow, stylize, encode) with the default
    video settings, on a synthetic clip (ffmpeg's testsrc2 with a sine tone)."""
    import shutil

    import ffmpeg

    from pipeline.decode import ffmpeg_binary
    from pipeline.video import VideoJob, run_video

    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    clip = workdir / "clip.mp4"
    height = size * 9 // 16 // 2 * 2
    video = ffmpeg.input(f"testsrc2=size={size}x{height}:rate=25", f="lavfi", t=frames / 25)
    audio = ffmpeg.input("sine=frequency=440", f="lavfi", t=frames / 25)
    ffmpeg.output(video, audio, str(clip), vcodec="libx264", pix_fmt="yuv420p", acodec="aac").run(
        cmd=ffmpeg_binary(), quiet=True, overwrite_output=True
    )
    job = VideoJob(
        input=clip,
        styles=(STYLE,),
        output=workdir / "out.mp4",
        settings=StyleSettings(size=size, cuda_graphs=cuda_graphs),
        device=str(device),
    )
    start = time.perf_counter()
    run_video(job)
    seconds = time.perf_counter() - start
    return {
        "size": f"{size}x{height}",
        "frames": frames,
        "cuda_graphs": cuda_graphs,
        "seconds": seconds,
        "frames_per_second": frames / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    args = parser.parse_args()
    device = pick_device(args.device)
    gpu = device.type == "cuda"
    if gpu:
        sizes = [(512, 512), (720, 1280), (1080, 1920)]
        timed, quality_steps, quality_size = (50, 500, 512) if not args.quick else (10, 50, 512)
    else:
        print("No GPU: small sizes only; the ratios are not those of a GPU.")
        sizes = [(64, 64), (96, 128)]
        timed, quality_steps, quality_size = (10, 50, 64) if not args.quick else (3, 10, 64)
    report = {
        "device": torch.cuda.get_device_name(device) if gpu else platform.processor() or "cpu",
        "torch": torch.__version__,
        "date": date.today().isoformat(),
        "sizes": [],
    }
    args.out.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every section, so that a run cut short still leaves its numbers
        (args.out / "bench.json").write_text(json.dumps(report, indent=1))

    # CUDA graphs are a GPU-only option: measured beside the default path, not instead of it.
    variants = {"ours": False, "ours_graphs": True} if gpu else {"ours": False}
    for h, w in sizes:
        content, style = image_of_size(CONTENT, h, w), image_of_size(STYLE, h, w)
        _, ref_ms, ref_mem = reference_loop(content, style, device, timed)
        row = {"size": f"{w}x{h}", "reference_ms": ref_ms, "reference_peak_mb": ref_mem}
        for name, graphs in variants.items():
            ms, peak = time_ours(content, style, device, timed, cuda_graphs=graphs)
            row |= {f"{name}_ms": ms, f"{name}_peak_mb": peak, f"{name}_speedup": ref_ms / ms}
        report["sizes"].append(row)
        save()
        print(json.dumps(row), flush=True)

    # Quality-matched: the loss pastiche (or, without it, the reference loop) reaches after
    # quality_steps steps, and how long our path takes to reach it.
    content, style = (
        image_of_size(CONTENT, quality_size, quality_size),
        image_of_size(STYLE, quality_size, quality_size),
    )
    pastiche = run_pastiche(quality_size, device, quality_steps)
    if pastiche is not None:
        reference_image, reference_ms = pastiche
        report["reference_tool"] = "pastiche"
    else:
        reference_image, reference_ms, _ = reference_loop(content, style, device, quality_steps)
        report["reference_tool"] = "reference loop"
    scorer = Scorer([style], vgg=reference_vgg().to(device))
    target = scorer(reference_image, content, size=quality_size)["total"]
    candidates = sorted({max(1, round(quality_steps * f)) for f in (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5)})
    needed = iterations_to_reach(target, content, scorer, quality_size, candidates)
    quality = {"size": quality_size, "reference_steps": quality_steps, "reference_ms_per_step": reference_ms,
               "reference_score": target, "ours_iterations_to_reach": needed}  # fmt: skip
    if gpu and needed:
        free, _ = torch.cuda.mem_get_info(device)
        batch = max(1, min(16, int(free * 0.5 // (ours_mem_per_image(content, style, device) * 2**20))))
        quality["batch"] = batch
    for name, graphs in variants.items():
        ms, _ = time_ours(content, style, device, timed, cuda_graphs=graphs)
        quality[f"{name}_ms_per_iteration"] = ms
        quality[f"{name}_per_iteration_speedup"] = reference_ms / ms
        quality[f"{name}_time_to_quality_speedup"] = (quality_steps * reference_ms) / (needed * ms) if needed else None
        if "batch" in quality:
            batch_ms, _ = time_ours(content, style, device, timed, batch=quality["batch"], cuda_graphs=graphs)
            quality[f"{name}_images_per_second"] = quality["batch"] / (needed * batch_ms / 1000)
    report["quality"] = quality
    save()
    print(json.dumps(quality), flush=True)

    video_size, video_frames = (1280, 48) if gpu else (64, 3)
    if args.quick:
        video_frames = min(video_frames, 8)
    report["video"] = []
    for graphs in variants.values():
        report["video"].append(
            video_throughput(
                device, size=video_size, frames=video_frames, workdir=args.out / "video", cuda_graphs=graphs
            )
        )
        save()
        print(json.dumps(report["video"][-1]), flush=True)

    lines = markdown(report, variants)
    (args.out / "bench.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def markdown(report: dict, variants: dict[str, bool]) -> list[str]:
    label = {"ours": "ours", "ours_graphs": "ours + CUDA graphs"}
    mb = lambda value: f"{value:.0f}" if value else "-"  # noqa: E731
    lines = [f"Device: {report['device']}, torch {report['torch']}, {report['date']}", ""]
    lines.append("| size | reference ms/it | " + " | ".join(f"{label[n]} ms/it (speedup)" for n in variants)
                 + " | reference peak MB | " + " | ".join(f"{label[n]} peak MB" for n in variants) + " |")  # fmt: skip
    lines.append("|" + " --- |" * (3 + 2 * len(variants)))
    for row in report["sizes"]:
        times = " | ".join(f"{row[n + '_ms']:.2f} ({row[n + '_speedup']:.1f}x)" for n in variants)
        peaks = " | ".join(mb(row[n + "_peak_mb"]) for n in variants)
        reference = f"{row['reference_ms']:.2f} | {times} | {mb(row['reference_peak_mb'])}"
        lines.append(f"| {row['size']} | {reference} | {peaks} |")
    q = report["quality"]
    needed = q["ours_iterations_to_reach"]
    reached = f"{needed} iterations." if needed else "more than the largest candidate; no time-to-quality figure."
    lines += [
        "",
        f"Quality-matched at {q['size']} px against {report['reference_tool']} after {q['reference_steps']} steps "
        f"({q['reference_ms_per_step']:.2f} ms/step, evaluator score {q['reference_score']:.4g}): "
        f"ours reached that score in {reached}",
    ]
    for n in variants:
        line = f"- {label[n]}: {q[n + '_ms_per_iteration']:.2f} ms/it "
        line += f"({q[n + '_per_iteration_speedup']:.1f}x per iteration)"
        if needed:
            line += f", time to quality {q[n + '_time_to_quality_speedup']:.1f}x"
        if n + "_images_per_second" in q:
            line += f", batched {q[n + '_images_per_second']:.2f} images/s to that quality (batch {q['batch']})"
        lines.append(line)
    lines.append("")
    for v in report["video"]:
        graphs = ", CUDA graphs" if v["cuda_graphs"] else ""
        lines.append(
            f"Video end to end (decode, flow, stylize, encode; default settings{graphs}), "
            f"{v['size']}, {v['frames']} frames: {v['frames_per_second']:.3f} frames/s"
        )
    return lines


def ours_mem_per_image(content, style, device) -> float:
    _, peak = time_ours(content, style, device, 2)
    return peak or 1.0


if __name__ == "__main__":
    main()
