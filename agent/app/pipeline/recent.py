"""The last alerts and samples the box produced, with their JPEGs, for the box page (``agent/box_page``).

Written by the output-writer thread only, after the message is in the spool; every other thread reads
:attr:`RecentOutputs.snapshot`, a tuple the writer replaces (one reference swap), never the deque itself.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Deque, Dict, Optional, Tuple


@dataclass(frozen=True)
class RecentOutput:
    """One alert or sample as the page shows it. ``jpeg`` is the image the message carried (an alert's
    snapshot, the sample's frame); ``None`` when the alert went out without one."""

    kind: str  # "alert" | "sample"
    id: str
    camera: str
    at: float  # wall time of the frame
    what: str  # the alert's rule, or the sample's reason
    detail: str  # classes and confidences, or the flag's note
    jpeg: Optional[bytes]


class RecentOutputs:
    """A bounded record per kind (``keep`` each), newest last."""

    def __init__(self, keep: int = 12) -> None:
        self._by_kind: Dict[str, Deque[RecentOutput]] = {
            "alert": collections.deque(maxlen=keep),
            "sample": collections.deque(maxlen=keep),
        }
        self.snapshot: Tuple[RecentOutput, ...] = ()

    def add(self, output: RecentOutput) -> None:
        """Writer thread: record ``output`` and publish the new snapshot."""
        self._by_kind[output.kind].append(output)
        merged = [*self._by_kind["alert"], *self._by_kind["sample"]]
        self.snapshot = tuple(sorted(merged, key=lambda o: o.at))

    def find(self, output_id: str) -> Optional[RecentOutput]:
        """Any thread: the output with ``output_id`` in the current snapshot."""
        return next((o for o in self.snapshot if o.id == output_id), None)
