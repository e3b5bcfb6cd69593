"""Atomic writes leave either the old file or the complete new one, with normal permissions."""

import os
import stat

import pytest
import torch

from pipeline.atomic import UMASK, atomic_path
from pipeline.images import save_image


def test_result_has_the_permissions_of_a_new_file(tmp_path):
    path = tmp_path / "out.png"
    save_image(torch.rand(1, 3, 8, 8), path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~UMASK


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
