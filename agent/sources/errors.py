"""Exceptions of the camera sources.

::

    SourceError                      base; ``camera`` names the camera
    ├── SourceConfigError            cannot work as configured (GStreamer or an element missing, a bad pipeline):
    │                                the source goes to FAILED and is not retried
    ├── SourceUnavailableError       cannot open now (device unplugged, stream down, folder missing): retried
    │                                with backoff
    ├── SourceReadError              an open stream stopped delivering: reconnect with backoff
    └── SourceStoppedError           ``next_frame`` / ``wait_frame`` on a source that is stopped or failed
"""

from __future__ import annotations

from typing import Optional


class SourceError(Exception):
    """Base of the camera source errors.

    Attributes:
        camera: the camera's name ("" when not known where raised).
    """

    def __init__(self, message: str, camera: str = "") -> None:
        super().__init__(f"camera {camera!r}: {message}" if camera else message)
        self.camera = camera


class SourceConfigError(SourceError):
    """The source cannot work as configured; retrying will not help."""


class SourceUnavailableError(SourceError):
    """The source cannot be opened right now; it is retried with backoff.

    Attributes:
        retry_after_s: wait at least this long before the next try (a camera that refused the credentials or
            has no such stream: retrying at once would not help and may lock the account), ``None`` for the
            usual backoff.
    """

    def __init__(self, message: str, camera: str = "", retry_after_s: Optional[float] = None) -> None:
        super().__init__(message, camera)
        self.retry_after_s = retry_after_s


class SourceReadError(SourceError):
    """An open source stopped delivering frames."""


class SourceStoppedError(SourceError):
    """The source is stopped or failed and no newer frame will come.

    Attributes:
        state: the terminal state (``"stopped"`` or ``"failed"``).
        reason: why (the error text for ``failed``).
    """

    def __init__(self, message: str, camera: str = "", state: str = "", reason: str = "") -> None:
        super().__init__(message, camera)
        self.state = state
        self.reason = reason
