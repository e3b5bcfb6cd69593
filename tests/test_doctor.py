"""`stylize doctor` reports the environment and fails when something needed is missing."""

from typer.testing import CliRunner

from pipeline.cli import app


def test_doctor_reports_ffmpeg_and_weights():
    result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert " ok " in lines["ffmpeg"] and "ffmpeg version" in lines["ffmpeg"]
    assert " ok " in lines["VGG-19"] and "vgg19_weights" in lines["VGG-19"]
    assert "GPU" in lines


def test_doctor_fails_without_ffmpeg(monkeypatch):
    monkeypatch.setenv("FFMPEG_BINARY", "/nonexistent/ffmpeg")
    result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 1
    assert "MISSING" in next(line for line in result.stdout.splitlines() if line.startswith("ffmpeg"))
