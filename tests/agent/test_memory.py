"""agent.memory: freed memory goes back to the OS (why: the module docstring), and a closed session does it."""

from __future__ import annotations

import platform
import sys
from pathlib import Path
from typing import List

import numpy as np
import pytest

from agent import memory
from agent.engine import Detector, OnnxRuntimeConfig
from agent.engine import onnxruntime as ort_backend

DEMO = Path(__file__).resolve().parents[2] / "models" / "demo" / "demo.onnx"


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_memory_is_given_back_on_glibc() -> None:
    blocks = [np.ones(60_000, dtype=np.uint8) for _ in range(700)]  # 42 MB in blocks below mmap's 128 KiB
    del blocks[:-1]  # all but the top block freed: only a trim gives them back
    assert memory.release_free_memory() is True
    assert memory.release_free_memory() in (True, False)  # looked up once, called every time; nothing left


def test_no_op_without_malloc_trim(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_malloc_trim", None)
    assert memory.release_free_memory() is False


def test_closing_a_session_gives_its_memory_back_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: List[int] = []
    monkeypatch.setattr(ort_backend, "release_free_memory", lambda: calls.append(1) or True)
    detector = Detector.open(DEMO, OnnxRuntimeConfig(intra_op_threads=1))
    assert calls == []
    detector.close()
    assert calls == [1]
    detector.close()  # idempotent: nothing left to free, no second trim
    assert calls == [1]
