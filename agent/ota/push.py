"""What to do with a model push, and whether a chunk plan and each chunk's header hold (pure: no I/O).

The model-update service (``agent.app.model_updates``) runs these on its worker thread; the chunk assembly
itself is :mod:`agent.ota.chunks`.
"""

from __future__ import annotations

import enum
import math
from typing import Any, Dict, Optional

from agent.ota.state import InstallState
from agent.protocol.models import ModelChunkHeader, ModelPush, ReleaseRef


class PushRejected(Exception):
    """A push or chunk that cannot be used as sent; ``reason`` is a stable code for reports."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Decision(str, enum.Enum):
    """What to do with the newest desired push."""

    INSTALL = "install"
    CURRENT = "current"  # that release (or a newer one) is active
    STALE = "stale"  # counter at or below the anti-rollback floor
    OTHER_CHANNEL = "other_channel"
    HANDLED = "handled"  # this exact push was installed / rejected before
    DEFER = "defer"  # a release is in probation, or a bundle queued by `ota install` waits: wait for them


def push_key(push: ModelPush) -> str:
    """Identity of a push for deduplication: release counter, bundle digest, channel."""
    return f"{push.release.counter}:{push.bundle_sha256}:{push.channel}"


def decide_push(push: ModelPush, state: InstallState, channel: str, handled: Dict[str, str]) -> Decision:
    """Decide on one push against the installer's persisted state (pure)."""
    if push.channel != channel:
        return Decision.OTHER_CHANNEL
    if push_key(push) in handled:
        return Decision.HANDLED
    active = state.active
    if active is not None and push.release.counter <= active.counter:
        return Decision.STALE if push.release.counter < active.counter else Decision.CURRENT
    if push.release.counter < state.floor:
        return Decision.STALE
    if state.trial is not None or state.queued is not None:
        # one release on trial at a time; the bundle queued during the trial (a drive, verified already and
        # kept on the box) goes first, then this push is decided again against the state it leaves
        return Decision.DEFER
    return Decision.INSTALL


def check_chunk_plan(push: ModelPush, push_topic: str, max_bundle_bytes: int, max_chunk_bytes: int) -> None:
    """Refuse a chunk plan that is inconsistent, too large, or points outside the push's own topic.

    The chunk topic must be exactly ``{push_topic}/chunks/{counter}``: a push must not be able to make the
    device subscribe to arbitrary topics.

    Raises:
        PushRejected: ``no_chunks`` / ``chunk_topic`` / ``too_large`` / ``chunk_plan``.
    """
    plan = push.chunks
    if plan is None:
        raise PushRejected("no_chunks", "the push offers no chunked transfer")
    expected_topic = f"{push_topic}/chunks/{push.release.counter}"
    if plan.topic != expected_topic:
        raise PushRejected("chunk_topic", f"chunk topic {plan.topic[:200]!r} is not {expected_topic!r}")
    if push.bundle_size <= 0:
        raise PushRejected("chunk_plan", "empty bundle")
    if push.bundle_size > max_bundle_bytes:
        raise PushRejected("too_large", f"bundle of {push.bundle_size} bytes > limit {max_bundle_bytes}")
    if plan.chunk_size > max_chunk_bytes:
        raise PushRejected("too_large", f"chunks of {plan.chunk_size} bytes > limit {max_chunk_bytes}")
    if plan.total != math.ceil(push.bundle_size / plan.chunk_size):
        raise PushRejected(
            "chunk_plan", f"{plan.total} chunks of {plan.chunk_size} bytes cannot hold {push.bundle_size} bytes"
        )


def check_chunk_header(header: ModelChunkHeader, push: ModelPush, topic_index: int) -> None:
    """Check a verified chunk header against the push it belongs to (offset, size, release, digest).

    Raises:
        PushRejected: ``chunk_mismatch``.
    """
    plan = push.chunks
    assert plan is not None
    problems = []
    if header.release != push.release:
        problems.append("release differs from the push")
    if header.bundle_sha256 != push.bundle_sha256:
        problems.append("bundle digest differs from the push")
    if header.total != plan.total:
        problems.append(f"total {header.total} != {plan.total}")
    if header.index != topic_index:
        problems.append(f"index {header.index} on the topic of chunk {topic_index}")
    offset = header.index * plan.chunk_size
    if header.offset != offset:
        problems.append(f"offset {header.offset} != {offset}")
    size = min(plan.chunk_size, push.bundle_size - offset)
    if header.size != size:
        problems.append(f"size {header.size} != {size}")
    if problems:
        raise PushRejected("chunk_mismatch", f"chunk {header.index}: " + "; ".join(problems))


def release_ref(release: Optional[Dict[str, Any]]) -> Optional[ReleaseRef]:
    """An installer release dict (name, version, counter) as a protocol :class:`ReleaseRef`."""
    if not release:
        return None
    try:
        return ReleaseRef(
            name=str(release.get("name")), version=str(release.get("version")), counter=int(release.get("counter", 0))
        )
    except (ValueError, TypeError):
        return None


__all__ = [
    "Decision",
    "PushRejected",
    "check_chunk_header",
    "check_chunk_plan",
    "decide_push",
    "push_key",
    "release_ref",
]
