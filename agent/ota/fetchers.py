"""Transports: every way bytes reach the installer, behind one seam.

:class:`Fetcher` is python-tuf's ``FetcherInterface`` (so ngclient uses it for metadata) plus
:meth:`Fetcher.fetch_range` (so large targets resume where they stopped). A missing file raises
``DownloadHTTPError(..., 404)`` in every implementation: ngclient relies on it to end the root-rotation
walk. Implementations:

- :class:`HttpFetcher`       HTTP(S) from any static server / object store / CDN (urllib, ``Range`` resume)
- :class:`DirectoryFetcher`  a directory (USB drive, unpacked bundle, local mirror); refuses links and escapes
- :class:`MemoryFetcher`     bytes in a dict (tests, and a bundle already held in memory)

The MQTT chunked push (the daemon) implements :class:`Fetcher` the same way: ``fetch_range(url, start)``
yields the bytes of ``url`` from ``start``, in order, and raises ``DownloadHTTPError(404)`` for unknown
names; or it assembles a whole bundle with :class:`StagedFile` and hands the file to
``Installer.install_bundle``.

:class:`StagedFile` is the resumable, length-capped file in staging that both use.
"""

from __future__ import annotations

import abc
import hashlib
import http.client
import os
import socket
import stat
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

from tuf.api.exceptions import DownloadError, DownloadHTTPError
from tuf.ngclient.fetcher import FetcherInterface

from agent.ota.errors import TransportError, VerificationError

CHUNK = 256 * 1024


class Fetcher(FetcherInterface, abc.ABC):  # type: ignore[misc,unused-ignore]
    """A transport for TUF metadata and targets with ranged reads."""

    last_metadata_url: Optional[str] = None
    """The metadata file ngclient fetched last: what an error during a refresh is about (for its message)."""

    def _fetch(self, url: str) -> Iterator[bytes]:
        self.last_metadata_url = url
        return self.fetch_range(url, 0)

    @abc.abstractmethod
    def fetch_range(self, url: str, start: int) -> Iterator[bytes]:
        """Yield the bytes of ``url`` from offset ``start`` to its end.

        Raises:
            DownloadHTTPError: with status 404 when ``url`` does not exist.
            DownloadError: any other transport failure.
        """


class TooSlowError(DownloadError):
    """A transfer ran past its deadline or below the minimum average rate (a slow-retrieval attack, or a link
    too poor to finish): the attempt ends, what arrived stays for a resume, the retry policy takes over."""


@dataclass(frozen=True)
class TransferPace:
    """How slow one fetch may be: an overall ``deadline_s``, and, once ``grace_s`` passed, an average of at
    least ``min_bytes_per_s`` (a socket timeout alone lets a server send a byte every few seconds forever)."""

    deadline_s: float = 3600.0
    min_bytes_per_s: float = 1024.0
    grace_s: float = 30.0

    def check(self, url: str, received: int, elapsed_s: float) -> None:
        """Raise :class:`TooSlowError` when a transfer of ``received`` bytes in ``elapsed_s`` is too slow."""
        if elapsed_s > self.deadline_s:
            raise TooSlowError(f"{url}: not finished after the {self.deadline_s:g} s deadline ({received} bytes)")
        if elapsed_s > self.grace_s and received / elapsed_s < self.min_bytes_per_s:
            raise TooSlowError(
                f"{url}: {received / elapsed_s:.1f} bytes/s on average over {elapsed_s:.0f} s, below the "
                f"{self.min_bytes_per_s:g} bytes/s minimum"
            )


class _SocketWatch:
    """Shuts a request's socket down when its time is up: the status line and headers must arrive within the
    pace's ``grace_s``, the whole transfer within ``deadline_s``. urllib's timeout bounds each read only, so a
    server trickling its headers a byte at a time would hold a request forever without this."""

    def __init__(self) -> None:
        self._sock: Optional[socket.socket] = None
        self._timer: Optional[threading.Timer] = None
        self.fired = False

    def attach(self, sock: socket.socket, seconds: float) -> None:
        self._sock = sock
        self.arm(seconds)

    def arm(self, seconds: float) -> None:
        self.cancel()
        self._timer = threading.Timer(max(seconds, 0.0), self._fire)
        self._timer.daemon = True
        self._timer.name = "ota-http-deadline"
        self._timer.start()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self.fired = True
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)  # the blocked read returns at once
            except OSError:
                pass


def _watched_opener(watch: _SocketWatch, header_s: float) -> urllib.request.OpenerDirector:
    """A urllib opener whose HTTP(S) connections hand their socket to ``watch`` as soon as they connect."""

    def connection(base: Any) -> Any:
        class Watched(base):  # type: ignore[misc]
            def connect(self) -> None:
                super().connect()
                watch.attach(self.sock, header_s)

        return Watched

    class Http(urllib.request.HTTPHandler):
        def http_open(self, req: urllib.request.Request) -> Any:
            return self.do_open(connection(http.client.HTTPConnection), req)

    class Https(urllib.request.HTTPSHandler):
        def https_open(self, req: urllib.request.Request) -> Any:
            # certificates checked as urllib does by default (http.client's default context)
            return self.do_open(connection(http.client.HTTPSConnection), req)

    return urllib.request.build_opener(Http(), Https())


class HttpFetcher(Fetcher):
    """HTTP(S) with urllib: no extra dependency, ``Range`` requests for resume, a socket timeout, and a pace
    (:class:`TransferPace`) every request is held to, metadata and targets alike."""

    def __init__(
        self,
        timeout_s: float = 30.0,
        user_agent: str = "edge-agent-ota",
        chunk: int = CHUNK,
        pace: Optional[TransferPace] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeout_s = timeout_s
        self.user_agent = user_agent
        self.chunk = chunk
        self.pace = pace or TransferPace()
        self._clock = clock

    def fetch_range(self, url: str, start: int) -> Iterator[bytes]:
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme not in ("http", "https"):
            raise DownloadError(f"HttpFetcher only fetches http(s) URLs, not {url!r}")
        headers = {"User-Agent": self.user_agent}
        if start > 0:
            headers["Range"] = f"bytes={start}-"
        request = urllib.request.Request(url, headers=headers)
        started = self._clock()
        watch = _SocketWatch()
        try:
            # the socket timeout bounds each read; the watch the headers and the whole transfer; the pace the
            # average rate (checked as bytes come)
            response = _watched_opener(watch, self.pace.grace_s).open(request, timeout=self.timeout_s)
        except urllib.error.HTTPError as exc:
            watch.cancel()
            raise DownloadHTTPError(f"{url}: HTTP {exc.code}", exc.code) from None
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
            watch.cancel()
            if watch.fired:
                raise TooSlowError(f"{url}: no response headers within {self.pace.grace_s:g} s") from None
            raise DownloadError(f"{url}: {exc}") from exc
        watch.arm(self.pace.deadline_s - (self._clock() - started))
        return self._stream(response, url, start, started, watch)

    def _stream(self, response: object, url: str, start: int, started: float, watch: _SocketWatch) -> Iterator[bytes]:
        resp = response  # http.client.HTTPResponse
        received = 0
        # once the watch shut the socket down, whatever the read then says (an error, or a clean-looking end):
        past_deadline = f"{url}: not finished within the {self.pace.deadline_s:g} s deadline"
        with resp:  # type: ignore[attr-defined]
            skip = start if start > 0 and getattr(resp, "status", 200) == 200 else 0  # server ignored Range
            try:
                while True:
                    # read1: whatever is there (up to chunk), so a trickle is seen as it trickles
                    data: bytes = resp.read1(self.chunk)  # type: ignore[attr-defined]
                    received += len(data)
                    self.pace.check(url, received, self._clock() - started)
                    if not data:
                        if watch.fired:
                            raise TooSlowError(past_deadline)
                        return
                    if skip:
                        cut = min(skip, len(data))
                        data, skip = data[cut:], skip - cut
                        if not data:
                            continue
                    yield data
            except (OSError, http.client.HTTPException) as exc:
                if watch.fired:
                    raise TooSlowError(past_deadline) from None
                raise DownloadError(f"{url}: {exc}") from exc
            finally:
                watch.cancel()


class DirectoryFetcher(Fetcher):
    """Files under ``root`` addressed as ``file://`` URLs (see :meth:`url`).

    Refuses anything that resolves outside ``root`` and any symbolic link on the way, so a crafted
    drive cannot make the installer read ``/etc/shadow`` or a FIFO.
    """

    def __init__(self, root: Path, chunk: int = CHUNK) -> None:
        self.root = Path(os.path.realpath(root))
        self.chunk = chunk

    def url(self, relative: str = "") -> str:
        """The URL of ``relative`` (a directory when it ends with ``/``)."""
        return (
            "file://"
            + urllib.parse.quote(str(self.root / relative))
            + ("/" if relative.endswith("/") or not relative else "")
        )

    def _path(self, url: str) -> Path:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "file":
            raise DownloadError(f"DirectoryFetcher only reads file:// URLs, not {url!r}")
        path = Path(urllib.parse.unquote(parts.path))
        try:
            rel = path.relative_to(self.root)
        except ValueError:
            raise DownloadError(f"{url}: outside {self.root}") from None
        if ".." in rel.parts:
            raise DownloadError(f"{url}: '..' in path")
        cur = self.root
        for part in rel.parts:
            cur = cur / part
            if cur.is_symlink():
                raise DownloadError(f"{url}: symbolic link {cur} refused")
        return path

    def fetch_range(self, url: str, start: int) -> Iterator[bytes]:
        path = self._path(url)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        except FileNotFoundError:
            raise DownloadHTTPError(f"{url}: not found", 404) from None
        except OSError as exc:
            raise DownloadError(f"{url}: {exc.strerror}") from exc
        f = os.fdopen(fd, "rb")
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            f.close()
            raise DownloadError(f"{url}: not a regular file")
        return self._stream(f, start)

    def _stream(self, f: object, start: int) -> Iterator[bytes]:
        with f:  # type: ignore[attr-defined]
            f.seek(start)  # type: ignore[attr-defined]
            while True:
                data: bytes = f.read(self.chunk)  # type: ignore[attr-defined]
                if not data:
                    return
                yield data


class MemoryFetcher(Fetcher):
    """Files held in memory, keyed by URL; records every request (``requests``) for tests."""

    def __init__(self, files: Optional[Dict[str, bytes]] = None) -> None:
        self.files: Dict[str, bytes] = dict(files or {})
        self.requests: List[str] = []

    def fetch_range(self, url: str, start: int) -> Iterator[bytes]:
        self.requests.append(url)
        if url not in self.files:
            raise DownloadHTTPError(f"{url}: not found", 404)
        data = self.files[url]
        return iter([data[start:]])


class StagedFile:
    """A file in staging written front to back, never longer than ``length``, verified at the end.

    The partial bytes live in ``<path>.part`` and survive a kill, so a new attempt resumes at
    :attr:`offset`. The final file appears (atomically renamed) only once its length and SHA-256 match.
    """

    def __init__(self, path: Path, length: int, sha256: str, label: Optional[str] = None) -> None:
        self.path = path
        self.part = path.with_name(path.name + ".part")
        self.length = length
        self.sha256 = sha256
        # what the file is, for messages: "target models/x/3/model.onnx", not the staging name "<sha>.model.onnx"
        self.label = label or path.name

    @property
    def offset(self) -> int:
        try:
            return self.part.stat().st_size
        except FileNotFoundError:
            return 0

    @property
    def complete(self) -> bool:
        return self.path.is_file() and self.path.stat().st_size == self.length

    def append(self, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset``: duplicates of bytes already held are dropped, gaps refused.

        Raises:
            VerificationError: "too_large" when the data would pass ``length``.
            TransportError: a gap (``offset`` beyond what is held).
        """
        have = self.offset
        if offset > have:
            raise TransportError(f"{self.label}: chunk at {offset} leaves a gap after {have} bytes")
        data = data[have - offset :]
        if not data:
            return
        if have + len(data) > self.length:
            raise VerificationError(f"{self.label}: more than the {self.length} signed bytes", reason="too_large")
        self.part.parent.mkdir(parents=True, exist_ok=True)
        with open(self.part, "ab") as f:
            f.write(data)

    def fill(self, fetcher: Fetcher, url: str, chunk: int = CHUNK) -> None:
        """Download the missing tail of ``url`` with a ranged fetch (resumes after a kill)."""
        if self.complete:
            return
        offset = self.offset
        if offset > self.length:
            self.part.unlink()
            offset = 0
        if offset == self.length:
            return
        try:
            for data in fetcher.fetch_range(url, offset):
                self.append(offset, data)
                offset += len(data)
        except DownloadHTTPError as exc:
            if exc.status_code == 404:
                raise VerificationError(f"{self.label}: not found at {url}", reason="not_found") from None
            raise TransportError(f"{self.label}: {exc} ({url})") from exc
        except TooSlowError as exc:
            raise TransportError(f"{self.label}: {exc}", reason="too_slow") from exc
        except DownloadError as exc:
            raise TransportError(f"{self.label}: {exc} ({url})") from exc

    def finish(self, chunk: int = CHUNK) -> Path:
        """Check length and SHA-256 of the ``.part`` file and move it into place.

        Raises:
            VerificationError: "length_mismatch" (short) or "hash_mismatch"; a bad ``.part`` is deleted.
        """
        if self.complete:
            return self.path
        size = self.offset
        if size != self.length:
            raise VerificationError(
                f"{self.label}: {size} bytes received, {self.length} signed", reason="length_mismatch"
            )
        digest = hashlib.sha256()
        with open(self.part, "rb") as f:
            for block in iter(lambda: f.read(chunk), b""):
                digest.update(block)
        if digest.hexdigest() != self.sha256:
            self.part.unlink()
            raise VerificationError(f"{self.label}: SHA-256 differs from the signed hash", reason="hash_mismatch")
        with open(self.part, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(self.part, self.path)
        return self.path
