"""Seeded industrial-inspection scene renderer: parts on a conveyor belt, with exact boxes.

Used by the agent (the ``synthetic:`` camera source for demos, tests and benchmarks) and by the trainer
(training data, holdouts, and the stand-in for human labelling in the closed-loop demo). numpy and
OpenCV only. See docs/SYNTHETIC.md.

Errors::

    SyntheticError              base of everything below
    ├── UnknownDomainError      a domain name that is not in DOMAINS (also a ValueError)
    ├── DatasetExistsError      the data set folder already holds files
    └── VideoWriterError        cv2.VideoWriter did not open
"""

from __future__ import annotations

from agent.synthetic.domains import DOMAINS, DomainParams, get_domain
from agent.synthetic.errors import DatasetExistsError, SyntheticError, UnknownDomainError, VideoWriterError
from agent.synthetic.parts import CLASS_NAMES
from agent.synthetic.render import (
    SyntheticFrame,
    iter_frames,
    render_frame,
    render_stream_frame,
    render_stream_frames,
)
from agent.synthetic.writers import render_video, write_yolo_dataset

__all__ = [
    "CLASS_NAMES",
    "DOMAINS",
    "DatasetExistsError",
    "DomainParams",
    "SyntheticError",
    "SyntheticFrame",
    "UnknownDomainError",
    "VideoWriterError",
    "get_domain",
    "iter_frames",
    "render_frame",
    "render_stream_frame",
    "render_stream_frames",
    "render_video",
    "write_yolo_dataset",
]
