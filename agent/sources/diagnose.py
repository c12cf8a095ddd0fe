"""Why a network camera did not open: the reason a person can act on, instead of "cannot open".

OpenCV's ``VideoCapture`` only says that opening failed. When it does, :func:`diagnose_stream_url` asks the
network the questions an installer would: does the name resolve, does anything listen on the port, does it
answer RTSP / HTTP, and with which status (``401`` wants credentials, ``404`` is a wrong stream path). The
answer is one sentence for the camera's status ``reason`` and the log; credentials never appear in it.

I/O with short timeouts, only after a failed open (the reader backs off between tries anyway);
:func:`describe_status` is the pure part.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from typing import Optional, Tuple
from urllib.parse import urlsplit

__all__ = ["describe_status", "diagnose_stream_url"]

_DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443, "rtmp": 1935}


def describe_status(protocol: str, code: int, has_credentials: bool) -> str:
    """A status code of the camera's server as a sentence (pure)."""
    if code == 401:
        if has_credentials:
            return f"{protocol} 401 Unauthorized: the camera refused the configured user / password"
        return f"{protocol} 401 Unauthorized: the camera wants credentials (user:password@ in the URL, or a credential)"
    if code == 403:
        return f"{protocol} 403 Forbidden: this user may not view the stream"
    if code == 404:
        return f"{protocol} 404 Not Found: no stream at this path (check the camera's stream URL)"
    if code == 454:
        return f"{protocol} 454 Session Not Found"
    if 500 <= code < 600:
        return f"{protocol} {code}: the camera reports an internal error"
    if 200 <= code < 300:
        return f"{protocol} {code}: the camera answers; the stream itself could not be decoded"
    return f"{protocol} {code}"


def _target(url: str) -> Optional[Tuple[str, str, int, bool, str]]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return scheme, parts.hostname, port or _DEFAULT_PORTS[scheme], parts.username is not None, path


def _rtsp_status(sock: socket.socket, url_without_credentials: str) -> Optional[int]:
    request = f"DESCRIBE {url_without_credentials} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n"
    sock.sendall(request.encode("ascii", "replace"))
    line = sock.makefile("rb").readline(256).decode("latin-1").strip()
    fields = line.split(" ", 2)
    if len(fields) >= 2 and fields[0].startswith("RTSP/") and fields[1].isdigit():
        return int(fields[1])
    return None


def diagnose_stream_url(url: str, timeout_s: float = 3.0) -> Optional[str]:
    """One sentence on why ``url`` did not open, or ``None`` when the URL is not a network stream.

    Never raises; the sentence names host and port but never credentials.
    """
    target = _target(url)
    if target is None:
        return None
    scheme, host, port, has_credentials, path = target
    where = f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"DNS lookup of {host} failed ({exc.strerror or exc})"
    except OSError as exc:
        return f"DNS lookup of {host} failed ({exc})"
    family, kind, proto, _name, address = infos[0]
    try:
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        return f"cannot create a socket for {where}: {exc}"
    try:
        sock.settimeout(timeout_s)
        try:
            sock.connect(address)
        except ConnectionRefusedError:
            return f"connection refused by {where} (nothing listens there: wrong port, or the camera's server is off)"
        except socket.timeout:
            return f"no answer from {where} within {timeout_s:.0f} s (camera off, wrong address, or a firewall)"
        except OSError as exc:
            return f"cannot reach {where}: {exc.strerror or exc}"
        try:
            if scheme == "rtsp":
                code = _rtsp_status(sock, f"rtsp://{where}{path}")
                if code is None:
                    return f"{where} accepts connections but does not answer RTSP"
                return describe_status("RTSP", code, has_credentials)
            if scheme in ("http", "https"):
                sock.close()
                connection: http.client.HTTPConnection
                if scheme == "https":
                    connection = http.client.HTTPSConnection(
                        host, port, timeout=timeout_s, context=ssl.create_default_context()
                    )
                else:
                    connection = http.client.HTTPConnection(host, port, timeout=timeout_s)
                try:
                    connection.request("GET", path)
                    return describe_status("HTTP", connection.getresponse().status, has_credentials)
                finally:
                    connection.close()
        except (OSError, http.client.HTTPException) as exc:
            return f"{where} accepts connections but the {scheme.upper()} exchange failed: {exc}"
        return f"{where} accepts connections; the stream could not be opened"
    finally:
        sock.close()
