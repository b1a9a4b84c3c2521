"""A tenant's endpoint cannot stall or flood the operator: real HTTP servers on 127.0.0.1.

Each server here misbehaves in one way (trickles a byte at a time, answers 200 MB,
redirects elsewhere); the operator's /metrics scrape and Prometheus query must come back
within their deadline, refuse the body early, and never follow the redirect.
"""

from __future__ import annotations

import json
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import pytest

from modelworks.clients.prometheus import PrometheusError, query
from modelworks.clients.scrape import scrape_pods

pytestmark = pytest.mark.integration

Handler = Callable[[socket.socket, dict[str, Any]], None]
SUCCESS = json.dumps(
    {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, "1"]}]},
    }
).encode()


@contextmanager
def server(handle: Handler) -> Iterator[tuple[int, dict[str, Any]]]:
    """A raw TCP server on 127.0.0.1: ``handle(conn, state)`` answers each connection."""
    state: dict[str, Any] = {"sent": 0, "requests": 0}

    class Raw(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.recv(65536)
            state["requests"] += 1
            with suppress(OSError):
                handle(self.request, state)

    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Raw)
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv.server_address[1], state
    finally:
        srv.shutdown()
        srv.server_close()


def trickle(conn: socket.socket, state: dict[str, Any]) -> None:
    """Headers, then one byte of a never-ending exposition every 0.2 s."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
    while True:
        conn.sendall(b"#")
        state["sent"] += 1
        time.sleep(0.2)


def huge(conn: socket.socket, state: dict[str, Any]) -> None:
    """200 MB of comment lines, no Content-Length (the size is learnt only by reading)."""
    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n")
    line = b"# " + b"x" * 1021 + b"\n"
    block = line * 1024
    for _ in range(200):
        conn.sendall(block)
        state["sent"] += len(block)
    conn.close()


def pod() -> dict[str, Any]:
    return {"metadata": {"name": "p"}, "status": {"podIP": "127.0.0.1"}}


def within(seconds: float, fn: Callable[[], Any]) -> Any:
    """``fn()``'s result, failing the test if it has not returned after ``seconds``."""
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    start = time.monotonic()
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still blocked after {seconds}s"
    return out[0], time.monotonic() - start


def test_a_trickling_metrics_endpoint_is_cut_at_the_deadline() -> None:
    with server(trickle) as (port, state):
        (result,), took = within(15, lambda: scrape_pods([pod()], port))
    assert result.error is not None and result.error.startswith("timeout")
    assert took < 7 and state["sent"] > 5  # the server was still sending when cut


def test_a_huge_metrics_body_is_refused_without_reading_it() -> None:
    with server(huge) as (port, state):
        (result,), _ = within(60, lambda: scrape_pods([pod()], port))
        sent = state["sent"]
    assert result.error is not None and result.error.startswith("too-large")
    assert sent < 32 * 1024 * 1024  # the server was stopped long before its 200 MB


def test_a_declared_huge_body_is_refused_before_reading() -> None:
    def declared(conn: socket.socket, state: dict[str, Any]) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 209715200\r\n\r\n# x\n")
        time.sleep(30)

    with server(declared) as (port, _):
        (result,), took = within(15, lambda: scrape_pods([pod()], port))
    assert result.error is not None and result.error.startswith("too-large")
    assert took < 2


def test_prometheus_redirect_is_not_followed() -> None:
    def prometheus(conn: socket.socket, state: dict[str, Any]) -> None:
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(SUCCESS)}\r\n\r\n".encode()
            + SUCCESS
        )

    with server(prometheus) as (target, elsewhere):

        def redirect(conn: socket.socket, state: dict[str, Any]) -> None:
            location = f"http://127.0.0.1:{target}/api/v1/query?query=up"
            conn.sendall(
                f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n".encode()
            )

        with server(redirect) as (port, _), pytest.raises(PrometheusError) as err:
            query(f"http://127.0.0.1:{port}", "up")
    assert elsewhere["requests"] == 0
    assert str(err.value) == (
        f"Prometheus at http://127.0.0.1:{port} answered a redirect (HTTP 302), "
        "which is not followed"
    )


def test_a_trickling_prometheus_is_cut_at_the_deadline() -> None:
    def failure(url: str) -> str:
        try:
            query(url, "up")
        except PrometheusError as exc:
            return str(exc)
        return "no error"

    with server(trickle) as (port, _):
        message, took = within(30, lambda: failure(f"http://127.0.0.1:{port}"))
    assert message == (
        f"Prometheus at http://127.0.0.1:{port} could not be reached, or did not answer within 10s"
    )
    assert took < 12
