"""Errors raised by the durable spool::

    SpoolError                base; callers that must not crash catch this one
    ├── SpoolLockedError      another process holds the spool database
    ├── SpoolFullError        the item does not fit even after evicting everything it outranks
    └── SpoolWriteError       SQLite failed to write (disk full, I/O error, read-only file system)

Every error carries ``kind`` and ``message_id`` of the item concerned where there is one.
"""

from __future__ import annotations

from typing import Optional


class SpoolError(Exception):
    """Base of spool errors."""

    def __init__(self, message: str, kind: Optional[str] = None, message_id: Optional[str] = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message_id = message_id


class SpoolLockedError(SpoolError):
    """Another process has the spool database open (the spool is single-process by design)."""


class SpoolFullError(SpoolError):
    """The item does not fit in the byte budget, even after evicting everything it outranks."""


class SpoolWriteError(SpoolError):
    """SQLite could not write: disk full, I/O error, read-only file system. Counted as ``write_errors``."""
