"""The benchmark scripts (bench/, run by `make bench` and `make bench-video`, not by the tests) still start:
a script that imports a name the pipeline no longer has fails here, not in the middle of an hour's run."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.parametrize("script", sorted(path.name for path in BENCH.glob("*.py")))
def test_each_benchmark_script_imports_and_answers_help(script):
    done = subprocess.run([sys.executable, str(BENCH / script), "--help"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "usage:" in done.stdout, done.stdout[-2000:]
