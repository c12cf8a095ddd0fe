"""Hand memory freed inside the C allocator back to the operating system (glibc ``malloc_trim``).

glibc keeps freed blocks in the per-thread arena they came from, and once a multi-megabyte block has been
freed it serves later ones of that size from the arenas too (its mmap threshold rises). Three places free
much at once and would otherwise keep it in the resident set for good:

- a closed ONNX Runtime session (tens of MB of arenas; agent/engine/onnxruntime.py): the daemon loads each
  model in a fresh thread and health-checks candidates in the OTA worker, so nobody allocates from those
  arenas again. Measured (bench/bench_swap_memory.py): RSS +39 % over 30 model updates without, +3.7 % with;
- the temporaries of prerendering synthetic frames (agent/sources/readers.py);
- each batch of the cloud ingest's writer (trainer/ingest/writer.py).

Elsewhere than glibc (musl, macOS) :func:`release_free_memory` does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import Any, Optional

__all__ = ["release_free_memory"]

_UNSET: Any = object()
_malloc_trim: Any = _UNSET


def _load() -> Optional[Any]:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.malloc_trim  # AttributeError on musl
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


def release_free_memory() -> bool:
    """``malloc_trim(0)``: True if memory was given back, False if none was or the call does not exist.

    A few milliseconds on a heap of a few hundred MB: after a model is closed or a batch is done, never per frame.
    """
    global _malloc_trim
    if _malloc_trim is _UNSET:
        _malloc_trim = _load()
    if _malloc_trim is None:
        return False
    return bool(_malloc_trim(0))
