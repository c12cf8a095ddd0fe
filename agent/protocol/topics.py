"""Topic layout. One :class:`Topics` per device, built from (prefix, site, device).

Device topics (``{p}`` = ``{prefix}/{site}/{device}``)::

    {p}/status                    device → broker   retained DeviceStatus (last will: offline)
    {p}/cameras/{camera}/status   device → broker   retained CameraStatus
    {p}/alerts                    device → broker   AlertEvent
    {p}/samples                   device → broker   framed SampleMeta + JPEG
    {p}/snapshots                 device → broker   framed SnapshotRef + JPEG
    {p}/ota/state                 device → broker   OtaStateReport
    {p}/cmd                       broker → device   Command
    {p}/cmd/reply                 device → broker   CommandReply

Site-wide pushes::

    {prefix}/{site}/fleet/models                     retained ModelPush for every device
    {prefix}/{site}/fleet/models/chunks/{counter}/{i}  retained framed ModelChunkHeader + bytes
    {prefix}/{site}/groups/{group}/models            retained ModelPush for a group
    {prefix}/{site}/groups/{group}/models/chunks/{counter}/{i}
"""

from __future__ import annotations

import re
from typing import List

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
#: Names that would collide with site-wide topics if used as a device id.
RESERVED_DEVICE_IDS = frozenset({"fleet", "groups"})


def check_segment(kind: str, value: str) -> str:
    """Return ``value`` if it is a safe single topic level (no '/', '+', '#', NUL, not empty)."""
    if not _SEGMENT.match(value):
        raise ValueError(f"{kind} {value!r} is not a valid topic level (letters, digits, '._:-', 1-128)")
    return value


class Topics:
    """Every topic one device publishes or subscribes to."""

    def __init__(self, prefix: str, site: str, device: str) -> None:
        for level in prefix.split("/"):
            check_segment("prefix level", level)
        check_segment("site", site)
        check_segment("device", device)
        if device in RESERVED_DEVICE_IDS:
            raise ValueError(f"device id {device!r} is reserved")
        self.prefix = prefix
        self.site = site
        self.device = device
        self.base = f"{prefix}/{site}/{device}"
        self.site_base = f"{prefix}/{site}"

    @property
    def status(self) -> str:
        """Retained device status (and last will)."""
        return f"{self.base}/status"

    def camera_status(self, camera: str) -> str:
        """Retained status of one camera."""
        return f"{self.base}/cameras/{check_segment('camera', camera)}/status"

    @property
    def alerts(self) -> str:
        """Alert events."""
        return f"{self.base}/alerts"

    @property
    def samples(self) -> str:
        """Framed misdetection samples."""
        return f"{self.base}/samples"

    @property
    def snapshots(self) -> str:
        """Framed JPEG snapshots (alert snapshots, requested snapshots)."""
        return f"{self.base}/snapshots"

    @property
    def ota_state(self) -> str:
        """OTA progress and results."""
        return f"{self.base}/ota/state"

    @property
    def cmd(self) -> str:
        """Inbound commands."""
        return f"{self.base}/cmd"

    @property
    def cmd_reply(self) -> str:
        """Replies to commands."""
        return f"{self.base}/cmd/reply"

    @property
    def fleet_models(self) -> str:
        """Site-wide model push notification."""
        return f"{self.site_base}/fleet/models"

    def group_models(self, group: str) -> str:
        """Model push notification for a device group."""
        return f"{self.site_base}/groups/{check_segment('group', group)}/models"

    @staticmethod
    def chunk_topic(push_topic: str, counter: int, index: int) -> str:
        """Topic of chunk ``index`` of release ``counter`` below a push topic."""
        return f"{push_topic}/chunks/{counter}/{index}"

    def subscriptions(self, groups: List[str]) -> List[str]:
        """Topic filters a device always subscribes to (re-subscribed after every connect).

        Chunk topics are not among them: the OTA installer subscribes to
        ``chunk_filter(push_topic, counter)`` only while it fetches a release, so a reconnect does not
        replay every retained chunk.
        """
        return [self.cmd, self.fleet_models] + [self.group_models(group) for group in groups]

    @staticmethod
    def chunk_filter(push_topic: str, counter: int) -> str:
        """Filter matching every chunk of release ``counter`` below a push topic."""
        return f"{push_topic}/chunks/{counter}/+"
