"""Child process for the SIGKILL test: puts (and acks) in a loop, printing each id once the call returned.

Usage: python spool_writer_child.py DB_PATH MODE   (MODE: put | put_ack)
Lines: "P <id>" after put returned, "T <id>" before an ack, "A <id>" after the ack returned.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from agent.spool import Spool, SpoolConfig


def main() -> None:
    db, mode = Path(sys.argv[1]), sys.argv[2]
    spool = Spool(SpoolConfig(path=db, max_bytes=1 << 30))
    out = sys.stdout
    i = 0
    while True:
        mid = f"{os.getpid()}-{i}"
        spool.put(
            "sample" if i % 3 else "alert",
            "edge/s/d/samples",
            os.urandom(1000 + (i * 7919) % 20000),
            message_id=mid,
        )
        out.write(f"P {mid}\n")
        out.flush()
        if mode == "put_ack" and i % 2:
            for item in spool.take(window=4):
                out.write(f"T {item.message_id}\n")  # about to ack: may be gone after a kill
                out.flush()
                spool.ack([item.message_id])
                out.write(f"A {item.message_id}\n")
                out.flush()
        i += 1


if __name__ == "__main__":
    main()
