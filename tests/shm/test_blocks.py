"""BlockAllocator: page-aligned first-fit, coalescing, bounded (no memory involved)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from easymesh.shm.blocks import PAGE, BlockAllocator


def test_alloc_is_page_aligned_first_fit_and_bounded() -> None:
    a = BlockAllocator(8 * PAGE)
    assert a.alloc(1) == 0
    assert a.alloc(PAGE + 1) == PAGE
    assert a.alloc(5 * PAGE) == 3 * PAGE
    assert a.alloc(1) is None  # full: no blocking, no growth
    a.free(PAGE)
    assert a.alloc(PAGE) == PAGE  # the lowest hole is reused
    assert a.used_bytes == 7 * PAGE


def test_free_coalesces_both_neighbours() -> None:
    a = BlockAllocator(4 * PAGE)
    offs = [a.alloc(PAGE) for _ in range(4)]
    assert offs == [0, PAGE, 2 * PAGE, 3 * PAGE]
    a.free(0)
    a.free(2 * PAGE)
    a.free(PAGE)  # joins [0] and [2]
    assert a.largest_free() == 3 * PAGE
    a.free(3 * PAGE)
    assert a.alloc(4 * PAGE) == 0


def test_containing_finds_the_block_of_a_subrange() -> None:
    a = BlockAllocator(8 * PAGE)
    a.alloc(PAGE)
    b = a.alloc(3 * PAGE)
    assert a.containing(b + 10, 100) == b
    assert a.containing(b, 3 * PAGE) == b
    assert a.containing(b + 10, 3 * PAGE) is None  # runs past the block
    assert a.containing(6 * PAGE, 1) is None  # free memory


@pytest.mark.parametrize("size", [0, -PAGE, PAGE + 1])
def test_bad_sizes(size: int) -> None:
    with pytest.raises(ValueError):
        BlockAllocator(size)


def test_free_of_unknown_block_raises() -> None:
    a = BlockAllocator(2 * PAGE)
    with pytest.raises(KeyError):
        a.free(0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 5 * PAGE)), max_size=80))
def test_random_sequences_keep_blocks_disjoint_and_inside(ops: list[tuple[bool, int]]) -> None:
    size = 32 * PAGE
    a = BlockAllocator(size)
    live: dict[int, int] = {}
    for is_alloc, n in ops:
        if is_alloc or not live:
            off = a.alloc(n)
            if off is not None:
                assert off % PAGE == 0 and off + n <= size
                live[off] = n
        else:
            off = sorted(live)[n % len(live)]
            a.free(off)
            del live[off]
        spans = sorted((o, o + a.block_size(o)) for o in live)  # type: ignore[operator]
        assert all(e1 <= s2 for (_, e1), (s2, _) in zip(spans, spans[1:], strict=False))
        assert a.used_bytes + sum(a._free_sizes.values()) == size
    for off in list(live):
        a.free(off)
    assert a.largest_free() == size
