"""Errors raised by the detection engine.

Split by fault, so callers (CLI, daemon, OTA health check) can react to the cause::

    EngineError                      base of everything below
    ├── ModelError                   the model file is at fault (the user fixes the file)
    │   ├── ModelFileError           missing, unreadable or corrupt file
    │   └── ModelMetadataError       metadata missing or inconsistent with the graph
    ├── InputError                   a frame/tensor does not fit the model (shape, dtype, batch)
    ├── BackendUnavailableError      the runtime is not installed here (onnxruntime, tensorrt, pycuda)
    └── BackendRuntimeError          the runtime failed while running a valid model on valid input

Every error carries what it is about as attributes (``path``, ``expected``, ``got``) besides its message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union


class EngineError(Exception):
    """Base class of detection-engine errors."""


class ModelError(EngineError):
    """The model file is at fault."""

    def __init__(self, message: str, path: Optional[Union[str, Path]] = None) -> None:
        super().__init__(message if path is None else f"{path}: {message}")
        self.path = None if path is None else Path(path)


class ModelFileError(ModelError):
    """Missing, unreadable or corrupt model file."""


class ModelMetadataError(ModelError):
    """Model metadata missing or inconsistent with the graph."""


class InputError(EngineError):
    """An input does not fit the model."""

    def __init__(self, message: str, expected: object = None, got: object = None) -> None:
        super().__init__(message)
        self.expected = expected
        self.got = got


class BackendUnavailableError(EngineError):
    """The requested runtime is not installed on this machine."""

    def __init__(self, backend: str, reason: str) -> None:
        super().__init__(f"backend {backend!r} is not available: {reason}")
        self.backend = backend
        self.reason = reason


class BackendRuntimeError(EngineError):
    """The runtime failed while running a valid model."""
