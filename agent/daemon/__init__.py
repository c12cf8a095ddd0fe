"""The top floor of the edge agent: the process's life cycle, and the only package that knows every part.

::

    run.py       ``edge-agent run``: configuration, logging, native-stderr capture, asyncio.run(Daemon.run())
    daemon.py    Daemon: assemble, the asyncio tasks, supervision (exit codes), reload, the bounded stop
    assemble.py  assemble(): OTA → model → spool → writer → pipeline → link → cameras → metrics → pages,
                 returning the frozen Parts record that closes them in reverse
    hot_swap.py  which model runs: the start model, the first model OTA brings, hot swaps (HotSwap)
    cameras.py   the cameras on the pipeline and their states (CameraWiring)

Nothing below this package imports it: the services in ``agent/app/`` are handed the parts they use and the
:class:`~agent.app.live.LiveState`.
"""

from agent.daemon.assemble import Parts, assemble
from agent.daemon.daemon import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_SIDE_TASK,
    EXIT_START_FAILED,
    MODEL_TASKS,
    Daemon,
)
from agent.daemon.hot_swap import DetectorFactory

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_SIDE_TASK",
    "EXIT_START_FAILED",
    "MODEL_TASKS",
    "Daemon",
    "DetectorFactory",
    "Parts",
    "assemble",
]
