"""The change feed: a long poll of presence-router's changes that drops or
patches the cached answers a change affects, and pushes current presence to
users who gained it."""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import urlencode

from .api import InvalidAnswer, _Feed, _feed_answer
from .cache import ALL_USERS, _Cache
from .client import RoutingClient
from .metrics import PUSH_FAILURES, VERSION

logger = logging.getLogger("presence_router_adapter")

MAX_POLL_BACKOFF = 2.0
# How many users whose pushes failed are remembered, so that each is warned
# about once.
MAX_WARNED_USERS = 10_000


def _tracks_presence(api: Any) -> bool:
    """Whether Synapse tracks its users' presence (presence.enabled is not
    "untracked"). The module API has no accessor for it, so this reads its
    homeserver's config, and says True when that is not there."""
    server = getattr(getattr(getattr(api, "_hs", None), "config", None), "server", None)
    return bool(getattr(server, "track_presence", True))


async def _presence_state(api: Any, user: str) -> tuple[str, str | None] | None:
    """user's presence and status message as the presence writer holds
    them, or None when they cannot be read (the module API has no accessor,
    so this asks its homeserver's presence handler)."""
    try:
        from synapse.types import UserID

        state = await api._hs.get_presence_handler().get_state(UserID.from_string(user))
        return str(state.state), state.status_msg
    except Exception:
        return None


class ChangeFeed(RoutingClient):
    """The change feed, as a part of PresenceRouterAdapter: it replaces and
    patches the cache the callbacks read."""

    _api: Any
    _since: int | None
    _confirmed: float
    _push_writer: bool | None
    _push_warned: set[str]

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
        if feed.all_interested:
            # Group members' answers changed; ALL answers stay ALL.
            cache.interested = {u: a for u, a in cache.interested.items() if a == ALL_USERS}
        # Group routes are held for one version.
        cache.group_routes = {}
        cache.version = feed.version
        VERSION.set(feed.version)

    def _check_untracked(self) -> None:
        """With Synapse's presence untracked, push: auto does not push.
        send_local_online_presence_to marks its users for a full presence
        snapshot on their next /sync and relies on bumping the presence
        stream to send it once; untracked, the bump does nothing, so every
        /sync of theirs repeats the snapshot until some presence update
        moves the stream (Synapse's send_full_presence_to_users)."""
        if _tracks_presence(self._api):
            return
        if self._config.push == "auto":
            self._push_writer = False
            logger.warning(
                "Synapse's presence is untracked (presence.enabled: untracked): the adapter does not push "
                "current presence to users who gain it (push: auto), because Synapse would repeat the full "
                "presence snapshot in each of their /sync responses until the presence stream moves. "
                "Routing is unchanged."
            )
        elif self._config.push == "on":
            logger.warning(
                "Synapse's presence is untracked (presence.enabled: untracked) and push is true: after each "
                "push, Synapse repeats the full presence snapshot in each /sync of its recipients until the "
                "presence stream moves. Set push to auto or false to avoid it."
            )

    async def _push(self, users: list[str]) -> None:
        """Send current presence to users who gained it: with push auto, only
        where Synapse allows it (the process that writes the presence
        stream), which the first try finds out."""
        if self._push_writer is False:
            return
        try:
            await self._send(users)
            self._push_writer = True
            logger.info("Sent current presence to %d users who gained it", len(users))
        except Exception as e:
            if self._config.push == "auto" and "presence stream" in str(e):
                self._push_writer = False
                logger.info(
                    "This process does not write the presence stream, so it does not push (push: auto); "
                    "the presence writer does"
                )
            elif len(users) == 1:
                self._push_failed(users[0], e)
            else:
                # One recipient Synapse cannot push to (a user it does not
                # know: its table has a foreign key to its users) fails the
                # whole batch. Split it until every other one got theirs.
                logger.info("Sending current presence to %d users failed (%r); sending in smaller batches", len(users), e)
                delivered = await self._push_split(users)
                logger.info("Sent current presence to %d of %d users who gained it", delivered, len(users))

    async def _push_split(self, users: list[str]) -> int:
        """Push to users in halves, down to single users, and return to how
        many it was delivered; each user it fails for is logged (once) and
        counted."""
        half = len(users) // 2
        delivered = 0
        for part in (users[:half], users[half:]):
            try:
                await self._send(part)
                delivered += len(part)
            except Exception as e:
                if len(part) == 1:
                    self._push_failed(part[0], e)
                else:
                    delivered += await self._push_split(part)
        return delivered

    async def _send(self, users: list[str]) -> None:
        """send_local_online_presence_to, then give back the status message
        that it takes from one of the users. Synapse's
        send_full_presence_to_users copies the state of one local user
        (next(iter(set of local users)), which is found here the same way)
        to the tip of the presence stream under the key "status_message",
        where set_state reads "status_msg": that user's status message is
        cleared. It is set again at once (set_presence_for_users, Synapse
        1.96+) when it was not empty."""
        victim, before = None, None
        is_mine = getattr(self._api, "is_mine", None)
        if is_mine is not None:
            local: set[str] = set()
            for user in users:  # as ModuleApi.send_local_online_presence_to builds it
                if is_mine(user):
                    local.add(user)
            victim = next(iter(local), None)
        if victim is not None:
            before = await _presence_state(self._api, victim)
        await self._api.send_local_online_presence_to(users)
        if victim is not None and before is not None and before[1]:
            restore = getattr(self._api, "set_presence_for_users", None)
            if restore is not None:
                await restore({victim: before})
                logger.info("Gave %s back the status message that Synapse's push cleared", victim)

    def _push_failed(self, user: str, error: Exception) -> None:
        """Count a push that failed for user, and warn about it once per
        user (at most MAX_WARNED_USERS are remembered)."""
        PUSH_FAILURES.inc()
        if user in self._push_warned:
            return
        if len(self._push_warned) >= MAX_WARNED_USERS:
            self._push_warned.clear()
        self._push_warned.add(user)
        logger.warning(
            "Failed to send current presence to %s (is it a user registered on this homeserver? a typo on the "
            "always-send list fails like this); the others got theirs: %r", user, error,
        )
