"""Which topics ingest reads, and what a topic says about its sender. Pure.

Device topics (``agent.protocol.Topics``; ``{p}`` = ``{prefix}/{site}/{device}``)::

    {p}/samples  {p}/alerts  {p}/snapshots  {p}/ota/state     events: split between workers
    {p}/status   {p}/cameras/{camera}/status                  retained state: read by every worker

Events go through one MQTT 5 shared subscription (``$share/{group}/...``), so each is handled by exactly one
worker of the group. Retained state is subscribed directly by every worker: MQTT 5 never sends retained
copies to a shared subscription (so a fresh worker would not learn the fleet's current state), and a status
is an idempotent upsert, so reading it N times costs nothing but a few writes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import List, Optional, Sequence

from agent.protocol.topics import RESERVED_DEVICE_IDS, check_segment


class Kind(str, enum.Enum):
    """What a device topic carries."""

    SAMPLE = "samples"
    ALERT = "alerts"
    SNAPSHOT = "snapshots"
    OTA_STATE = "ota/state"
    STATUS = "status"
    CAMERA_STATUS = "cameras/+/status"

    @property
    def shared(self) -> bool:
        """Events are split between workers; retained state is read by each."""
        return self not in (Kind.STATUS, Kind.CAMERA_STATUS)


class TopicError(ValueError):
    """A topic that is not one of a device's outbound topics under the configured prefix."""


@dataclass(frozen=True)
class TopicRef:
    """What the topic says: the site and device the broker let publish there, the kind, the camera if any."""

    site: str
    device: str
    kind: Kind
    camera: Optional[str] = None


def check_prefix(prefix: str) -> str:
    for level in prefix.split("/"):
        check_segment("prefix level", level)
    return prefix


def subscription_filters(prefix: str, sites: Sequence[str], share_group: Optional[str]) -> List[str]:
    """Topic filters for ``sites``: events under ``$share/{share_group}/`` when a group is given."""
    check_prefix(prefix)
    if share_group is not None:
        check_segment("share group", share_group)
    filters: List[str] = []
    for site in sites:
        check_segment("site", site)
        for kind in Kind:
            topic_filter = f"{prefix}/{site}/+/{kind.value}"
            if kind.shared and share_group is not None:
                topic_filter = f"$share/{share_group}/{topic_filter}"
            filters.append(topic_filter)
    return filters


def parse_topic(topic: str, prefix: str) -> TopicRef:
    """Split a device topic. Raises TopicError for anything else (wrong prefix, bad level, reserved id)."""
    head = prefix + "/"
    if not topic.startswith(head):
        raise TopicError(f"topic {topic[:200]!r} is not under {prefix!r}")
    levels = topic[len(head) :].split("/")
    if len(levels) < 3:
        raise TopicError(f"topic {topic[:200]!r} has no device level")
    site, device, rest = levels[0], levels[1], levels[2:]
    try:
        check_segment("site", site)
        check_segment("device", device)
    except ValueError as exc:
        raise TopicError(str(exc)) from None
    if device in RESERVED_DEVICE_IDS:
        raise TopicError(f"topic {topic[:200]!r}: {device!r} is not a device")
    if len(rest) == 3 and rest[0] == "cameras" and rest[2] == "status":
        try:
            camera = check_segment("camera", rest[1])
        except ValueError as exc:
            raise TopicError(str(exc)) from None
        return TopicRef(site, device, Kind.CAMERA_STATUS, camera)
    tail = "/".join(rest)
    for kind in (Kind.SAMPLE, Kind.ALERT, Kind.SNAPSHOT, Kind.OTA_STATE, Kind.STATUS):
        if tail == kind.value:
            return TopicRef(site, device, kind)
    raise TopicError(f"topic {topic[:200]!r} is not a device's outbound topic")
