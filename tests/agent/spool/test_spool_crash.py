"""SIGKILL a process writing to the spool: on reopen the database is sound and no returned put is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Set

import pytest

from agent.spool import Spool, SpoolConfig

ROOT = Path(__file__).resolve().parents[3]
CHILD = Path(__file__).with_name("spool_writer_child.py")


@pytest.mark.parametrize("mode", ["put", "put_ack"])
@pytest.mark.parametrize("kill_after", [50, 400])
def test_sigkill_during_writes_loses_nothing_and_corrupts_nothing(tmp_path: Path, mode: str, kill_after: int) -> None:
    db = tmp_path / "spool.db"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(db), mode], stdout=subprocess.PIPE, env=env, text=True, bufsize=1
    )
    put: Set[str] = set()
    taken: Set[str] = set()
    acked: Set[str] = set()
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            tag, mid = line.split()
            {"P": put, "T": taken, "A": acked}[tag].add(mid)
            if len(put) >= kill_after or time.monotonic() > deadline:
                break
        proc.send_signal(signal.SIGKILL)  # mid-write: the child is in its next put/ack right now
        # every line it wrote before dying still counts as "returned"
        for line in proc.stdout:
            tag, mid = line.split()
            {"P": put, "T": taken, "A": acked}[tag].add(mid)
    finally:
        proc.kill()
        proc.wait(30)
    assert len(put) >= kill_after
    spool = Spool(SpoolConfig(path=db, max_bytes=1 << 30))
    assert spool.integrity_check() == "ok"
    present = set(spool.message_ids())
    # an item whose ack was under way when the kill came may be either present or gone
    assert put - taken <= present, f"lost {len(put - taken - present)} returned puts"
    assert not (acked & present), "an acknowledged item came back"
    stats = spool.stats()
    assert stats.bytes == sum(len(i.payload) for i in spool.take(window=1 << 20))
