r"""A small threaded TCP forwarder whose endpoint can go down and come back on the same port.

Put it in front of a server (the moto S3 server) and point a client at `TcpProxy.url`:

```python
with TcpProxy("127.0.0.1", moto.port) as proxy:
    ...  # the client talks to the server through the proxy
    with proxy.down():
        ...  # connections are refused and open ones were reset, as when an endpoint goes down
    ...  # it listens again, on the same port
```

`stop()` closes the listening socket, so new connections are refused, and
resets every open connection (a TCP RST to both ends), so a client that
pooled a keep-alive connection sees "connection reset" on its next request.
`start()` listens again on the same port. One thread accepts, one thread per
connection forwards both directions; all are daemon threads, and `stop()`
joins them and closes every socket it opened.

Faults of single requests, chosen by a regular expression on the request
line (``PUT /bucket/key...``):

```python
proxy.lose_reply(rb"PUT /[^ ]*\.chunk0000")  # the next such request reaches the server; its reply never returns
proxy.on_request(rb"PUT /[^ ]*\.chunk0000", pause_the_client)  # run a callback as the request passes
```
"""

from __future__ import annotations

import contextlib
import re
import selectors
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Self

_CHUNK = 64 * 1024
# SO_LINGER on with a zero timeout: close() sends an RST instead of a FIN and drops unsent data.
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)
# How much of the client's stream a request line is looked for in (a line split across two reads is still seen).
_MATCH_WINDOW = 8192
_INTERIM_REPLY = re.compile(rb"^HTTP/1\.[01] 1\d\d ")


@dataclass
class _Rule:
    """A fault for requests whose line matches ``pattern``, for the next ``times`` of them."""

    pattern: re.Pattern[bytes]
    times: int
    lose_reply: bool
    callback: Callable[[], None] | None = None
    #: Requests this rule has acted on.
    hits: int = 0


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` with an RST (the peer sees "connection reset"), whatever state it is in."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
    sock.close()


class TcpProxy:
    """Forward ``host:port`` (a free port on 127.0.0.1 by default) to ``target_host:target_port``."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        connect_timeout: float = 5.0,
    ) -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = port  # 0 until the first start() picks a free one; then kept for every restart
        self.connect_timeout = connect_timeout
        #: Connections accepted since the proxy was created, over all its starts.
        self.accepted = 0
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        # Written once by stop() and never drained, so it stays readable: every thread of the
        # current run sees it in its select() and ends.
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._workers: set[threading.Thread] = set()
        self._rules: list[_Rule] = []

    # -- faults of single requests ----------------------------------------------------------

    def lose_reply(self, pattern: bytes, *, times: int = 1) -> _Rule:
        """The next ``times`` requests matching ``pattern`` reach the server, but the client is reset instead of
        getting the reply, as when a reply is lost on the way (the server has done the work)."""
        return self._add_rule(_Rule(re.compile(pattern), times, lose_reply=True))

    def on_request(self, pattern: bytes, callback: Callable[[], None], *, times: int = 1) -> _Rule:
        """Call ``callback`` when one of the next ``times`` requests matching ``pattern`` passes, then forward it."""
        return self._add_rule(_Rule(re.compile(pattern), times, lose_reply=False, callback=callback))

    def _add_rule(self, rule: _Rule) -> _Rule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def _claim_rules(self, window: bytes) -> list[_Rule]:
        """The rules a request in ``window`` triggers, each counted once."""
        with self._lock:
            hit = [r for r in self._rules if r.hits < r.times and r.pattern.search(window)]
            for rule in hit:
                rule.hits += 1
        return hit

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("the proxy has no port yet: start() it first")
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._listener is not None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Listen (again, on the same port after the first start). Does nothing if already listening."""
        with self._lock:
            if self._listener is not None:
                return self
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind((self.host, self.port))
                listener.listen(64)
            except OSError:
                listener.close()
                raise
            self.port = int(listener.getsockname()[1])
            self._wake_r, self._wake_w = socket.socketpair()
            self._listener = listener
            self._acceptor = threading.Thread(
                target=self._accept_loop,
                args=(listener, self._wake_r),
                name=f"tcp-proxy-{self.port}-accept",
                daemon=True,
            )
            self._acceptor.start()
        return self

    def stop(self) -> None:
        """Refuse new connections and reset every open one. Does nothing if already stopped."""
        with self._lock:
            listener, self._listener = self._listener, None
            if listener is None:
                return
            acceptor, self._acceptor = self._acceptor, None
            wake_r, wake_w = self._wake_r, self._wake_w
            self._wake_r = self._wake_w = None
        assert wake_r is not None
        assert wake_w is not None
        assert acceptor is not None
        wake_w.send(b"x")
        acceptor.join()
        listener.close()  # connection attempts from now on are refused
        with self._lock:  # the acceptor has ended: no connection thread of this run can be added any more
            workers, self._workers = self._workers, set()
        for worker in workers:
            worker.join()  # each one resets both of its sockets on the way out
        wake_r.close()
        wake_w.close()

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """The endpoint is down for the duration of the block, then listens again on the same port."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- threads ---------------------------------------------------------------------------

    def _accept_loop(self, listener: socket.socket, wake: socket.socket) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(listener, selectors.EVENT_READ)
            selector.register(wake, selectors.EVENT_READ)
            while True:
                ready = {key.fileobj for key, _ in selector.select()}
                if wake in ready:
                    return
                try:
                    client, _ = listener.accept()
                except OSError:
                    continue  # the client gave up before we accepted it
                worker = threading.Thread(
                    target=self._forward,
                    args=(client, wake),
                    name=f"tcp-proxy-{self.port}-conn",
                    daemon=True,
                )
                with self._lock:
                    self.accepted += 1
                    self._workers.add(worker)
                worker.start()

    def _forward(self, client: socket.socket, wake: socket.socket) -> None:
        """Copy bytes both ways until both sides have closed, or reset both when the proxy stops."""
        upstream: socket.socket | None = None
        clean = False
        try:
            try:
                upstream = socket.create_connection(self.target, timeout=self.connect_timeout)
            except OSError:
                return  # the target is down too: the client is reset
            # Blocking sends, but never forever: a peer that stops reading must not wedge stop().
            client.settimeout(self.connect_timeout)
            upstream.settimeout(self.connect_timeout)
            clean = self._pump(client, upstream, wake)
        except OSError:
            clean = False
        finally:
            for sock in (client, upstream):
                if sock is None:
                    continue
                if clean:
                    sock.close()
                else:
                    _reset(sock)
            with self._lock:
                self._workers.discard(threading.current_thread())

    def _pump(self, client: socket.socket, upstream: socket.socket, wake: socket.socket) -> bool:
        """Forward until both directions are finished (True), the proxy stops or a reply is lost (False)."""
        peer = {client: upstream, upstream: client}
        window = b""  # the end of what the client sent, where request lines are looked for
        losing_reply = False
        with selectors.DefaultSelector() as selector:
            selector.register(wake, selectors.EVENT_READ)
            selector.register(client, selectors.EVENT_READ)
            selector.register(upstream, selectors.EVENT_READ)
            open_sides = 2
            while open_sides:
                for key, _ in selector.select():
                    sock = key.fileobj
                    if sock is wake:
                        return False
                    assert isinstance(sock, socket.socket)
                    data = sock.recv(_CHUNK)
                    if data and sock is client and self._rules:
                        window = (window + data)[-_MATCH_WINDOW:]
                        for rule in self._claim_rules(window):
                            window = b""  # one request triggers a rule once
                            losing_reply |= rule.lose_reply
                            if rule.callback is not None:
                                rule.callback()
                    if data and sock is upstream and losing_reply and not _INTERIM_REPLY.match(data):
                        return False  # the server answered: the client is reset instead of hearing it
                    if data:
                        peer[sock].sendall(data)
                        continue
                    # This side finished sending: pass the half-close on and stop reading it.
                    selector.unregister(sock)
                    with contextlib.suppress(OSError):
                        peer[sock].shutdown(socket.SHUT_WR)
                    open_sides -= 1
        return True
