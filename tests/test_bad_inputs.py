"""The catalogue of bad inputs, over every command (image, video, images, status, score, flicker):
missing paths, directories where files belong and files where directories belong, corrupt,
truncated and empty media, a video without a video stream, negative and absurd numbers in the
numeric options, conflicting options, an output that is an input or lies inside the input tree,
and file names with spaces, quotes, semicolons, newlines and non-ASCII letters.

Each case must end with exit status 2, exactly one line on stderr that starts with 'error:' and
names the problem, no traceback, and the workspace exactly as it was (every file's bytes, every
directory). Almost all fail before any optimization; the few that would run use 32 px and one
iteration, so a gap shows up as a failure, not as a long run. The last tests prove that odd names
work and that none reaches a shell: ffmpeg is always started with an argument list.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import ffmpeg
import numpy as np
import pytest
from PIL import Image

from helpers import decoded_frames, tree_state
from pipeline.cli import main
from pipeline.decode import ffmpeg_binary

ROOT = Path(__file__).resolve().parents[1]
# Spaces, quotes, a semicolon, a shell substitution, a newline and non-ASCII letters in one name.
ODD = "odd 'name' \"q\"; $(touch pwned) `touch pwned2`\nü"
FAST = ["--size", "32", "--iterations", "1", "--device", "cpu", "-q"]
FAST_IMAGES = ["--size", "32", "--iterations", "1", "--device", "cpu", "-q"]


def clip(path: Path, frames: int = 4, audio: bool = False, size: str = "48x32") -> None:
    streams = [ffmpeg.input(f"testsrc2=size={size}:rate=25", f="lavfi")]
    options = {"vcodec": "libx264", "pix_fmt": "yuv420p", "frames:v": frames}
    if audio:
        streams.append(ffmpeg.input("sine=duration=0.16", f="lavfi"))
        options["acodec"] = "aac"
    ffmpeg.output(*streams, str(path), **options).global_args("-nostdin").run(
        cmd=ffmpeg_binary(), quiet=True, overwrite_output=True
    )


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """Every file the cases refer to, made once; each case works on a copy."""
    ws = tmp_path_factory.mktemp("bad-inputs")
    rng = np.random.default_rng(0)
    picture = Image.fromarray((rng.random((4, 4, 3)) * 255).astype(np.uint8))
    picture.resize((48, 36), Image.BICUBIC).save(ws / "content.png")
    picture.resize((200, 10), Image.BICUBIC).save(ws / "strip.png")  # 32x2 at --size 32
    picture.resize((32, 32), Image.BICUBIC).save(ws / "style.png")
    picture.resize((40, 32), Image.BICUBIC).save(ws / "style2.jpg")
    shutil.copy(ws / "content.png", ws / f"{ODD}.png")
    data = (ws / "content.png").read_bytes()
    (ws / "truncated.png").write_bytes(data[: len(data) // 2])
    (ws / f"{ODD} truncated.png").write_bytes(data[: len(data) // 2])
    (ws / "empty.png").write_bytes(b"")
    (ws / "text.png").write_text("not an image\n")
    (ws / "adir").mkdir()
    (ws / "adir" / "keep.txt").write_text("keep me\n")
    (ws / "afile.txt").write_text("a file, not a directory\n")
    (ws / "photos" / "sub").mkdir(parents=True)
    picture.resize((48, 36), Image.BICUBIC).save(ws / "photos" / "a.png")
    picture.resize((36, 48), Image.BICUBIC).save(ws / "photos" / "sub" / "b.jpg")

    clip(ws / "clip.mp4", audio=True)
    clip(ws / "short.mp4", frames=2)
    clip(ws / "strip.mp4", frames=2, size="96x16")  # 32x5 at --size 32
    clip(ws / "raw.h264", frames=4)  # an elementary stream: no container, no timestamps
    shutil.copy(ws / "clip.mp4", ws / f"{ODD}.mp4")
    long = ws / "long.mp4"
    clip(long, frames=50)
    (ws / "truncated.mp4").write_bytes(long.read_bytes()[: long.stat().st_size * 6 // 10])
    long.unlink()
    (ws / "empty.mp4").write_bytes(b"")
    (ws / "text.mp4").write_text("not a video\n")
    ffmpeg.input("sine=duration=0.3", f="lavfi").output(str(ws / "sound.m4a"), acodec="aac").global_args(
        "-nostdin"
    ).run(cmd=ffmpeg_binary(), quiet=True)

    # Work directories for status: a video job's with a torn job.json, an archive's likewise.
    (ws / "torn.work").mkdir()
    (ws / "torn.work" / "job.json").write_text('{"kind": "video", "stag')
    (ws / "torn-archive" / ".stylize").mkdir(parents=True)
    (ws / "torn-archive" / ".stylize" / "archive.json").write_text("{")
    # A folder of someone's own, with a frames/ folder a job must never delete.
    (ws / "mine" / "frames").mkdir(parents=True)
    (ws / "mine" / "frames" / "holiday.png").write_bytes(data)
    shutil.copy(ws / "content.png", ws / "out-sheet.png")
    return ws


@pytest.fixture
def ws(template, tmp_path, monkeypatch) -> Path:
    work = tmp_path / "ws"
    shutil.copytree(template, work, symlinks=True)
    monkeypatch.chdir(work)  # anything a shell might run would land here, and be seen
    return work


def expand(ws: Path, args: list) -> list[str]:
    """'@name' is a path in the workspace."""
    return [str(ws / a[1:]) if isinstance(a, str) and a.startswith("@") else str(a) for a in args]


def negative_and_absurd(command: str, head: list, fast: list, options: dict[str, tuple]) -> list:
    """One case per bad value of every numeric option: (id, argv, words the message must hold)."""
    return [
        pytest.param([command, *head, *fast, option, value], [option], id=f"{command}{option}={value}")
        for option, values in options.items()
        for value in values
    ]


# The method's options, shared by image, video and images: negative and absurd values.
STYLE_NUMBERS = {
    "--size": (-64, 0, 10**9),
    "--iterations": (-1, 0, 10**12),
    "--learning-rate": (-0.1, "inf"),
    "--content-weight": (-1, "nan"),
    "--style-weight": (-1e4, "inf"),
    "--tv-weight": (-1, "nan"),
    "--range-weight": (-1, "inf"),
    "--style-scale": (-1, 0, 1e9),
    "--scales": (-1, 1000),
    "--multiscale-threshold": (-512, 100000),
    "--seed": (-1, 2**64),
    "--style-blend": ("-1", "1e400"),
}
IMAGE = ["@content.png", "-s", "@style.png", "-o", "@out.png"]
VIDEO = ["@clip.mp4", "-s", "@style.png", "-o", "@out.mp4"]
IMAGES = ["@photos", "-s", "@style.png", "-o", "@styled"]

CASES = [
    # --- image -------------------------------------------------------------------------------------
    pytest.param(
        ["image", "@missing.png", "-s", "@style.png", *FAST], ["missing.png", "not found"], id="image-content-missing"
    ),
    pytest.param(
        ["image", "@content.png", "-s", "@missing.png", *FAST], ["missing.png", "not found"], id="image-style-missing"
    ),
    pytest.param(
        ["image", *IMAGE, "--init", "@missing.png", *FAST], ["missing.png", "not found"], id="image-init-missing"
    ),
    pytest.param(["image", *IMAGE, "--weights", "@missing.pt", *FAST], ["missing.pt"], id="image-weights-missing"),
    pytest.param(
        ["image", "@adir", "-s", "@style.png", "-o", "@out.png", *FAST], ["adir", "directory"], id="image-content-dir"
    ),
    pytest.param(
        ["image", "@content.png", "-s", "@adir", "-o", "@out.png", *FAST], ["adir", "directory"], id="image-style-dir"
    ),
    pytest.param(["image", *IMAGE, "--init", "@adir", *FAST], ["adir", "directory"], id="image-init-dir"),
    pytest.param(["image", *IMAGE, "--weights", "@adir", *FAST], ["adir"], id="image-weights-dir"),
    pytest.param(
        ["image", "@text.png", "-s", "@style.png", "-o", "@out.png", *FAST],
        ["text.png", "not an image"],
        id="image-content-text",
    ),
    pytest.param(
        ["image", "@truncated.png", "-s", "@style.png", "-o", "@out.png", *FAST],
        ["truncated.png", "truncated"],
        id="image-content-truncated",
    ),
    pytest.param(
        ["image", "@empty.png", "-s", "@style.png", "-o", "@out.png", *FAST], ["empty.png"], id="image-content-empty"
    ),
    pytest.param(
        ["image", "@content.png", "-s", "@truncated.png", "-o", "@out.png", *FAST],
        ["truncated.png"],
        id="image-style-truncated",
    ),
    pytest.param(
        ["image", "@content.png", "-s", "@empty.png", "-o", "@out.png", *FAST], ["empty.png"], id="image-style-empty"
    ),
    pytest.param(["image", *IMAGE, "--init", "@text.png", *FAST], ["text.png"], id="image-init-text"),
    # VGG-19 needs 16 px on each side: a strip that --size makes thinner is refused, with the size that fits.
    pytest.param(
        ["image", "@strip.png", "-s", "@style.png", "-o", "@out.png", *FAST],
        ["strip.png", "32x2", "16 px", "use --size 320 or more"],
        id="image-content-too-thin-at-this-size",
    ),
    pytest.param(
        ["image", *IMAGE, "--weights", "@content.png", *FAST], ["content.png"], id="image-weights-not-weights"
    ),
    pytest.param(
        ["image", "@clip.mp4", "-s", "@style.png", "-o", "@out.png", *FAST], ["clip.mp4"], id="image-content-is-a-video"
    ),
    pytest.param(
        ["image", "@content.png", "-s", "@style.png", "-o", "@content.png", "--overwrite", *FAST],
        ["content.png", "same file"],
        id="image-output-is-content",
    ),
    pytest.param(
        ["image", "@content.png", "-s", "@style.png", "-o", "@style.png", "--overwrite", *FAST],
        ["style.png", "same file"],
        id="image-output-is-style",
    ),
    pytest.param(
        ["image", "@out-sheet.png", "-s", "@style.png", "-o", "@out.png", "--sheet", "--overwrite", *FAST],
        ["out-sheet.png", "same file"],
        id="image-sheet-would-overwrite-the-content",
    ),
    pytest.param(["image", *IMAGE[:-1], "@adir", *FAST], ["adir", "directory"], id="image-output-is-a-dir"),
    pytest.param(["image", *IMAGE[:-1], "@afile.txt/out.png", *FAST], ["afile.txt"], id="image-output-under-a-file"),
    pytest.param(["image", *IMAGE[:-1], "@out.gif", *FAST], ["out.gif", "unsupported"], id="image-output-format"),
    pytest.param(
        [
            "image",
            "@content.png",
            "-s",
            "@style.png",
            "-s",
            "@style2.jpg",
            "-o",
            "@out.png",
            "--style-blend",
            "1",
            *FAST,
        ],
        ["--style-blend"],
        id="image-blend-count-conflict",
    ),
    pytest.param(["image", *IMAGE, "--device", "tpu", *FAST[:-3]], ["--device"], id="image-device-unknown"),
    pytest.param(
        ["image", f"@{ODD} truncated.png", "-s", "@style.png", "-o", "@out.png", *FAST],
        ["truncated.png", "\\n"],
        id="image-odd-name-truncated",
    ),
    pytest.param(
        ["image", f"@{ODD} missing.png", "-s", "@style.png", "-o", "@out.png", *FAST],
        ["missing.png", "not found"],
        id="image-odd-name-missing",
    ),
    *negative_and_absurd("image", IMAGE, FAST, STYLE_NUMBERS),
    # --- video -------------------------------------------------------------------------------------
    pytest.param(
        ["video", "@missing.mp4", "-s", "@style.png", *FAST], ["missing.mp4", "not found"], id="video-input-missing"
    ),
    pytest.param(
        ["video", "@clip.mp4", "-s", "@missing.png", "-o", "@out.mp4", *FAST],
        ["missing.png", "not found"],
        id="video-style-missing",
    ),
    pytest.param(
        ["video", *VIDEO, "--init", "@missing.png", *FAST], ["missing.png", "not found"], id="video-init-missing"
    ),
    pytest.param(
        ["video", "@adir", "-s", "@style.png", "-o", "@out.mp4", *FAST], ["adir", "directory"], id="video-input-dir"
    ),
    pytest.param(
        ["video", "@clip.mp4", "-s", "@adir", "-o", "@out.mp4", *FAST], ["adir", "directory"], id="video-style-dir"
    ),
    pytest.param(
        ["video", "@text.mp4", "-s", "@style.png", "-o", "@out.mp4", *FAST],
        ["text.mp4", "not a video"],
        id="video-input-text",
    ),
    pytest.param(
        ["video", "@truncated.mp4", "-s", "@style.png", "-o", "@out.mp4", *FAST],
        ["truncated.mp4", "truncated"],
        id="video-input-truncated",
    ),
    pytest.param(
        ["video", "@empty.mp4", "-s", "@style.png", "-o", "@out.mp4", *FAST],
        ["empty.mp4", "empty"],
        id="video-input-empty",
    ),
    pytest.param(
        ["video", "@sound.m4a", "-s", "@style.png", "-o", "@out.mp4", *FAST],
        ["sound.m4a", "no video stream"],
        id="video-input-audio-only",
    ),
    pytest.param(
        ["video", "@content.png", "-s", "@style.png", "-o", "@out.mp4", *FAST],
        ["content.png", "still image"],
        id="video-input-still-image",
    ),
    pytest.param(
        ["video", "@clip.mp4", "-s", "@truncated.png", "-o", "@out.mp4", *FAST],
        ["truncated.png"],
        id="video-style-truncated",
    ),
    pytest.param(
        ["video", "@raw.h264", "-s", "@style.png", "-o", "@out.mp4", *FAST],
        ["raw.h264", "raw video stream without timestamps", "ffmpeg -i raw.h264 -c:v libx264 -qp 0 raw.mp4"],
        id="video-input-raw-elementary-stream",
    ),
    pytest.param(
        ["video", "@strip.mp4", "-s", "@style.png", "-o", "@out.mp4", *FAST],
        ["strip.mp4", "its frames would be 32x5", "16 px", "use --size 96 or more"],
        id="video-frames-too-thin-at-this-size",
    ),
    pytest.param(["video", *VIDEO, "--init", "@adir", *FAST], ["adir", "directory"], id="video-init-dir"),
    pytest.param(["video", *VIDEO, "--init", "@text.png", *FAST], ["text.png", "not an image"], id="video-init-text"),
    pytest.param(
        ["video", "@clip.mp4", "-s", "@empty.png", "-o", "@out.mp4", *FAST], ["empty.png"], id="video-style-empty"
    ),
    pytest.param(
        ["video", "@clip.mp4", "-s", "@style.png", "-o", "@clip.mp4", "--overwrite", *FAST],
        ["clip.mp4", "same file"],
        id="video-output-is-input",
    ),
    pytest.param(["video", *VIDEO[:-1], "@adir", *FAST], ["adir", "directory"], id="video-output-is-a-dir"),
    pytest.param(["video", *VIDEO[:-1], "@out.avi", *FAST], ["out.avi", "unsupported"], id="video-output-format"),
    pytest.param(["video", *VIDEO, "--work-dir", "@afile.txt", *FAST], ["afile.txt"], id="video-work-dir-is-a-file"),
    pytest.param(
        ["video", *VIDEO, "--work-dir", "@mine", *FAST], ["mine", "other files"], id="video-work-dir-holds-other-files"
    ),
    pytest.param(
        ["video", *VIDEO, "--work-dir", "@out.mp4", *FAST], ["--work-dir", "out.mp4"], id="video-work-dir-is-the-output"
    ),
    pytest.param(["video", *VIDEO, "--start", "1000", *FAST], ["--start"], id="video-start-after-the-end"),
    pytest.param(["video", *VIDEO, "--flow", "raft", *FAST], ["--flow"], id="video-flow-unknown"),
    pytest.param(
        ["video", *VIDEO, "-s", "@style2.jpg", "--style-blend", "1,2,3", *FAST],
        ["--style-blend"],
        id="video-blend-count-conflict",
    ),
    pytest.param(
        ["video", *VIDEO, "--flow", "none", "--temporal-weight", "1e10", *FAST],
        ["--temporal-weight", "--flow none"],
        id="video-temporal-weight-without-flow",
    ),
    pytest.param(
        ["video", *VIDEO, "--crop-bars", "--stylize-bars", *FAST],
        ["--crop-bars and --stylize-bars", "give one"],
        id="video-crop-bars-and-stylize-bars",
    ),
    pytest.param(
        ["video", f"@{ODD} missing.mp4", "-s", "@style.png", "-o", "@out.mp4", *FAST],
        ["missing.mp4", "\\n"],
        id="video-odd-name-missing",
    ),
    # Shots in parallel (issue 16): the same device and cluster options as `images`, refused alike.
    pytest.param(
        ["video", *VIDEO, "--device", "cpu,cpu", *FAST[:-3]], ["--device cpu,cpu", "twice"], id="video-device-twice"
    ),
    pytest.param(
        ["video", *VIDEO, "--backend", "dask", "--devices", "cpu", *FAST[:-3]],
        ["--device applies"],
        id="video-dask-with-devices",
    ),
    pytest.param(
        ["video", *VIDEO, "--scheduler", "tcp://127.0.0.1:1", *FAST],
        ["--scheduler", "--backend dask"],
        id="video-scheduler-without-dask",
    ),
    pytest.param(["video", *VIDEO, "--backend", "spark", *FAST], ["--backend"], id="video-backend-unknown"),
    pytest.param(
        ["video", *VIDEO, "--max-shot-frames", "10", "--segment-overlap", "6", *FAST],
        ["--segment-overlap 6", "half of --max-shot-frames"],
        id="video-overlap-over-half-a-segment",
    ),
    *negative_and_absurd("video", VIDEO, FAST, {"--max-shot-frames": (-1, 0, 1, 10**12), "--segment-overlap": (-1,)}),
    *negative_and_absurd("video", VIDEO, FAST, STYLE_NUMBERS),
    *negative_and_absurd(
        "video",
        VIDEO,
        FAST,
        {
            "--iterations-first": (-1, 0, 10**12),
            "--iterations-tracked": (-1, 10**12),
            "--tracked-share": (-0.1, 1.5, "nan"),
            "--start": (-1, "inf"),
            "--duration": (-1, 0, "nan"),
            "--every-nth": (-2, 0, 10**6),
            "--crf": (-1, 52),
            "--temporal-weight": (-1, "inf"),
            "--scene-threshold": (-0.5, 2),
            "--stop-tolerance": (-0.1, 1),
            "--first-stop-tolerance": (-0.1, 1),
            "--flow-workers": (-1, 0, 10**6),
        },
    ),
    # --- images ------------------------------------------------------------------------------------
    pytest.param(
        ["images", "@missing", "-s", "@style.png", "-o", "@styled", *FAST_IMAGES],
        ["missing", "not found"],
        id="images-input-missing",
    ),
    pytest.param(
        ["images", "@afile.txt", "-s", "@style.png", "-o", "@styled", *FAST_IMAGES],
        ["afile.txt", "not a directory"],
        id="images-input-is-a-file",
    ),
    pytest.param(
        ["images", "@photos", "-s", "@missing.png", "-o", "@styled", *FAST_IMAGES],
        ["missing.png", "not found"],
        id="images-style-missing",
    ),
    pytest.param(
        ["images", "@photos", "-s", "@adir", "-o", "@styled", *FAST_IMAGES],
        ["adir", "directory"],
        id="images-style-dir",
    ),
    pytest.param(
        ["images", "@photos", "-s", "@truncated.png", "-o", "@styled", *FAST_IMAGES],
        ["truncated.png"],
        id="images-style-truncated",
    ),
    pytest.param(
        ["images", "@photos", "-s", "@empty.png", "-o", "@styled", *FAST_IMAGES], ["empty.png"], id="images-style-empty"
    ),
    pytest.param(
        ["images", "@photos", "-s", "@style.png", "-o", "@photos", *FAST_IMAGES],
        ["photos"],
        id="images-output-is-input",
    ),
    pytest.param(
        ["images", "@photos", "-s", "@style.png", "-o", "@photos/sub/styled", *FAST_IMAGES],
        ["inside the input"],
        id="images-output-inside-input",
    ),
    pytest.param(
        ["images", "@photos/sub", "-s", "@style.png", "-o", "@photos", *FAST_IMAGES],
        ["photos", "must not hold"],
        id="images-output-holds-input",
    ),
    pytest.param(
        ["images", "@photos", "-s", "@style.png", "-o", "@afile.txt", *FAST_IMAGES],
        ["afile.txt", "not a directory"],
        id="images-output-is-a-file",
    ),
    pytest.param(["images", *IMAGES, "--init", "@content.png", *FAST_IMAGES], ["--init"], id="images-init-image"),
    pytest.param(["images", *IMAGES, "--format", "gif", *FAST_IMAGES], ["--format"], id="images-format-unknown"),
    pytest.param(
        ["images", *IMAGES, "--batch-size", "many", *FAST_IMAGES], ["--batch-size"], id="images-batch-size-word"
    ),
    pytest.param(
        ["images", *IMAGES, "--device", "cpu,cpu", *FAST_IMAGES[:-3]],
        ["--device cpu,cpu", "twice"],
        id="images-device-twice",
    ),
    # --devices is the old spelling, kept as an alias; messages name the option --device
    pytest.param(
        ["images", *IMAGES, "--backend", "dask", "--devices", "cpu", *FAST_IMAGES[:-3]],
        ["--device applies"],
        id="images-dask-with-devices",
    ),
    pytest.param(
        ["images", *IMAGES, "--scheduler", "tcp://127.0.0.1:1", *FAST_IMAGES],
        ["--scheduler", "--backend dask"],
        id="images-scheduler-without-dask",
    ),
    pytest.param(["images", *IMAGES, "--backend", "spark", *FAST_IMAGES], ["--backend"], id="images-backend-unknown"),
    *negative_and_absurd("images", IMAGES, FAST_IMAGES, STYLE_NUMBERS),
    *negative_and_absurd("images", IMAGES, FAST_IMAGES, {"--quality": (-1, 0, 101), "--batch-size": (-1, 0, 10**6)}),
    # --- status ------------------------------------------------------------------------------------
    pytest.param(["status", "@missing.work"], ["missing.work"], id="status-missing"),
    pytest.param(["status", "@afile.txt"], ["afile.txt", "not a directory"], id="status-a-file"),
    pytest.param(["status", "@adir"], ["adir", "not the work directory"], id="status-not-a-work-dir"),
    pytest.param(["status", "@torn.work"], ["job.json", "unreadable"], id="status-torn-job-record"),
    pytest.param(["status", "@torn-archive"], ["archive.json", "unreadable"], id="status-torn-archive-record"),
    # --- score -------------------------------------------------------------------------------------
    pytest.param(
        ["score", "@missing.png", "-c", "@content.png", "-s", "@style.png", "--device", "cpu"],
        ["missing.png", "not found"],
        id="score-output-missing",
    ),
    pytest.param(
        ["score", "@content.png", "-c", "@missing.png", "-s", "@style.png", "--device", "cpu"],
        ["missing.png", "not found"],
        id="score-content-missing",
    ),
    pytest.param(
        ["score", "@content.png", "-c", "@content.png", "-s", "@missing.png", "--device", "cpu"],
        ["missing.png", "not found"],
        id="score-style-missing",
    ),
    pytest.param(
        ["score", "@adir", "-c", "@content.png", "-s", "@style.png", "--device", "cpu"],
        ["adir", "directory"],
        id="score-output-dir",
    ),
    pytest.param(
        ["score", "@truncated.png", "-c", "@content.png", "-s", "@style.png", "--device", "cpu"],
        ["truncated.png"],
        id="score-output-truncated",
    ),
    pytest.param(
        ["score", "@clip.mp4", "-c", "@content.png", "-s", "@style.png", "--device", "cpu"],
        ["clip.mp4", "not an image"],
        id="score-output-is-a-video",
    ),
    pytest.param(
        ["score", "@content.png", "-c", "@empty.png", "-s", "@style.png", "--device", "cpu"],
        ["empty.png"],
        id="score-content-empty",
    ),
    pytest.param(
        ["score", "@content.png", "-c", "@content.png", "-s", "@text.png", "--device", "cpu"],
        ["text.png"],
        id="score-style-text",
    ),
    pytest.param(
        [
            "score",
            "@content.png",
            "-c",
            "@content.png",
            "-s",
            "@style.png",
            "-s",
            "@style2.jpg",
            "--style-blend",
            "1",
            "--device",
            "cpu",
        ],
        ["--style-blend"],
        id="score-blend-count-conflict",
    ),
    *negative_and_absurd(
        "score",
        ["@content.png", "-c", "@content.png", "-s", "@style.png"],
        ["--device", "cpu"],
        {"--size": (-512, 0, 10**9), "--style-blend": ("-1",)},
    ),
    # --- flicker -----------------------------------------------------------------------------------
    pytest.param(
        ["flicker", "@missing.mp4", "-r", "@clip.mp4"], ["missing.mp4", "not found"], id="flicker-output-missing"
    ),
    pytest.param(
        ["flicker", "@clip.mp4", "-r", "@missing.mp4"], ["missing.mp4", "not found"], id="flicker-reference-missing"
    ),
    pytest.param(["flicker", "@adir", "-r", "@clip.mp4"], ["adir", "directory"], id="flicker-output-dir"),
    pytest.param(
        ["flicker", "@clip.mp4", "-r", "@truncated.mp4"],
        ["truncated.mp4", "truncated"],
        id="flicker-reference-truncated",
    ),
    pytest.param(["flicker", "@empty.mp4", "-r", "@clip.mp4"], ["empty.mp4", "empty"], id="flicker-output-empty"),
    pytest.param(
        ["flicker", "@sound.m4a", "-r", "@clip.mp4"], ["sound.m4a", "no video stream"], id="flicker-output-audio-only"
    ),
    pytest.param(["flicker", "@text.mp4", "-r", "@clip.mp4"], ["text.mp4", "not a video"], id="flicker-output-text"),
    pytest.param(["flicker", "@clip.mp4", "-r", "@short.mp4"], ["frames"], id="flicker-different-lengths"),
    pytest.param(
        ["flicker", f"@{ODD}.mp4", "-r", "@missing.mp4"], ["missing.mp4"], id="flicker-odd-output-missing-reference"
    ),
    *negative_and_absurd(
        "flicker",
        ["@clip.mp4", "-r", "@clip.mp4"],
        [],
        {"--size": (-64, 0, 10**9), "--scene-threshold": (-1, 2), "--flash-frames": (-1, 5)},
    ),
    # --- usage errors, for every command ---------------------------------------------------------
    *[
        pytest.param([command, "--no-such-option"], ["--no-such-option"], id=f"{command}-unknown-option")
        for command in ("image", "video", "images", "status", "score", "flicker")
    ],
    *[
        pytest.param([command], ["Missing"], id=f"{command}-nothing-given")
        for command in ("image", "video", "images", "status", "score", "flicker")
    ],
]


@pytest.mark.parametrize("argv, words", CASES)
def test_bad_input_is_one_line_exit_2_and_changes_nothing(ws, capsys, argv, words):
    before = tree_state(ws)
    code = main(expand(ws, argv))
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert "Traceback" not in captured.err + captured.out
    assert code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    assert tree_state(ws) == before


def test_odd_file_names_work_and_reach_ffmpeg_as_arguments_never_through_a_shell(ws, capsys, monkeypatch):
    """An image, a video and a photo tree whose names hold spaces, quotes, a semicolon, shell
    substitutions, a newline and non-ASCII letters: stylized like any other, every subprocess
    started with an argument list, and nothing a shell would have run ran."""
    started = []
    real_popen = subprocess.Popen

    class RecordingPopen(real_popen):
        def __init__(self, args, *rest, **kwargs):
            assert isinstance(args, (list, tuple)) and not kwargs.get("shell"), args
            started.append(list(args))
            super().__init__(args, *rest, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", RecordingPopen)  # subprocess.run starts Popen too
    (ws / "tree" / ODD).mkdir(parents=True)
    shutil.copy(ws / f"{ODD}.png", ws / "tree" / ODD / f"{ODD}.png")

    runs = [
        ["image", f"@{ODD}.png", "-s", f"@{ODD}.png", "-o", f"@{ODD} out.png", *FAST],
        ["video", f"@{ODD}.mp4", "-s", f"@{ODD}.png", "-o", f"@{ODD} out.mp4", "--iterations-first", "2", *FAST],
        ["images", "@tree", "-s", f"@{ODD}.png", "-o", f"@{ODD} styled", *FAST_IMAGES],
        ["status", f"@{ODD} out.mp4.work"],
    ]
    for argv in runs:
        code = main(expand(ws, argv))
        err = capsys.readouterr().err
        assert code == 0, err
    with Image.open(ws / f"{ODD} out.png") as image:
        assert image.size == (32, 24)
    assert (ws / f"{ODD} styled" / ODD / f"{ODD}.png").is_file()
    frames = decoded_frames(ws / f"{ODD} out.mp4")
    assert len(frames) == 4 * 32 * 20 * 3
    assert any(str(ws / f"{ODD}.mp4") in args for args in started)  # the name went through as one argument
    assert not list(ws.rglob("pwned*")) and not list(ROOT.glob("pwned*"))
    assert json.loads((ws / f"{ODD} out.mp4.work" / "job.json").read_text())["stages"]["encode"]["status"] == "done"
