"""The daemon's asyncio side: its named tasks (:class:`TaskGroup`) and one bridge for blocking calls that
must not run on the loop (:func:`in_thread`). Long-lived threads are :mod:`agent.threads` workers instead.

Python 3.8: no ``asyncio.TaskGroup`` or ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Awaitable, Callable, Dict, List, Optional, TypeVar

__all__ = ["TaskGroup", "in_thread", "settle"]

T = TypeVar("T")


async def in_thread(fn: Callable[[], T], name: str) -> T:
    """Run one blocking call (a model load, a join at shutdown) in a fresh daemon thread and await it.

    Short-lived and never joined: a call that hangs in a native library cannot keep the process from
    exiting (the caller bounds its wait). Not for long-lived work: that is a supervised worker.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def target() -> None:
        try:
            result = fn()
        except BaseException as exc:
            _call_soon(loop, settle, future, None, exc)
        else:
            _call_soon(loop, settle, future, result, None)

    threading.Thread(target=target, name=name, daemon=True).start()
    return await future


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # the loop closed while the call ran (shutdown): nobody awaits it any more
        pass


def settle(future: asyncio.Future[Any], result: Any, error: Optional[BaseException]) -> None:
    """Complete ``future`` once (on its loop), with ``error`` when given."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class TaskGroup:
    """Named tasks; the first one to fail (or to end while the group runs) is handed to ``on_exit`` and wakes
    the supervisor. ``cancel_all(timeout)`` cancels and waits, bounded."""

    def __init__(self, on_exit: Callable[[str, Optional[BaseException]], None]) -> None:
        self.tasks: Dict[str, asyncio.Task[Any]] = {}
        self._on_exit = on_exit
        self.closing = False

    def start(self, name: str, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self.tasks[name] = task
        task.add_done_callback(lambda t, n=name: self._done(n, t))  # type: ignore[misc]

    def _done(self, name: str, task: asyncio.Task[Any]) -> None:
        if self.closing:
            return
        error = None if task.cancelled() else task.exception()
        self._on_exit(name, error)

    async def cancel_all(self, timeout: float) -> List[str]:
        """Cancel every task; returns the names of those still running after ``timeout``."""
        self.closing = True
        for task in self.tasks.values():
            task.cancel()
        pending = [t for t in self.tasks.values() if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=max(0.0, timeout))
        return [name for name, task in self.tasks.items() if not task.done()]
