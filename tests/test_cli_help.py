"""The command line as a newcomer meets it: help that reads at 80 columns (in a terminal or piped),
`stylize` alone, one --device option everywhere, and shell completion."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from helpers import heavy_modules_loaded
from pipeline import cli
from pipeline.devices import parse_devices, pick_device
from pipeline.display import HELP_PANELS
from pipeline.errors import InputError
from pipeline.settings import DEVICE_HELP

ROOT = Path(__file__).resolve().parents[1]
GROUP = cli.typer.main.get_command(cli.app)
COMMANDS = sorted(GROUP.commands)
STYLIZING = ("image", "images", "video")


def render(args: list[str], env: dict[str, str]) -> str:
    result = CliRunner().invoke(cli.app, args, env=env)
    assert result.exit_code == 0, result.output
    return result.stdout


def stylize(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The real entry point in a child process, its output piped (no terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "NO_COLOR": "1", **(env or {})},
    )  # fmt: skip


def literal_choices(annotation) -> list[str]:
    """The values of the Literal inside an option's annotation (Annotated, Optional), if any."""
    if typing.get_origin(annotation) is typing.Literal:
        return [str(value) for value in typing.get_args(annotation)]
    return [value for arg in typing.get_args(annotation) for value in literal_choices(arg)]


def declared_choices(name: str) -> dict[str, list[str]]:
    """{option: choices} from the command function's signature, not from what the help shows."""
    command = GROUP.commands[name]
    signature = inspect.signature(command.callback, eval_str=True)
    by_name = {param.name: param for param in command.params}
    return {
        by_name[param_name].opts[0]: choices
        for param_name, parameter in signature.parameters.items()
        if param_name in by_name and (choices := literal_choices(parameter.annotation))
    }


# A terminal 80 columns wide, and output piped to a file or `less` (no COLUMNS: rich assumes 80).
WIDTHS = [pytest.param({"COLUMNS": "80"}, id="80-columns"), pytest.param({"COLUMNS": None}, id="piped")]


@pytest.mark.parametrize("env", WIDTHS)
@pytest.mark.parametrize("name", [None, *COMMANDS], ids=["stylize", *COMMANDS])
def test_help_fits_80_columns_with_every_option_whole(name, env):
    text = render([name, "--help"] if name else ["--help"], env)
    command = GROUP.commands[name] if name else GROUP
    assert "…" not in text, text  # rich's mark of a cut
    assert max(len(line) for line in text.splitlines()) <= 80, text
    for param in command.params:
        for opt in [*param.opts, *param.secondary_opts] if param.param_type_name == "option" else []:
            assert re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", text), f"{opt} missing or cut in:\n{text}"
    for option, choices in (declared_choices(name) if name else {}).items():
        assert f"[{'|'.join(choices)}]" in text, f"{option}: choices {choices} not listed in:\n{text}"


def test_help_lists_its_own_option_the_same_way_every_run():
    # click keeps --help's names in a set: without sorting, the order followed the hash seed.
    for seed in ("0", "1", "2", "3"):
        result = stylize("status", "--help", env={"PYTHONHASHSEED": seed, "COLUMNS": "80"})
        assert result.returncode == 0, result.stderr
        assert "-h, --help" in result.stdout, f"PYTHONHASHSEED={seed}:\n{result.stdout}"


def test_choices_are_declared_where_the_issue_found_str():
    choices = {**declared_choices("video"), **declared_choices("images")}
    for option in ("--flow", "--pooling", "--preserve-color", "--precision", "--preset", "--flow-preset", "--warp"):
        assert option in choices, option
    assert choices["--optimizer"] == ["lbfgs", "adam"]
    assert choices["--preserve-color"] == ["none", "luminance", "histogram"]


def test_video_help_has_panels_and_defaults_as_a_person_writes_them():
    text = render(["video", "--help"], {"COLUMNS": "80"})
    for title in HELP_PANELS[:5]:
        assert re.search(rf"╭─ {re.escape(title)} ─", text), f"no {title!r} panel in:\n{text}"
    assert "[default: 3e9]" in text and "[default: 0.01]" in text and "[default: 1e4]" in text, text
    for raw in ("3000000000", "18446744073709551615", "10000.0", "<str>", "<bool>", "list[Path]"):
        assert raw not in text, f"{raw!r} in:\n{text}"


@pytest.mark.parametrize("name", STYLIZING)
def test_flags_off_by_default_have_no_no_twin(name):
    command = GROUP.commands[name]
    flags = [p for p in command.params if getattr(p, "is_flag", False) and p.name != "help"]
    assert {"overwrite", "quiet"} & {p.name for p in flags}
    for param in flags:
        assert param.default or not param.secondary_opts, f"{param.opts}: {param.secondary_opts} names the default"
    assert "--no-" not in render([name, "--help"], {"COLUMNS": "80"})


def test_stylize_alone_lists_each_command_on_one_line_and_where_to_start():
    result = stylize(env={"COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    rows = [i for i, line in enumerate(lines) if re.match(r"│ (\w+) +\S", line)]
    assert [re.match(r"│ (\w+)", lines[i]).group(1) for i in rows] == list(GROUP.list_commands(None))
    assert rows == list(range(rows[0], rows[0] + len(rows))), "a command's description took two lines"
    assert lines[rows[-1] + 1].startswith("╰"), result.stdout
    start = result.stdout[result.stdout.index("Start here") :]
    for first in ("stylize video", "stylize images", "stylize doctor"):
        assert first in start, result.stdout
    assert CliRunner().invoke(cli.app, [], env={"COLUMNS": "80"}).exit_code == 0


# --- one --device ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", STYLIZING)
def test_every_stylizing_command_takes_device(name):
    (param,) = [p for p in GROUP.commands[name].params if p.name == "device"]
    assert param.opts[0] == "--device"
    # images: the old spelling, kept; video: shots run on several devices (issue 16)
    assert param.opts[1:] == (["--devices"] if name in ("images", "video") else [])


def test_parse_devices_one_function_for_every_command():
    cpu = torch.device("cpu")
    assert parse_devices(" CPU ") == (cpu,) and pick_device("cpu") == cpu
    assert pick_device("auto") == parse_devices("auto")[0]
    for text, words in [
        ("tpu", ["--device 'tpu'", "expected auto"]),
        ("cpu,cpu", ["--device cpu,cpu", "named twice"]),
        ("auto,cpu", ["--device auto", "alone"]),
        (" , ", ["no device named"]),
    ]:
        with pytest.raises(InputError) as caught:
            parse_devices(text)
        assert all(w in str(caught.value) for w in words), str(caught.value)
    with pytest.raises(InputError, match="one device"):
        pick_device("cpu,cpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="--device cuda:1: CUDA is not available"):
            parse_devices("cpu,cuda:1")


def test_device_errors_read_the_same_on_image_and_images(tmp_path):
    (tmp_path / "photos").mkdir()
    Image.new("RGB", (24, 16), (200, 100, 50)).save(tmp_path / "photos" / "a.png")
    Image.new("RGB", (16, 16), (20, 100, 250)).save(tmp_path / "style.png")
    common = ["-s", str(tmp_path / "style.png"), "--size", "16", "--iterations", "1", "-q", "--device", "tpu"]
    photo = str(tmp_path / "photos" / "a.png")
    single = CliRunner().invoke(cli.app, ["image", photo, "-o", str(tmp_path / "o.png"), *common])
    archive = CliRunner().invoke(cli.app, ["images", str(tmp_path / "photos"), "-o", str(tmp_path / "styled"), *common])
    assert single.exit_code == archive.exit_code == 2, single.output + archive.output
    assert single.stderr.strip() == archive.stderr.strip() == "error: --device 'tpu': expected " + DEVICE_HELP
    assert not (tmp_path / "o.png").exists() and not (tmp_path / "styled").exists()


# --- shell completion ------------------------------------------------------------------------------


def test_show_completion_prints_a_bash_script():
    # Without detection typer takes the shell as the option's value (no shell runs the tests).
    result = stylize("--show-completion", "bash", env={"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"})
    assert result.returncode == 0, result.stderr
    assert "_STYLIZE_COMPLETE=complete_bash" in result.stdout, result.stdout
    assert "complete -o default -F" in result.stdout, result.stdout


@pytest.mark.parametrize(
    "words, cword, expected",
    [("stylize vi", 1, {"video"}), ("stylize video clip.mp4 --flow ", 4, {"dis", "none", "independent"})],
)
def test_completion_answers_as_the_installed_script_asks(words, cword, expected):
    # What the script from --show-completion runs on every <Tab>.
    result = stylize(env={"_STYLIZE_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(cword)})
    assert result.returncode == 0, result.stderr
    assert expected <= set(result.stdout.split()), result.stdout + result.stderr


TAB = {"_STYLIZE_COMPLETE": "complete_bash", "COMP_WORDS": "stylize video c.mp4 --flow-preset ", "COMP_CWORD": "4"}


@pytest.mark.parametrize(
    "argv, env, expected",
    [
        (["--help"], {}, "Usage: stylize"),
        (["video", "--help"], {}, "--flow-preset"),
        (["images", "--help"], {}, "--batch-size"),
        ([], TAB, "ultrafast"),
    ],
)
def test_help_and_completion_start_without_torch(argv, env, expected):
    # Loading torch takes seconds: every --help and every <Tab> would wait for it. The options'
    # defaults and choices come from torch-free modules (settings, video_defaults).
    loaded, out = heavy_modules_loaded(*argv, env=env)
    assert expected in out, out
    assert loaded == [], f"stylize {' '.join(argv)} imported {loaded}"
