"""fsync_folder_fd: the one folder flush of the engine and the batches
(#16 item 8): EINVAL (a network filesystem refusing fsync on a folder) is no
error, anything else is."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from ketter.engine.hashing import fsync_folder_fd


def test_a_folder_is_flushed(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fsync_folder_fd(fd)
    finally:
        os.close(fd)


def test_einval_is_not_an_error() -> None:
    # A pipe refuses fsync with EINVAL, as some network filesystems do for folders.
    r, w = os.pipe()
    try:
        with pytest.raises(OSError) as raw:
            os.fsync(r)
        assert raw.value.errno == errno.EINVAL
        fsync_folder_fd(r)
    finally:
        os.close(r)
        os.close(w)


def test_other_errors_are_raised(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    os.close(fd)
    with pytest.raises(OSError) as err:
        fsync_folder_fd(fd)
    assert err.value.errno == errno.EBADF
