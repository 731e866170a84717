"""How many mates a batch claims (ketter.jobs.batch.mates_limits): within
BATCH_MAX files and BATCH_BYTES bytes whatever sizes the mates have."""

from __future__ import annotations

import pytest

from ketter.engine.inline import INLINE_MAX, SMALL_FILE
from ketter.jobs.batch import BATCH_BYTES, BATCH_MAX, mates_limits


@pytest.mark.parametrize("size", [0, 1, 65_536, SMALL_FILE - 1, SMALL_FILE])
def test_a_small_lead_takes_63_mates_of_at_most_1_mib(size: int) -> None:
    assert mates_limits(size) == (63, SMALL_FILE)


@pytest.mark.parametrize("size", [SMALL_FILE + 1, 2 * SMALL_FILE, INLINE_MAX])
def test_a_larger_lead_takes_15_mates_of_at_most_4_mib(size: int) -> None:
    assert mates_limits(size) == (15, INLINE_MAX)


@pytest.mark.parametrize("size", [0, SMALL_FILE, SMALL_FILE + 1, INLINE_MAX])
def test_no_batch_exceeds_its_files_or_its_bytes(size: int) -> None:
    mates, largest = mates_limits(size)
    assert 1 + mates <= BATCH_MAX
    assert size + mates * largest <= BATCH_BYTES


def test_a_file_too_large_for_a_batch_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=f"{INLINE_MAX + 1} bytes is not batched"):
        mates_limits(INLINE_MAX + 1)


@pytest.mark.parametrize(("idle", "files"), [(0, 64), (1, 32), (2, 21), (3, 16), (7, 16), (63, 16)])
def test_idle_threads_get_their_share_of_a_burst(idle: int, files: int) -> None:
    """A thread leaves a burst's files to the idle ones: 64 files a batch
    when every thread is busy, down to 16 (never fewer) with idle ones."""
    assert mates_limits(65_536, idle=idle) == (files - 1, SMALL_FILE)
    assert mates_limits(INLINE_MAX, idle=idle) == (15, INLINE_MAX)
