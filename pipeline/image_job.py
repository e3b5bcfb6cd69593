"""The single-image job (`stylize image`): one content image, one or more style images, one output.

  check     the output and every file beside it (outputs.check_output) and the output's format,
            before anything is loaded: a refused job costs nothing and changes nothing
  load      the device, the content photo with its metadata, the styles (images.load_styles), the
            --init image
  stylize   stylize.Stylizer; if the full size does not fit in the device's memory, the finest
            scale that fits, upsampled (with a warning)
  save      the image with the photo's EXIF and ICC profile; --sheet, --log-json and --report beside
            it. Every file is written atomically: a kill leaves the old output or the new one.

The video and archive jobs are pipeline.video.run_video and pipeline.archive.run_archive.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .devices import pick_device
from .errors import WriteError, one_line
from .images import Metadata, load_image, load_photo, load_styles, save_format, save_image, side_by_side
from .manifest import write_json
from .optimize import Progress, StyleResult
from .outputs import check_output
from .report_image import ImageReport, write_image_report
from .settings import StyleSettings
from .stylize import Stylizer

SIDE_FILES = ("log_json", "sheet", "report")  # ImageJob's flags, in the order they are written


def default_output(content: Path) -> Path:
    return content.with_name(f"{content.stem}-stylized.png")


@dataclass(frozen=True)
class ImageJob:
    content: Path
    styles: tuple[Path, ...]
    output: Path
    settings: StyleSettings = field(default_factory=StyleSettings)
    init_path: Path | None = None  # --init with an image
    device: str = "auto"
    overwrite: bool = False  # replace an existing output and side files
    log_json: bool = False  # OUTPUT.json: settings, device, the loss history
    sheet: bool = False  # OUTPUT-sheet.png: content | styles | result
    report: bool = False  # OUTPUT-report.html (report_image)

    @property
    def inputs(self) -> list[Path]:
        return [self.content, *self.styles, *([self.init_path] if self.init_path else [])]

    @property
    def side_files(self) -> dict[str, Path]:
        """The files asked for beside the output, by flag name."""
        out = self.output
        names = {
            "log_json": out.with_suffix(".json"),
            "sheet": out.with_name(f"{out.stem}-sheet.png"),
            "report": out.with_name(f"{out.stem}-report.html"),
        }
        return {flag: names[flag] for flag in SIDE_FILES if getattr(self, flag)}


class ImageEvents:
    """What the job reports while it runs; the CLI's display overrides these. Raising from one
    stops the job, and the old output (if any) stays as it was."""

    def started(self, description: str, iterations: int) -> None: ...

    def iteration(self, progress: Progress) -> None: ...

    def message(self, text: str) -> None: ...  # a warning, one line


@dataclass
class ImageResult:
    output: Path
    device: str
    terms: dict[str, float]  # the result's weighted loss terms: content, style, tv, loss (total)
    history: list[dict]  # per iteration
    seconds: float  # of the optimization
    files: dict[str, Path]  # the side files written, by flag name


@dataclass
class Loaded:
    device: torch.device
    content: torch.Tensor
    metadata: Metadata | None
    styles: list[torch.Tensor]
    init: torch.Tensor | None


def run_image(job: ImageJob, *, events: ImageEvents | None = None) -> ImageResult:
    """Stylize one image. Bad input raises InputError before anything is loaded or written."""
    events = events or ImageEvents()
    check(job)
    loaded = load(job)
    began = time.perf_counter()
    result = stylize(job, loaded, events)
    seconds = time.perf_counter() - began
    save(job, loaded, result, events)
    terms = result.final_terms
    outcome = ImageResult(job.output, str(loaded.device), terms, result.history, seconds, job.side_files)
    save_side_files(job, loaded, result.image, outcome, events)
    return outcome


def check(job: ImageJob) -> None:
    for path in (job.output, *job.side_files.values()):
        check_output(path, inputs=job.inputs, may_replace=job.overwrite, example="result.png")
    save_format(job.output)


def load(job: ImageJob) -> Loaded:
    device = pick_device(job.device)
    content, metadata = load_photo(job.content, job.settings.size)
    styles = load_styles(job.styles, job.settings)
    init = load_image(job.init_path) if job.init_path else None
    return Loaded(device, content, metadata, styles, init)


def stylize(job: ImageJob, loaded: Loaded, events: ImageEvents) -> StyleResult:
    stylizer = Stylizer(loaded.styles, job.settings, device=loaded.device)
    events.started(f"{job.content.name} on {loaded.device.type}", job.settings.iterations)
    content = loaded.content
    result = stylizer.stylize_within_memory(content, init=loaded.init, callback=events.iteration)
    if result.optimized_size != tuple(content.shape[-2:]):
        (h, w), device = result.optimized_size, loaded.device
        events.message(
            f"warning: {job.content}: the full size did not fit in memory on {device}; optimized up to {w}x{h} "
            f"and upsampled to {content.shape[-1]}x{content.shape[-2]} (try --device cpu for the full size)"
        )
    return result


def save(job: ImageJob, loaded: Loaded, result: StyleResult, events: ImageEvents) -> None:
    note = save_image(result.image, job.output, metadata=loaded.metadata)  # the photo's EXIF and ICC profile
    if note is not None:
        events.message(f"warning: {job.content}: {note}")


def save_side_files(job: ImageJob, loaded: Loaded, image: torch.Tensor, result: ImageResult, events) -> None:
    files = result.files
    if "log_json" in files:
        write_json(
            files["log_json"], {"settings": job.settings.to_dict(), "device": result.device, "history": result.history}
        )
    if "sheet" in files:
        sheet = side_by_side([loaded.content, *loaded.styles, image.cpu()], height=image.shape[-2])
        save_image(sheet, files["sheet"])
    if "report" in files:
        page = files["report"]
        try:
            write_image_report(page, image_report(job, result))
        except Exception as exc:  # noqa: BLE001 (a full disk, a failed plot: the image is written, the page shows it)
            del files["report"]
            why = str(exc) if isinstance(exc, WriteError) else f"{page}: {type(exc).__name__}: {exc}"
            events.message(f"warning: the report was not written: {one_line(why)}")


def image_report(job: ImageJob, result: ImageResult) -> ImageReport:
    terms = result.terms
    facts = [
        ("output", str(job.output)),
        ("final loss", (f"content {terms.get('content', 0):.4g}, style {terms.get('style', 0):.4g}, "
                        f"total {terms.get('loss', 0):.4g}")),
        ("iterations", f"{len(result.history)} in {result.seconds:.1f} s on {result.device}"),
    ]  # fmt: skip
    return ImageReport(job.content, job.styles, job.output, result.history, facts, job.settings.to_dict())
