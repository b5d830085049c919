"""The change feed: a long poll of presence-router's changes that drops or
patches the cached answers a change affects, and pushes current presence to
users who gained it."""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import urlencode

from .api import InvalidAnswer, _Feed, _feed_answer
from .cache import _Cache
from .client import RoutingClient
from .metrics import VERSION

logger = logging.getLogger("presence_router_adapter")

MAX_POLL_BACKOFF = 2.0


class ChangeFeed(RoutingClient):
    """The change feed, as a part of PresenceRouterAdapter: it replaces and
    patches the cache the callbacks read."""

    _api: Any
    _since: int | None
    _confirmed: float
    _push_writer: bool | None

    def _start_polling(self) -> None:
        try:
            from twisted.internet import reactor
        except ImportError:  # pragma: no cover
            return
        reactor.callWhenRunning(
            self._api.run_as_background_process, "presence_router_adapter_changes", self._poll_forever
        )

    async def _poll_forever(self) -> None:
        backoff = 0.5
        while True:
            try:
                await self.poll_once()
                backoff = 0.5
            except Exception as e:
                self._failed("changes", e)
                await self._api.sleep(backoff)
                # Capped low so that a restarted presence-router is seen
                # within seconds; warnings stay rate-limited.
                backoff = min(backoff * 2, MAX_POLL_BACKOFF)

    async def poll_once(self) -> None:
        """One long poll of the change feed: apply what changed, then push."""
        since = self._since
        query = {"timeout": self._config.poll_timeout_ms}
        if since is not None:
            query["since"] = since
        body = await self._request("GET", "changes?" + urlencode(query), timeout=self._config.poll_timeout_ms / 1000 + 10)
        feed = _feed_answer(body)
        if since is not None and feed.version < since and not feed.reset:
            # presence-router went back (its database was replaced?): start over.
            self._since = None
            self._replace_cache(feed.version)
            raise InvalidAnswer(f"version {feed.version} is below {since} without reset")
        if since is None:
            logger.info("Connected to presence-router at %s, rules version %d", self._url, feed.version)
        if since is None or feed.reset:
            self._replace_cache(feed.version)
        elif feed.version > since:
            logger.info("Rules changed to version %d", feed.version)
            self._apply(feed)
        self._since = feed.version
        self._confirmed = time.monotonic()
        if self._open:
            self._open = False
            logger.info("presence-router at %s answers again", self._url)
        if feed.push_to and since is not None and not feed.reset:
            await self._push(feed.push_to)

    def _replace_cache(self, version: int) -> None:
        self._cache = _Cache(version)
        VERSION.set(version)

    def _apply(self, feed: _Feed) -> None:
        """Drop or patch the cached answers a change affects."""
        cache = self._cache
        if feed.all_sources:
            cache.routes_of.clear()
        else:
            for user in feed.sources:
                cache.routes_of.pop(user, None)
        if feed.added or feed.removed:
            cache.patch_destinations(feed.added, feed.removed)
        cache.version = feed.version
        VERSION.set(feed.version)

    async def _push(self, users: list[str]) -> None:
        """Send current presence to users who gained it: with push auto, only
        where Synapse allows it (the process that writes the presence
        stream), which the first try finds out."""
        if self._push_writer is False:
            return
        try:
            await self._api.send_local_online_presence_to(users)
            self._push_writer = True
            logger.info("Sent current presence to %d users who gained it", len(users))
        except Exception as e:
            if self._config.push == "auto" and "presence stream" in str(e):
                self._push_writer = False
                logger.info(
                    "This process does not write the presence stream, so it does not push (push: auto); "
                    "the presence writer does"
                )
            else:
                logger.warning("Failed to send current presence to %d users: %r", len(users), e, exc_info=True)
