"""The adapter's HTTP layer on a real Twisted reactor, against peers that
misbehave: a body that stalls after its headers, an endless body, a peer that
accepts and never answers. Also checks that Synapse's logging context
survives every wait (make_deferred_yieldable)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Callable, Iterator

import pytest
from twisted.internet import defer, reactor, threads

import presence_router_adapter as pra
import presence_router_adapter.cache
import presence_router_adapter.client
import presence_router_adapter.metrics
from presence_router_adapter import PresenceRouterAdapter, parse_config


class NoModuleApi:
    def register_presence_router_callbacks(self, **kwargs: Any) -> None:
        pass

    def run_as_background_process(self, *args: Any, **kwargs: Any) -> None:
        pass


@pytest.fixture(scope="session", autouse=True)
def running_reactor() -> Iterator[None]:
    """The global reactor, running in a thread for the whole session."""
    if not reactor.running:  # type: ignore[attr-defined]
        thread = threading.Thread(target=reactor.run, kwargs={"installSignalHandlers": False}, daemon=True)  # type: ignore[attr-defined]
        thread.start()
        deadline = time.monotonic() + 10
        while not reactor.running:  # type: ignore[attr-defined]
            assert time.monotonic() < deadline, "the reactor did not start"
            time.sleep(0.01)
    yield


def on_reactor(fn: Callable[[], Any]) -> Any:
    """Run a coroutine function on the reactor thread and wait for it."""
    return threads.blockingCallFromThread(reactor, lambda: defer.ensureDeferred(fn()))


class Peer:
    """A raw TCP peer on loopback that answers each connection with handler."""

    def __init__(self, handler: Callable[[socket.socket], None]) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.handler = handler
        self.closed_by_client = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            conn.recv(65536)  # the request
            self.handler(conn)
        except OSError:
            self.closed_by_client.set()
        finally:
            conn.close()

    def wait_for_client_close(self, conn: socket.socket, seconds: float) -> None:
        conn.settimeout(seconds)
        try:
            if conn.recv(1) == b"":
                self.closed_by_client.set()
        except OSError:
            self.closed_by_client.set()

    def close(self) -> None:
        self.sock.close()


def adapter_for(url: str, timeout: float = 0.5) -> PresenceRouterAdapter:
    return PresenceRouterAdapter(parse_config({"url": url, "token": "t", "timeout": timeout}), NoModuleApi())


def timed_request(adapter: PresenceRouterAdapter) -> tuple[float, Exception | None]:
    start = time.monotonic()
    try:
        on_reactor(lambda: adapter._request("GET", "rules"))
    except Exception as e:
        return time.monotonic() - start, e
    return time.monotonic() - start, None


def test_a_body_that_stalls_is_cut_at_the_deadline() -> None:
    holder: dict[str, Peer] = {}

    def stall(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"version\"")
        holder["peer"].wait_for_client_close(conn, 20)

    peer = holder["peer"] = Peer(stall)
    try:
        elapsed, error = timed_request(adapter_for(peer.url, timeout=0.5))
        assert isinstance(error, pra.RoutingAPIError), error
        assert elapsed < 3, f"a stalled body held the request for {elapsed:.1f} s with timeout 0.5 s"
        assert peer.closed_by_client.wait(5), "the stalled connection was left open"
    finally:
        peer.close()


def test_a_peer_that_never_answers_is_cut_at_the_deadline() -> None:
    holder: dict[str, Peer] = {}
    peer = holder["peer"] = Peer(lambda conn: holder["peer"].wait_for_client_close(conn, 20))
    try:
        elapsed, error = timed_request(adapter_for(peer.url, timeout=0.5))
        assert isinstance(error, pra.RoutingAPIError), error
        assert elapsed < 3, f"waited {elapsed:.1f} s for headers with timeout 0.5 s"
    finally:
        peer.close()


def test_an_endless_body_is_cut_at_the_size_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pra.client, "MAX_RESPONSE_BYTES", 1 << 20)
    sent = [0]

    def endless(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * 65536
        while sent[0] < 300 << 20:
            conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent[0] += len(chunk)

    peer = Peer(endless)
    try:
        elapsed, error = timed_request(adapter_for(peer.url, timeout=30))
        assert isinstance(error, pra.RoutingAPIError) and "bytes" in str(error), error
        assert peer.closed_by_client.wait(5), "the connection was not closed"
        assert sent[0] < 20 << 20, f"{sent[0]} bytes were read for a 1 MiB cap"
    finally:
        peer.close()


def test_a_declared_oversized_body_is_refused_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pra.client, "MAX_RESPONSE_BYTES", 1 << 20)
    holder: dict[str, Peer] = {}

    def huge(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 300000000\r\n\r\n" + b"x" * 1000)
        holder["peer"].wait_for_client_close(conn, 20)

    peer = holder["peer"] = Peer(huge)
    try:
        elapsed, error = timed_request(adapter_for(peer.url, timeout=30))
        assert isinstance(error, pra.RoutingAPIError) and "bytes" in str(error), error
        assert elapsed < 3
    finally:
        peer.close()


def test_a_good_answer_keeps_the_callers_logging_context() -> None:
    from synapse.logging.context import LoggingContext, current_context

    def ok(conn: socket.socket) -> None:
        body = b'{"version": 3, "always_send": [], "blacklist": []}'
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    peer = Peer(ok)
    adapter = adapter_for(peer.url, timeout=5)

    async def in_a_request() -> tuple[Any, bool, bool]:
        with LoggingContext(name="GET-1", server_name="test") as ctx:
            body = await adapter._request("GET", "rules")
            kept = current_context() is ctx
            try:
                await adapter._request("GET", "rules", timeout=0.001)
            except pra.RoutingAPIError:
                pass
            kept_after_failure = current_context() is ctx
        return body, kept, kept_after_failure

    def start() -> Any:
        # As Synapse runs a request: the reactor's sentinel context is put
        # back while the request waits, and each wait must restore it.
        from synapse.logging.context import run_in_background

        return run_in_background(in_a_request)

    try:
        body, kept, kept_after_failure = threads.blockingCallFromThread(reactor, start)
        assert body["version"] == 3
        assert kept, "the logging context was lost across the request"
        assert kept_after_failure, "the logging context was lost across a failed request"
    finally:
        peer.close()


def test_a_refused_connection_fails_at_once() -> None:
    """While presence-router is down, each request that still goes out (before
    the breaker opens) must not wait: Twisted's default endpoint took 0.3 s
    to report a refused connection."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    adapter = adapter_for(f"http://127.0.0.1:{port}", timeout=5)
    best = min(timed_request(adapter)[0] for _ in range(3))
    assert best < 0.1, f"a refused connection took {best:.3f} s (best of 3)"


def test_a_list_of_urls_fails_over_to_the_one_that_answers() -> None:
    """An active and a standby presence-router: when the one in use stops
    answering, the next request goes to the other; misses meanwhile are
    answered at once (fail-open), and the feed follows whichever answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()  # nothing listens there: the active process is gone

    def feed(conn: socket.socket) -> None:
        body = b'{"version": 7, "push_to": [], "reset": true}'
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    standby = Peer(feed)
    adapter = PresenceRouterAdapter(parse_config({"url": [dead, standby.url], "token": "t", "timeout": 2}), NoModuleApi())
    in_use = presence_router_adapter.metrics.URL_IN_USE
    try:
        assert in_use.labels(dead)._value.get() == 1 and in_use.labels(standby.url)._value.get() == 0
        # A miss asks the dead one: no extra routing, and the breaker opens.
        assert on_reactor(lambda: adapter.get_interested_users("@a:x")) == set()
        assert adapter._open, "the failure did not open the breaker"
        # Fail-open while it moves on: the next miss answers at once.
        start = time.monotonic()
        assert on_reactor(lambda: adapter.get_interested_users("@b:x")) == set()
        assert time.monotonic() - start < 0.5
        on_reactor(adapter.poll_once)
        assert not adapter._open and adapter._cache.version == 7
        assert in_use.labels(dead)._value.get() == 0 and in_use.labels(standby.url)._value.get() == 1
    finally:
        standby.close()
