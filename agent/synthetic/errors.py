"""Errors raised by the synthetic scene renderer.

Split by fault::

    SyntheticError              base of everything below
    ├── UnknownDomainError      a domain name that is not in DOMAINS (also a ValueError)
    ├── DatasetExistsError      the dataset folder already holds files and overwrite was not asked for
    └── VideoWriterError        OpenCV could not open a video writer for that path and codec

Bad arguments (negative seeds, empty sizes, inconsistent domain parameters) raise ``ValueError``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


class SyntheticError(Exception):
    """Base class of synthetic-renderer errors."""


class UnknownDomainError(SyntheticError, ValueError):
    """A domain name that is not registered."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        super().__init__(f"unknown synthetic domain {name!r}; known domains: {', '.join(sorted(known))}")
        self.name = name
        self.known = tuple(sorted(known))


class DatasetExistsError(SyntheticError):
    """The output folder is not empty and overwriting was not requested."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path}: folder is not empty; choose another folder or pass overwrite=True")
        self.path = path


class VideoWriterError(SyntheticError):
    """cv2.VideoWriter did not open (unknown codec, container or unwritable path)."""

    def __init__(self, path: Path, codec: str) -> None:
        super().__init__(
            f"{path}: OpenCV could not open a video writer with codec {codec!r}"
            " (check the codec/extension pair, e.g. mp4v with .mp4 or MJPG with .avi,"
            " and that the folder exists)"
        )
        self.path = path
        self.codec = codec
