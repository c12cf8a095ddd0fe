"""Child process for the last-will test: connects a link, prints "ready", then idles until killed.

Usage: python link_child.py PORT WORKDIR
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tests.agent.link.link_helpers import make_link


def main() -> None:
    link = make_link(Path(sys.argv[2]), int(sys.argv[1]))
    link.start()
    if not link.wait_connected_blocking(20):
        sys.exit(2)
    print("ready", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
