"""The HTTP client of the routing API: a whole-request deadline, a size cap,
connections that fail at once, and the breaker that answers "no extra
routing" without the network after a failure."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from .api import InvalidAnswer, RoutingAPIError
from .cache import _Cache
from .config import AdapterConfig
from .metrics import ERRORS, INVALID, URL_IN_USE

logger = logging.getLogger("presence_router_adapter")

WARN_INTERVAL = 30.0
# The largest answer read; a longer one fails the request (the routing API's
# answers to MAX_STATES_PER_REQUEST states are well below 1 MiB).
MAX_RESPONSE_BYTES = 16 << 20


class RoutingClient:
    """The client, as a part of PresenceRouterAdapter."""

    _config: AdapterConfig
    _cache: _Cache
    _open: bool
    _last_warning: float
    _agent: Any
    # The index in _config.urls of the URL in use; _switched is when it
    # last moved (switches are logged at most once per WARN_INTERVAL).
    _url_index: int = 0
    _switched: float = 0.0

    @property
    def _url(self) -> str:
        """The presence-router URL in use."""
        return self._config.urls[self._url_index]

    def _show_url(self) -> None:
        for i, url in enumerate(self._config.urls):
            URL_IN_USE.labels(url).set(1 if i == self._url_index else 0)

    def _move_on(self, index: int, error: str) -> None:
        """The request to the URL at index failed: use the next URL of the
        list (unless another failure moved on already)."""
        urls = self._config.urls
        if len(urls) < 2 or index != self._url_index:
            return
        self._url_index = (index + 1) % len(urls)
        self._show_url()
        now = time.monotonic()
        if now - self._switched >= WARN_INTERVAL:
            logger.warning("presence-router at %s failed (%s); using %s from now on", urls[index], error, self._url)
        self._switched = now

    async def _request(self, method: str, path: str, payload: Any = None, timeout: float | None = None) -> Any:
        """One routing API request, bounded as a whole (headers and body) by
        timeout and in size by MAX_RESPONSE_BYTES; its Deferred is made
        yieldable so that Synapse's logging context survives the wait."""
        from synapse.logging.context import make_deferred_yieldable

        endpoint = path.split("?")[0]
        index = self._url_index
        try:
            d = self._request_deferred(method, path, payload, timeout or self._config.timeout)
            code, content = await make_deferred_yieldable(d)
        except Exception as e:
            ERRORS.labels(endpoint).inc()
            self._move_on(index, type(e).__name__)
            raise RoutingAPIError(f"{type(e).__name__}: {e}") from e
        if code != 200:
            ERRORS.labels(endpoint).inc()
            self._move_on(index, f"HTTP {code}")
            raise RoutingAPIError(f"HTTP {code}: {content[:200]!r}")
        try:
            return json.loads(content)
        except ValueError as e:
            ERRORS.labels(endpoint).inc()
            INVALID.labels(endpoint).inc()
            self._move_on(index, "an answer that is not JSON")
            raise InvalidAnswer(f"the answer is not JSON: {e}") from e

    def _request_deferred(self, method: str, path: str, payload: Any, timeout: float) -> Any:
        """The request as one Deferred of (status, body), cancelled (and its
        connection closed) when timeout passes."""
        import treq
        from twisted.internet import reactor

        headers: dict[bytes | str, list[bytes | str]] = {
            "Authorization": [f"Bearer {self._config.token}"],
            "Content-Type": ["application/json"],
        }
        data = payload if isinstance(payload, bytes) or payload is None else json.dumps(payload).encode()
        if self._agent is None:
            self._agent = _agent()
        d = treq.request(
            method, f"{self._url}/_presence_router/v1/{path}", headers=headers, data=data, agent=self._agent
        )

        def read_body(response: Any) -> Any:
            return _read_body(response).addCallback(lambda content: (response.code, content))

        d.addCallback(read_body)
        d.addTimeout(timeout, reactor)
        return d

    def _failed(self, what: str, error: Exception) -> None:
        """A request failed: open the breaker, count, warn at most once per
        WARN_INTERVAL."""
        self._open = True
        if isinstance(error, InvalidAnswer) or isinstance(error.__cause__, InvalidAnswer):
            INVALID.labels(what).inc()
        now = time.monotonic()
        if now - self._last_warning >= WARN_INTERVAL:
            self._last_warning = now
            logger.warning(
                "presence-router at %s failed (%s: %s); answering from the cache (version %d), and with no extra "
                "routing for what it does not hold, until the change feed reaches presence-router again",
                self._url, what, error, self._cache.version,
            )


def _agent() -> Any:
    """An HTTP agent (persistent connections) whose connection attempts fail
    as soon as they fail: Twisted's default HostnameEndpoint notices a
    refused connection only at its next 0.3 s attempt tick, which every
    request would wait while presence-router is down."""
    from twisted.internet import reactor
    from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
    from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
    from twisted.web.iweb import IAgentEndpointFactory
    from zope.interface import implementer  # type: ignore[import-untyped]

    tls = BrowserLikePolicyForHTTPS()  # type: ignore[no-untyped-call]

    @implementer(IAgentEndpointFactory)
    class Endpoints:
        def endpointForURI(self, uri: Any) -> Any:
            endpoint = HostnameEndpoint(reactor, uri.host, uri.port, attemptDelay=0.01)
            if uri.scheme == b"https":
                return wrapClientTLS(tls.creatorForNetloc(uri.host, uri.port), endpoint)  # type: ignore[arg-type]
            return endpoint

    pool = HTTPConnectionPool(reactor, persistent=True)  # type: ignore[no-untyped-call]
    return Agent.usingEndpointFactory(reactor, Endpoints(), pool=pool)  # type: ignore[no-untyped-call]


def _read_body(response: Any) -> Any:
    """A Deferred of the response's body, failing when it is longer than
    MAX_RESPONSE_BYTES; cancelling it closes the connection."""
    from twisted.internet.defer import Deferred
    from twisted.internet.protocol import Protocol
    from twisted.web.client import ResponseDone

    class Reader(Protocol):
        def __init__(self) -> None:
            self.chunks: list[bytes] = []
            self.size = 0

        def connectionMade(self) -> None:
            if finished.called:  # refused by its Content-Length: stop reading
                self.transport.stopProducing()  # type: ignore[union-attr]

        def dataReceived(self, data: bytes) -> None:
            self.size += len(data)
            if self.size > MAX_RESPONSE_BYTES:
                self.transport.stopProducing()  # type: ignore[union-attr]
                if not finished.called:
                    finished.errback(RoutingAPIError(f"the answer is over {MAX_RESPONSE_BYTES} bytes"))
                return
            self.chunks.append(data)

        def connectionLost(self, reason: Any = None) -> None:
            if finished.called:
                return
            if reason is not None and reason.check(ResponseDone):
                finished.callback(b"".join(self.chunks))
            else:
                finished.errback(reason)

    reader = Reader()

    def cancel(_: Any) -> None:
        if reader.transport is not None:
            reader.transport.stopProducing()

    finished: Deferred[bytes] = Deferred(cancel)
    if isinstance(response.length, int) and response.length > MAX_RESPONSE_BYTES:
        finished.errback(RoutingAPIError(f"the answer is over {MAX_RESPONSE_BYTES} bytes"))
    response.deliverBody(reader)
    return finished
