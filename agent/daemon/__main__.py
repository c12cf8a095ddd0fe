"""``python -m agent.daemon --config PATH``: the same as ``edge-agent run``."""

from agent.daemon.run import main

raise SystemExit(main())
