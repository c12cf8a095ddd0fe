"""The ``inference`` thread that runs :meth:`Pipeline.step` calls handed to it by the daemon's asyncio task."""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Optional, Tuple

import structlog

log = structlog.get_logger(__name__)


class InferenceThread:
    """One daemon thread running blocking calls for the asyncio loop, in order.

    Not a ``ThreadPoolExecutor``: its workers are joined at interpreter exit, so an inference call stuck
    in a runtime would keep a SIGTERMed daemon alive forever. This thread is a daemon thread; the
    supervisor waits for it only up to its shutdown bound.
    """

    def __init__(self, name: str = "inference") -> None:
        self._queue: queue.Queue[Optional[Tuple[Callable[[], Any], Any, Any]]] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, loop, future = item
            try:
                result = fn()
            except BaseException as exc:
                _reply(loop, _set_exception, future, exc)
            else:
                _reply(loop, _set_result, future, result)

    async def call(self, fn: Callable[[], Any]) -> Any:
        import asyncio

        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put((fn, loop, future))
        return await future

    def stop(self) -> None:
        self._queue.put(None)

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()


def _reply(loop: Any, setter: Callable[[Any, Any], None], future: Any, value: Any) -> None:
    try:
        loop.call_soon_threadsafe(setter, future, value)
    except RuntimeError:  # the loop closed while the call ran (shutdown): nobody awaits the result any more
        pass


def _set_result(future: Any, result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _set_exception(future: Any, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
