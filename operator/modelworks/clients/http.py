"""Bounded HTTP GETs: a total deadline, a body size limit, no redirects, no proxies.

For the endpoints a tenant names or runs (serving pods' /metrics, a DriftMonitor's
Prometheus): a server that trickles bytes, answers a huge body or redirects elsewhere
costs the operator at most ``deadline`` seconds and ``max_bytes`` of memory, and is never
followed to a third address. A watchdog shuts the socket down at the deadline, so no
read (headers included) outlives it.

:class:`HttpError` carries a coarse ``reason`` safe to show a tenant (``unreachable``,
``timeout``, ``too-large``, ``redirect``, ``status``) and a ``detail`` for the operator's
debug log only.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Literal

Reason = Literal["unreachable", "timeout", "too-large", "redirect", "status", "invalid-url"]

CHUNK = 65536


class HttpError(Exception):
    """A bounded GET that gave no usable body; ``reason`` is coarse, ``detail`` is not."""

    def __init__(self, reason: Reason, detail: str, status: int | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: Reason = reason
        self.detail = detail
        self.status = status


@dataclass(frozen=True)
class Limits:
    """How long one GET may take in all (connect, headers, body) and how big its body."""

    deadline: float
    max_bytes: int


@dataclass(frozen=True)
class Response:
    status: int
    content_type: str
    body: bytes


def redact(url: str) -> str:
    """``url`` without user information, query or fragment (safe for status and logs)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid URL>"
    host = f"[{host}]" if ":" in host else host
    return urllib.parse.urlunsplit((parts.scheme, f"{host}{port}", parts.path, "", ""))


def get(url: str, limits: Limits, accept: str = "*/*", *, any_status: bool = False) -> Response:
    """GET ``url`` within ``limits``: a 2xx answer (any non-redirect one with
    ``any_status``), else :class:`HttpError`."""
    connection = _connection(url, limits.deadline)
    end = time.monotonic() + limits.deadline
    expired = threading.Event()
    watchdog = threading.Timer(limits.deadline, _cut, (connection, expired))
    watchdog.daemon = True
    watchdog.start()
    try:
        connection.connect()
        if expired.is_set():
            raise TimeoutError("deadline")
        connection.request("GET", _target(url), headers={"Accept": accept})
        response = connection.getresponse()
        _check_status(response, any_status)
        body = _read(response, limits.max_bytes, end)
        return Response(response.status, response.getheader("Content-Type") or "", body)
    except HttpError:
        raise
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if expired.is_set() or time.monotonic() >= end:
            raise HttpError("timeout", f"no complete answer within {limits.deadline:g}s") from exc
        raise HttpError("unreachable", f"{type(exc).__name__}: {exc}") from exc
    finally:
        watchdog.cancel()
        connection.close()


def _connection(url: str, deadline: float) -> http.client.HTTPConnection:
    try:
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise HttpError("invalid-url", str(exc)) from exc
    if parts.scheme not in ("http", "https") or not host:
        raise HttpError("invalid-url", "not an http(s) URL with a host")
    if parts.scheme == "https":
        return http.client.HTTPSConnection(host, port, timeout=deadline)
    return http.client.HTTPConnection(host, port, timeout=deadline)


def _target(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _cut(connection: http.client.HTTPConnection, expired: threading.Event) -> None:
    """At the deadline: unblock whatever read or connect is in progress."""
    expired.set()
    sock = connection.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _check_status(response: http.client.HTTPResponse, any_status: bool) -> None:
    status = response.status
    if 300 <= status < 400:
        where = redact(response.getheader("Location") or "")
        raise HttpError("redirect", f"HTTP {status} to {where} (not followed)", status)
    if not any_status and not 200 <= status < 300:
        raise HttpError("status", f"HTTP {status} {response.reason}", status)


def _read(response: http.client.HTTPResponse, max_bytes: int, end: float) -> bytes:
    """The body, refused as soon as it is known to exceed ``max_bytes``."""
    declared = response.getheader("Content-Length")
    if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
        raise HttpError("too-large", f"Content-Length {declared} > {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        if time.monotonic() >= end:
            raise TimeoutError("deadline")
        chunk = response.read1(CHUNK)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > max_bytes:
            raise HttpError("too-large", f"body over {max_bytes} bytes")
        chunks.append(chunk)
