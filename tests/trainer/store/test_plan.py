"""The pure dedupe and budget decision (trainer.store.plan), table-driven."""

from __future__ import annotations

import math

import pytest

from trainer.store import BudgetState, ImageDecision, ImageItem, plan_images

A, D, DI, F = ImageDecision.ACCEPT, ImageDecision.DUPLICATE_ID, ImageDecision.DUPLICATE_IMAGE, ImageDecision.STORE_FULL


def item(device="d1", mid="m1", sha="a", size=10, sample=True):
    return ImageItem(device, mid, sha * 64 if len(sha) == 1 else sha, size, sample)


BIG = BudgetState(used_bytes=0, max_bytes=10**9)


@pytest.mark.parametrize(
    ("items", "known_ids", "known_digests", "stored", "budget", "decisions", "new_bytes"),
    [
        # new, distinct
        ([item(mid="1", sha="a"), item(mid="2", sha="b")], set(), set(), set(), BIG, [A, A], 20),
        # the same message twice in one batch (a redelivery arriving with its original)
        ([item(mid="1", sha="a"), item(mid="1", sha="a")], set(), set(), set(), BIG, [A, D], 10),
        # already stored id
        ([item(mid="1", sha="a")], {("d1", "1")}, set(), {"a" * 64}, BIG, [D], 0),
        # the same image under a new id, same device: duplicate image; another device: accepted, no new blob
        (
            [item(mid="1", sha="a"), item(mid="2", sha="a"), item("d2", "3", "a")],
            set(),
            set(),
            set(),
            BIG,
            [A, DI, A],
            10,
        ),
        # known digest of this device
        ([item(mid="9", sha="a")], set(), {("d1", "a" * 64)}, {"a" * 64}, BIG, [DI], 0),
        # snapshots are not deduplicated by image (two alerts may share a frame), only by id
        (
            [item(mid="1", sha="a", sample=False), item(mid="2", sha="a", sample=False)],
            set(),
            set(),
            set(),
            BIG,
            [A, A],
            10,
        ),
        # budget: 25 bytes of room, 10-byte images: two fit, the third does not; a known blob costs nothing
        (
            [item(mid="1", sha="a"), item(mid="2", sha="b"), item(mid="3", sha="c"), item("d2", "4", "a")],
            set(),
            set(),
            set(),
            BudgetState(used_bytes=75, max_bytes=100),
            [A, A, F, A],
            20,
        ),
        # free disk bounds the room too
        (
            [item(mid="1", sha="a")],
            set(),
            set(),
            set(),
            BudgetState(0, 10**9, free_bytes=15, min_free_bytes=10),
            [F],
            0,
        ),
        # full store, but a blob it already holds still fits
        ([item("d2", "1", "a")], set(), set(), {"a" * 64}, BudgetState(100, 100), [A], 0),
        # a refused image does not count as seen: its redelivery later may fit
        (
            [item(mid="1", sha="a", size=50), item(mid="1", sha="a", size=50)],
            set(),
            set(),
            set(),
            BudgetState(60, 100),
            [F, F],
            0,
        ),
    ],
)
def test_plan(items, known_ids, known_digests, stored, budget, decisions, new_bytes):
    plan = plan_images(items, known_ids, known_digests, stored, budget)
    assert list(plan.decisions) == decisions
    assert plan.new_bytes == new_bytes
    assert all(plan.decisions[i] is A for i in plan.new_blobs)


def test_budget_state():
    assert BudgetState(10, 100).room() == 90 and not BudgetState(10, 100).full
    assert BudgetState(100, 100).full
    assert BudgetState(0, 100, free_bytes=50, min_free_bytes=60).full
    assert BudgetState(0, 100, free_bytes=None).room() == 100
    assert BudgetState(0, math.inf).room() == math.inf  # type: ignore[arg-type]
