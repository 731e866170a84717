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
