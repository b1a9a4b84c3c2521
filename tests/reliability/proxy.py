"""A TCP proxy that injects a dependency's faults in front of the real server.

Modes: ``pass`` (relay both ways), ``refuse`` (accept, then reset the connection),
``blackhole`` (accept, read, never answer: what a dropped route or a hung server looks like
to a client that already connected) and ``down`` (the port is closed: connection refused).
Switching mode applies to open connections too: a pooled keep-alive connection to a
blackholed server stops answering, one to a refusing or downed server is reset.

The one thing it reads in the bytes it relays is the HTTP ``Host`` header, rewritten to
the upstream's: MLflow refuses requests whose Host it does not serve (``--allowed-hosts``,
against DNS rebinding).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from typing import Literal

Mode = Literal["pass", "refuse", "blackhole", "down"]


def _reset(sock: socket.socket) -> None:
    """Close with an RST, as a refusing server does."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class FaultProxy:
    """Listens on 127.0.0.1:<port> and relays to ``upstream`` (host, port) per its mode."""

    def __init__(self, upstream: tuple[str, int], mode: Mode = "pass") -> None:
        self.upstream = upstream
        self.mode: Mode = mode
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = int(probe.getsockname()[1])
        probe.close()
        self.accepted = 0
        self._thread = threading.Thread(target=self._serve, name="fault-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5)
        self._close_all()

    def set_mode(self, mode: Mode) -> None:
        with self._lock:
            self.mode = mode
        if mode in ("refuse", "down"):
            self._close_all()

    # -- the listener ---------------------------------------------------------------------

    def _serve(self) -> None:
        while not self._stopping.is_set():
            if self.mode == "down":
                self._unlisten()
                self._stopping.wait(0.1)
                continue
            listener = self._listen()
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                self._stopping.wait(0.1)
                continue
            self.accepted += 1
            self._take(client)
        self._unlisten()

    def _listen(self) -> socket.socket:
        if self._listener is None:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", self.port))
            sock.listen(64)
            sock.settimeout(0.1)
            self._listener = sock
        return self._listener

    def _unlisten(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def _take(self, client: socket.socket) -> None:
        mode = self.mode
        if mode == "refuse":
            _reset(client)
            return
        self._track(client)
        if mode == "blackhole":
            threading.Thread(target=self._swallow, args=(client,), daemon=True).start()
            return
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            self._untrack(client)
            _reset(client)
            return
        upstream.settimeout(None)
        self._track(upstream)
        ours = f"Host: 127.0.0.1:{self.port}\r\n".encode()
        theirs = f"Host: {self.upstream[0]}:{self.upstream[1]}\r\n".encode()
        for src, dst, host in ((client, upstream, (ours, theirs)), (upstream, client, None)):
            threading.Thread(target=self._pump, args=(src, dst, host), daemon=True).start()

    # -- the connections ------------------------------------------------------------------

    def _pump(
        self, src: socket.socket, dst: socket.socket, host: tuple[bytes, bytes] | None
    ) -> None:
        """Relay ``src`` to ``dst`` while passing; swallow while blackholed."""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self.mode == "pass":
                    dst.sendall(data.replace(*host) if host else data)
                elif self.mode != "blackhole":
                    break
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                self._untrack(sock)
                if self.mode == "pass":
                    sock.close()
                else:
                    _reset(sock)

    def _swallow(self, client: socket.socket) -> None:
        """Read and drop everything; answer nothing, until the client gives up."""
        try:
            while client.recv(65536):
                pass
        except OSError:
            pass
        finally:
            self._untrack(client)
            client.close()

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._conns.add(sock)

    def _untrack(self, sock: socket.socket) -> None:
        with self._lock:
            self._conns.discard(sock)

    def _close_all(self) -> None:
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for sock in conns:
            _reset(sock)


@contextlib.contextmanager
def fault_proxy(url: str) -> Iterator[FaultProxy]:
    """A :class:`FaultProxy` in front of the HTTP server at ``url``, passing at first."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    proxy = FaultProxy((host, port)).start()
    try:
        yield proxy
    finally:
        proxy.stop()
