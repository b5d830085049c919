"""Synapse presence router module backed by presence-router.

presence-router (Go) owns the routing rules and answers the routing API; this
module answers Synapse's two presence-router callbacks from a cache, follows
presence-router's change feed to drop (or patch) only the answers a change
affects, and pushes current presence to users who just gained it.

Load it either way (each registers the callbacks exactly once):

    modules:
      - module: presence_router_adapter.PresenceRouterAdapter
        config: {url: "http://127.0.0.1:29330", token_file: /etc/presence-router/token}  # push: auto

    presence:
      presence_router:
        module: presence_router_adapter.PresenceRouterAdapter
        config: {...same keys...}

It lives on Synapse's reactor: every Deferred it awaits is made yieldable the
way Synapse requires (so no logging context is lost), its change-feed loop is
a Synapse background process, every request has a whole-request deadline and
a size cap, and after a failed request it answers "no extra routing" at once,
without the network, until the change feed reaches presence-router again.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _encode_string
from typing import Any, Callable, Iterable, Literal, Union
from urllib.parse import urlencode

from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import CounterMetricFamily

logger = logging.getLogger(__name__)

ALL_USERS = "ALL"  # synapse.events.presence_router.PresenceRouter.ALL_USERS
WARN_INTERVAL = 30.0
MAX_POLL_BACKOFF = 2.0
# The most distinct users one users_for_states request asks about; a bigger
# batch is split (the routing API refuses bodies over 16 MiB).
MAX_STATES_PER_REQUEST = 10_000
# The largest answer read; a longer one fails the request (the routing API's
# answers to MAX_STATES_PER_REQUEST states are well below 1 MiB).
MAX_RESPONSE_BYTES = 16 << 20


class _Stats:
    """Hot-path counts as plain integers (a prometheus Counter's lock would
    cost more than the cache lookup); exported by _StatsCollector."""

    giu_calls = giu_hits = giu_misses = 0
    ufs_calls = ufs_hits = ufs_misses = 0


STATS = _Stats()


class _StatsCollector:
    def collect(self) -> Iterable[Any]:
        calls = CounterMetricFamily(
            "presence_router_adapter_callback_calls", "Presence router callback calls", labels=["callback"]
        )
        calls.add_metric(["get_interested_users"], STATS.giu_calls)
        calls.add_metric(["get_users_for_states"], STATS.ufs_calls)
        cache = CounterMetricFamily(
            "presence_router_adapter_cache", "Cache lookups by callback and result", labels=["callback", "result"]
        )
        cache.add_metric(["get_interested_users", "hit"], STATS.giu_hits)
        cache.add_metric(["get_interested_users", "miss"], STATS.giu_misses)
        cache.add_metric(["get_users_for_states", "hit"], STATS.ufs_hits)
        cache.add_metric(["get_users_for_states", "miss"], STATS.ufs_misses)
        return [calls, cache]


REGISTRY.register(_StatsCollector())
ERRORS = Counter("presence_router_adapter_request_errors_total", "Failed routing API requests", ["endpoint"])
INVALID = Counter(
    "presence_router_adapter_invalid_answers_total",
    "Routing API answers of the wrong shape (each also counts as a failed request)",
    ["endpoint"],
)
SKIPPED = Counter(
    "presence_router_adapter_skipped_requests_total",
    "Cache misses answered without asking, because presence-router was unreachable",
    ["callback"],
)
VERSION = Gauge("presence_router_adapter_version", "Rules version the cache holds")
LAG = Gauge(
    "presence_router_adapter_version_lag_seconds",
    "Seconds since the change feed last confirmed the cached version (grows while presence-router is unreachable)",
)
CACHE_ENTRIES = Gauge("presence_router_adapter_cache_entries", "Cached answers", ["callback"])


def _config_error(msg: str) -> Exception:
    try:
        from synapse.config import ConfigError

        return ConfigError(msg)
    except ImportError:  # pragma: no cover - only without Synapse
        return ValueError(msg)


PushMode = Literal["auto", "on", "off"]


@dataclass(frozen=True)
class AdapterConfig:
    url: str
    token: str
    timeout: float = 5.0
    push: PushMode = "auto"
    poll_timeout_ms: int = 30000
    cache_size: int = 1_000_000


_CONFIG_KEYS = frozenset({"url", "token", "token_file", "timeout", "push", "poll_timeout", "cache_size"})


def parse_config(config: dict[str, Any]) -> AdapterConfig:
    """Validate the module's config block; errors name the key."""
    if not isinstance(config, dict):
        raise _config_error("presence_router_adapter: config must be a mapping")
    unknown = sorted(set(config) - _CONFIG_KEYS)
    if unknown:
        raise _config_error(
            f"presence_router_adapter: unknown config key(s) {', '.join(map(repr, unknown))}; "
            f"known keys: {', '.join(sorted(_CONFIG_KEYS))}"
        )
    url = config.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise _config_error("presence_router_adapter: 'url' must be the http(s) URL of presence-router")
    token, token_file = config.get("token"), config.get("token_file")
    if (token is None) == (token_file is None):
        raise _config_error("presence_router_adapter: set exactly one of 'token' or 'token_file'")
    if token_file is not None:
        try:
            with open(token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as e:
            raise _config_error(f"presence_router_adapter: 'token_file' cannot be read: {e}") from e
    if not isinstance(token, str) or not token:
        raise _config_error("presence_router_adapter: the token is empty")
    timeout = config.get("timeout", 5)
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
        raise _config_error("presence_router_adapter: 'timeout' must be a positive number of seconds")
    push_value = config.get("push", "auto")
    push: PushMode
    if push_value is True:
        push = "on"
    elif push_value is False:
        push = "off"
    elif push_value == "auto":
        push = "auto"
    else:
        raise _config_error("presence_router_adapter: 'push' must be auto, true or false")
    poll = config.get("poll_timeout", 30000)
    if not isinstance(poll, int) or isinstance(poll, bool) or not 0 <= poll <= 60000:
        raise _config_error("presence_router_adapter: 'poll_timeout' must be milliseconds from 0 to 60000")
    cache_size = config.get("cache_size", 1_000_000)
    if not isinstance(cache_size, int) or isinstance(cache_size, bool) or cache_size < 1000:
        raise _config_error("presence_router_adapter: 'cache_size' must be a whole number of users, at least 1000")
    return AdapterConfig(url.rstrip("/"), token, float(timeout), push, poll, cache_size)


class RoutingAPIError(Exception):
    """The routing API could not be reached or answered an error."""


class InvalidAnswer(RoutingAPIError):
    """The routing API answered JSON of the wrong shape."""


# -- answers ---------------------------------------------------------------


def _version(body: Any) -> int:
    if not isinstance(body, dict):
        raise InvalidAnswer("the answer is not a JSON object")
    version = body.get("version")
    if type(version) is not int or version < 0:
        raise InvalidAnswer(f"version {version!r} is not a non-negative integer")
    return version


def _users(value: Any, what: str) -> list[str]:
    # The types of a list's items, counted in C: an answer may carry
    # thousands of users.
    if not isinstance(value, list) or not set(map(type, value)) <= _STR:
        raise InvalidAnswer(f"{what} is not a list of user IDs")
    return value


_STR: frozenset[type] = frozenset({str})
_INT: frozenset[type] = frozenset({int})


def _flag(body: dict[str, Any], key: str) -> bool:
    value = body.get(key, False)
    if type(value) is not bool:
        raise InvalidAnswer(f"{key} {value!r} is not a boolean")
    return value


@dataclass(frozen=True)
class _Feed:
    """An answer of the change feed, checked."""

    version: int
    reset: bool
    push_to: list[str]
    sources: list[str]
    all_sources: bool
    added: list[str]
    removed: list[str]


def _feed_answer(body: Any) -> _Feed:
    version = _version(body)
    return _Feed(
        version,
        _flag(body, "reset"),
        _users(body.get("push_to", []), "push_to"),
        _users(body.get("sources", []), "sources"),
        _flag(body, "all_sources"),
        _users(body.get("destinations_added", []), "destinations_added"),
        _users(body.get("destinations_removed", []), "destinations_removed"),
    )


def _interested_answer(body: Any) -> tuple[int, bool, list[str]]:
    version = _version(body)
    everyone = _flag(body, "all")
    return version, everyone, [] if everyone else _users(body.get("users", []), "users")


# A route's users when the answer says all_recipients: the users every
# answer lists, which the client holds for the version it named.
_ALL_RECIPIENTS: list[str] = []


def _routes_answer(body: Any, n: int, known: int | None) -> tuple[int, list[tuple[list[str], list[int]]]]:
    """Check a users_for_states answer to n states. A route with
    all_recipients (allowed only at the version the request said it knows)
    has _ALL_RECIPIENTS as its users."""
    version = _version(body)
    routes = body.get("routes")
    if not isinstance(routes, list):
        raise InvalidAnswer("routes is not a list")
    out = []
    for route in routes:
        if not isinstance(route, dict):
            raise InvalidAnswer("a route is not an object")
        if route.get("all_recipients") is True:
            if version != known:
                raise InvalidAnswer(f"all_recipients at version {version}, but the request knew version {known}")
            users = _ALL_RECIPIENTS
        else:
            users = _users(route.get("users"), "a route's users")
        states = route.get("states")
        if not isinstance(states, list) or not set(map(type, states)) <= _INT or (states and not 0 <= min(states) <= max(states) < n):
            raise InvalidAnswer(f"a route's states are not indices of the {n} states asked about")
        out.append((users, states))
    return version, out


# -- cache -----------------------------------------------------------------


class _Route:
    """The destination users of every source user routed to it. Shared, so
    that a cache miss costs one set per distinct route, not one per user;
    patched in place when the change feed adds or removes destinations."""

    __slots__ = ("users",)

    def __init__(self, users: frozenset[str]) -> None:
        self.users = users


# The answer for a user whose presence goes nowhere extra; never patched.
_NOWHERE = _Route(frozenset())

Interest = Union[str, frozenset[str]]  # ALL_USERS or the users


class _Cache:
    """Answers for one rules version."""

    def __init__(self, version: int) -> None:
        self.version = version
        self.routes_of: dict[str, _Route] = {}  # source user -> route
        self.interned: dict[frozenset[str], _Route] = {}
        # Users who must be keys of every users_for_states answer (those
        # interested_users answers ALL), as the last answer said; None
        # until one came.
        self.keys: _Route | None = None
        self.interested: dict[str, Interest] = {}
        self.all_users: set[str] = set()  # users answered ALL
        # The users answered ALL who are not in keys (someone removed from
        # always-send, or asked before any answer came): usually none.
        self.extra_keys: frozenset[str] = frozenset()

    def told_all(self, user: str) -> None:
        """user was answered ALL: Synapse will look for them as a key."""
        self.all_users.add(user)
        if self.keys is None or user not in self.keys.users:
            self.extra_keys = self.extra_keys | {user}

    def set_keys(self, keys: _Route) -> None:
        self.keys = keys
        self.extra_keys = frozenset(self.all_users - keys.users) if self.all_users else frozenset()

    def route(self, users: frozenset[str]) -> _Route:
        if not users:
            return _NOWHERE
        route = self.interned.get(users)
        if route is None:
            route = self.interned[users] = _Route(users)
        return route

    def patch_destinations(self, added: list[str], removed: list[str]) -> None:
        """Every routed source user now also goes to added, and no longer to
        removed (the change feed's destinations_added/_removed)."""
        if added and (self.keys is None or not self.keys.users):
            # All cached answers are empty: routed users cannot be told from
            # the others, so ask again.
            self.routes_of.clear()
            self.keys = None
        routes = {id(r): r for r in self.interned.values()}
        if self.keys is not None:
            routes[id(self.keys)] = self.keys
        plus, minus = frozenset(added), frozenset(removed)
        for route in routes.values():
            if route.users:
                route.users = (route.users | plus) - minus
        self.interned = {r.users: r for r in routes.values() if r.users}
        for user in added:
            self.interested.pop(user, None)
        for user in removed:
            self.interested.pop(user, None)
        if self.keys is not None:
            self.set_keys(self.keys)


class PresenceRouterAdapter:
    """Synapse presence router that consults presence-router's routing API."""

    parse_config = staticmethod(parse_config)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # modules: builds Class(config, module_api); the legacy
        # presence.presence_router block builds Class(config=..., module_api=...)
        # and registers the callbacks itself. Registering in both would run
        # every callback twice.
        legacy = "module_api" in kwargs
        params = dict(zip(("config", "module_api"), args))
        params.update(kwargs)
        config = params["config"]
        self._config: AdapterConfig = config if isinstance(config, AdapterConfig) else parse_config(config)
        self._api = params["module_api"]
        self._cache = _Cache(-1)
        self._since: int | None = None
        self._last_warning = 0.0
        # Open after a failed request: misses answer at once without asking,
        # until the change feed reaches presence-router again.
        self._open = False
        self._push_writer: bool | None = None if self._config.push == "auto" else self._config.push == "on"
        self._confirmed = time.monotonic()
        self._agent: Any = None  # made on the first request
        LAG.set_function(lambda: time.monotonic() - self._confirmed)
        CACHE_ENTRIES.labels("get_users_for_states").set_function(lambda: len(self._cache.routes_of))
        CACHE_ENTRIES.labels("get_interested_users").set_function(lambda: len(self._cache.interested))
        if not legacy:
            self._api.register_presence_router_callbacks(
                get_users_for_states=self.get_users_for_states,
                get_interested_users=self.get_interested_users,
            )
        self._start_polling()

    # -- Synapse callbacks -------------------------------------------------

    async def get_interested_users(self, user_id: str) -> set[str] | str:
        STATS.giu_calls += 1
        cache = self._cache
        answer = cache.interested.get(user_id)
        if answer is None:
            STATS.giu_misses += 1
            if self._open:
                SKIPPED.labels("get_interested_users").inc()
                return set()
            try:
                body = await self._request("GET", "interested_users?" + urlencode({"user_id": user_id}))
                version, everyone, users = _interested_answer(body)
            except Exception as e:  # never raise into Synapse
                self._failed("interested_users", e)
                return set()
            answer = ALL_USERS if everyone else frozenset(users)
            cache = self._cache
            if version == cache.version:
                if len(cache.interested) >= self._config.cache_size:
                    cache.interested.clear()
                cache.interested[user_id] = answer
            if everyone:
                cache.told_all(user_id)
        else:
            STATS.giu_hits += 1
        if answer == ALL_USERS:
            return ALL_USERS
        return set(answer)

    async def get_users_for_states(self, state_updates: Iterable[Any]) -> dict[str, set[Any]]:
        STATS.ufs_calls += 1
        states = state_updates if isinstance(state_updates, list) else list(state_updates)
        cache = self._cache
        keys_route = cache.keys
        if len(states) == 1 and keys_route is not None and not cache.extra_keys:
            # One state, the most common call (Synapse routes a user's own
            # change as it happens): no grouping needed. Users told ALL who
            # are not recipients (extra_keys, rare) take the general path,
            # which makes them keys.
            route = cache.routes_of.get(states[0].user_id)
            if route is not None:
                STATS.ufs_hits += 1
                if route is keys_route:
                    return dict.fromkeys(route.users, set(states))
                result: dict[str, set[Any]] = dict.fromkeys(keys_route.users, set())
                if route.users:
                    routed = set(states)
                    for user in route.users:
                        result[user] = routed
                return result
        groups, missing = self._group(cache.routes_of.get, states)
        if missing or keys_route is None:
            STATS.ufs_misses += 1
            if self._open:
                SKIPPED.labels("get_users_for_states").inc()
            else:
                users = [s.user_id for s in missing]
                unique = list(dict.fromkeys(users))
                answers: list[_Route] = []
                try:
                    keys_route = await self._fetch_routes(unique, answers)
                except Exception as e:
                    self._failed("users_for_states", e)
                if answers:
                    # Only the states that missed are grouped again.
                    if len(unique) == len(missing):
                        pairs = zip(missing, answers)
                    else:
                        pairs = zip(missing, map(dict(zip(unique, answers)).__getitem__, users))
                    if keys_route is not None and len(answers) == len(missing) and all(
                        r is keys_route or r is _NOWHERE for r in answers
                    ):
                        # The usual answer: every missed user goes to the
                        # recipients or nowhere; one comprehension groups them.
                        missed_routed = [s for s, r in pairs if r is keys_route]
                        if missed_routed:
                            groups.setdefault(keys_route, []).extend(missed_routed)
                    else:
                        nowhere = _NOWHERE
                        for s, route in pairs:
                            if route is not nowhere:
                                group = groups.get(route)
                                if group is None:
                                    groups[route] = [s]
                                else:
                                    group.append(s)
            if keys_route is None:
                keys_route = self._cache.keys
        else:
            STATS.ufs_hits += 1
        # Users who were told ALL must be keys, or Synapse fails their /sync
        # with a KeyError; more keys with nothing in them are harmless.
        keys = keys_route.users if keys_route is not None else frozenset()
        if self._cache.extra_keys:
            keys = keys | self._cache.extra_keys
        # Synapse copies every answer into its own sets, so one set object
        # may serve several keys.
        if len(groups) == 1:
            ((route, group),) = groups.items()
            shared = set(group)
            if route.users is keys or route.users == keys:
                return dict.fromkeys(keys, shared)
            result = dict.fromkeys(keys, set())
            for user in route.users:
                result[user] = shared
            return result
        nothing: set[Any] = set()
        result = dict.fromkeys(keys, nothing)
        for route, group in groups.items():
            routed = set(group)
            for user in route.users:
                have = result.get(user)
                result[user] = routed if not have else have | routed
        return result

    @staticmethod
    def _group(route_of: Callable[[str], _Route | None], states: list[Any]) -> tuple[dict[_Route, list[Any]], list[Any]]:
        """Group states by their route; list the states whose user has none
        cached."""
        groups: dict[_Route, list[Any]] = {}
        missing: list[Any] = []
        nowhere = _NOWHERE
        for s in states:
            route = route_of(s.user_id)
            if route is None:
                missing.append(s)
            elif route is not nowhere:
                group = groups.get(route)
                if group is None:
                    groups[route] = [s]
                else:
                    group.append(s)
        return groups, missing

    async def _fetch_routes(self, users: list[str], answers: list[_Route]) -> _Route | None:
        """Ask where each user's presence goes, in requests of at most
        MAX_STATES_PER_REQUEST users; append each user's route to answers
        (all of them, or none if a request fails) and store them in the
        cache (those of its version). Returns the route of the users who
        must be keys of every answer."""
        routes_so_far: list[_Route] = []
        keys: _Route | None = None
        for start in range(0, max(len(users), 1), MAX_STATES_PER_REQUEST):
            chunk = users[start : start + MAX_STATES_PER_REQUEST]
            # The recipients of the cached version are not sent again.
            cache = self._cache
            known, known_keys = (cache.version, cache.keys) if cache.keys is not None else (None, None)
            path = "users_for_states" if known is None else f"users_for_states?known_version={known}"
            body = await self._request("POST", path, _states_body(chunk))
            version, routes = _routes_answer(body, len(chunk), known)
            cache = self._cache
            # Answers of another version serve this call only.
            target = cache if version == cache.version else _Cache(version)
            nowhere = _NOWHERE
            assigned: list[_Route] = [nowhere] * len(chunk)
            route_objs = [
                known_keys if users is _ALL_RECIPIENTS and known_keys is not None else target.route(frozenset(users))
                for users, _ in routes
            ]
            for route, (_, indices) in zip(route_objs, routes):
                for i in indices:
                    prev = assigned[i]
                    assigned[i] = route if prev is nowhere else target.route(prev.users | route.users)
            # Every user who must be a key is in some route (the answer lists
            # them all); with one route, that route is the keys.
            if len(route_objs) == 1:
                chunk_keys = route_objs[0]
            else:
                chunk_keys = target.route(frozenset().union(*(r.users for r in route_objs)))
            if chunk_keys is _NOWHERE:
                chunk_keys = _Route(frozenset())  # patchable, unlike _NOWHERE
            keys = chunk_keys
            if target is cache:
                if len(cache.routes_of) + len(chunk) > self._config.cache_size:
                    cache.routes_of.clear()
                cache.set_keys(chunk_keys)
            target.routes_of.update(zip(chunk, assigned))
            routes_so_far += assigned
        answers += routes_so_far
        return keys

    # -- HTTP --------------------------------------------------------------

    async def _request(self, method: str, path: str, payload: Any = None, timeout: float | None = None) -> Any:
        """One routing API request, bounded as a whole (headers and body) by
        timeout and in size by MAX_RESPONSE_BYTES; its Deferred is made
        yieldable so that Synapse's logging context survives the wait."""
        from synapse.logging.context import make_deferred_yieldable

        endpoint = path.split("?")[0]
        try:
            d = self._request_deferred(method, path, payload, timeout or self._config.timeout)
            code, content = await make_deferred_yieldable(d)
        except Exception as e:
            ERRORS.labels(endpoint).inc()
            raise RoutingAPIError(f"{type(e).__name__}: {e}") from e
        if code != 200:
            ERRORS.labels(endpoint).inc()
            raise RoutingAPIError(f"HTTP {code}: {content[:200]!r}")
        try:
            return json.loads(content)
        except ValueError as e:
            ERRORS.labels(endpoint).inc()
            INVALID.labels(endpoint).inc()
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
            method, f"{self._config.url}/_presence_router/v1/{path}", headers=headers, data=data, agent=self._agent
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
                self._config.url, what, error, self._cache.version,
            )

    # -- change feed ---------------------------------------------------------

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
            logger.info("Connected to presence-router at %s, rules version %d", self._config.url, feed.version)
        if since is None or feed.reset:
            self._replace_cache(feed.version)
        elif feed.version > since:
            logger.info("Rules changed to version %d", feed.version)
            self._apply(feed)
        self._since = feed.version
        self._confirmed = time.monotonic()
        if self._open:
            self._open = False
            logger.info("presence-router at %s answers again", self._config.url)
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


def _states_body(users: list[str]) -> bytes:
    """The users_for_states request for users, encoded. User IDs that need
    no escaping (all but odd historical ones) are joined in one go, a tenth
    of what json.dumps of the same objects costs; a /sync of an always-send
    user can bring thousands."""
    joined = "".join(users)
    if joined.isascii() and joined.isprintable() and '"' not in joined and "\\" not in joined:
        return ('{"states":[{"user_id":"' + '"},{"user_id":"'.join(users) + '"}]}').encode() if users else b'{"states":[]}'
    return ('{"states":[' + ",".join(['{"user_id":' + _encode_string(u) + "}" for u in users]) + "]}").encode()


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
