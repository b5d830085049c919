"""Synapse presence router module backed by presence-router.

presence-router (Go) owns the routing rules and answers the routing API; this
module answers Synapse's two presence-router callbacks from a cache keyed by
the rules' version, long-polls the change feed to drop stale answers, and
pushes current presence to users who just gained it.

Load it either way (each registers the callbacks exactly once):

    modules:
      - module: presence_router_adapter.PresenceRouterAdapter
        config: {url: "http://127.0.0.1:29330", token_file: /etc/presence-router/token, push: true}

    presence:
      presence_router:
        module: presence_router_adapter.PresenceRouterAdapter
        config: {...same keys...}
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Iterable
from urllib.parse import urlencode

from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import CounterMetricFamily

logger = logging.getLogger(__name__)

ALL_USERS = "ALL"  # synapse.events.presence_router.PresenceRouter.ALL_USERS
WARN_INTERVAL = 30.0
MAX_POLL_BACKOFF = 2.0

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
VERSION = Gauge("presence_router_adapter_version", "Rules version the cache holds")
LAG = Gauge(
    "presence_router_adapter_version_lag_seconds",
    "Seconds since the change feed last confirmed the cached version (grows while presence-router is unreachable)",
)


def _config_error(msg: str) -> Exception:
    try:
        from synapse.config import ConfigError

        return ConfigError(msg)
    except ImportError:  # pragma: no cover - only without Synapse
        return ValueError(msg)


@dataclass(frozen=True)
class AdapterConfig:
    url: str
    token: str
    timeout: float = 5.0
    push: bool = False
    poll_timeout_ms: int = 30000


_CONFIG_KEYS = frozenset({"url", "token", "token_file", "timeout", "push", "poll_timeout"})


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
    push = config.get("push", False)
    if not isinstance(push, bool):
        raise _config_error("presence_router_adapter: 'push' must be true or false")
    poll = config.get("poll_timeout", 30000)
    if not isinstance(poll, int) or isinstance(poll, bool) or not 0 <= poll <= 60000:
        raise _config_error("presence_router_adapter: 'poll_timeout' must be milliseconds from 0 to 60000")
    return AdapterConfig(url.rstrip("/"), token, float(timeout), push, poll)


class RoutingAPIError(Exception):
    """The routing API could not be reached or answered an error."""


class _Cache:
    """Answers for one rules version."""

    def __init__(self, version: int) -> None:
        self.version = version
        self.interested: dict[str, Any] = {}  # user -> ALL_USERS or frozenset
        self.dests: dict[str, frozenset[str]] = {}  # source user -> destinations
        self.keys: frozenset[str] | None = None  # users in every answer
        self.all_users: set[str] = set()  # users answered ALL
        self.interned: dict[frozenset[str], frozenset[str]] = {}


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
        self._fallback_keys: frozenset[str] = frozenset()
        self._last_warning = 0.0
        self._failing = False
        self._confirmed = time.monotonic()
        LAG.set_function(lambda: time.monotonic() - self._confirmed)
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
            try:
                body = await self._request("GET", "interested_users?" + urlencode({"user_id": user_id}))
                answer = ALL_USERS if body.get("all") else frozenset(body.get("users") or ())

                def fill(c: _Cache) -> None:
                    c.interested[user_id] = answer
                    if answer == ALL_USERS:
                        c.all_users.add(user_id)

                self._store(int(body["version"]), fill)
            except Exception as e:  # never raise into Synapse
                self._warn("interested_users", e)
                return set()
        else:
            STATS.giu_hits += 1
        if answer == ALL_USERS:
            return ALL_USERS
        return set(answer)

    async def get_users_for_states(self, state_updates: Iterable[Any]) -> dict[str, set[Any]]:
        STATS.ufs_calls += 1
        states = state_updates if isinstance(state_updates, list) else list(state_updates)
        cache = self._cache
        if len(states) == 1 and cache.keys is not None:
            # One state, the most common call (Synapse routes a user's own
            # change as it happens): no grouping needed.
            dests = cache.dests.get(states[0].user_id)
            if dests is not None:
                STATS.ufs_hits += 1
                if dests is cache.keys:
                    return dict.fromkeys(dests, set(states))
                result: dict[str, set[Any]] = dict.fromkeys(cache.keys, set())
                if dests:
                    routed = set(states)
                    for user in dests:
                        result[user] = routed
                return result
        # The warm path, inlined (a call to _group costs ~10% of a one-state
        # call; bench/adapter_bench.py): group states by their (interned)
        # destination set, noting users that are not cached. Keep it in step
        # with _group, which the miss path uses.
        dests_of = cache.dests.get
        groups: dict[frozenset[str], list[Any]] = {}
        missing: list[Any] = []
        for s in states:
            dests = dests_of(s.user_id)
            if dests is None:
                missing.append(s)
            elif dests:
                group = groups.get(dests)
                if group is None:
                    groups[dests] = [s]
                else:
                    group.append(s)
        keys = cache.keys
        if missing or keys is None:
            STATS.ufs_misses += 1
            try:
                cache = await self._fetch_routes(list({s.user_id: s for s in missing}.values()))
                groups, _ = self._group(cache, states)
                keys = cache.keys
            except Exception as e:
                self._warn("users_for_states", e)
            if keys is None:
                # presence-router is unreachable: users who were told ALL must
                # still be keys, or Synapse fails their /sync with a KeyError.
                keys = self._fallback_keys | cache.all_users
        else:
            STATS.ufs_hits += 1
        # Synapse copies every answer into its own sets, so one set object
        # may serve several keys.
        if len(groups) == 1:
            ((dests, group),) = groups.items()
            shared = set(group)
            if dests == keys:
                return dict.fromkeys(keys, shared)
            result = dict.fromkeys(keys, set())
            for user in dests:
                result[user] = shared
            return result
        nothing: set[Any] = set()
        result = dict.fromkeys(keys, nothing)
        for dests, group in groups.items():
            routed = set(group)
            for user in dests:
                have = result.get(user)
                result[user] = routed if not have else have | routed
        return result

    @staticmethod
    def _group(cache: _Cache, states: list[Any]) -> tuple[dict[frozenset[str], list[Any]], list[Any]]:
        """Group states by their (interned) destination set; list the states
        whose user is not cached."""
        dests_of = cache.dests.get
        groups: dict[frozenset[str], list[Any]] = {}
        missing: list[Any] = []
        for s in states:
            dests = dests_of(s.user_id)
            if dests is None:
                missing.append(s)
            elif dests:
                group = groups.get(dests)
                if group is None:
                    groups[dests] = [s]
                else:
                    group.append(s)
        return groups, missing

    # -- cache -------------------------------------------------------------

    def _store(self, version: int, fill: Any) -> _Cache:
        """Store an answer at version: a newer version replaces the cache, an
        older one is not stored. Returns the cache the answer belongs to."""
        cache = self._cache
        if version > cache.version:
            self._invalidate(version)
            cache = self._cache
        elif version < cache.version:
            cache = _Cache(version)  # answer this call only
        fill(cache)
        return cache

    def _invalidate(self, version: int) -> None:
        if self._cache.keys is not None:
            self._fallback_keys = self._cache.keys | self._cache.all_users
        self._cache = _Cache(version)
        VERSION.set(version)

    async def _fetch_routes(self, missing: list[Any]) -> _Cache:
        payload = {"states": [{"user_id": s.user_id, "state": getattr(s, "state", None)} for s in missing]}
        body = await self._request("POST", "users_for_states", payload)
        found: dict[str, set[str]] = {s.user_id: set() for s in missing}
        keys: set[str] = set()
        for route in body["routes"]:
            users = route["users"]
            keys.update(users)
            for i in route["states"]:
                found[missing[i].user_id].update(users)

        def fill(cache: _Cache) -> None:
            for user, d in found.items():
                fs = frozenset(d)
                cache.dests[user] = cache.interned.setdefault(fs, fs)
            fk = frozenset(keys)
            cache.keys = cache.interned.setdefault(fk, fk)  # `dests is keys` in the one-state path

        return self._store(int(body["version"]), fill)

    # -- HTTP --------------------------------------------------------------

    async def _request(self, method: str, path: str, payload: Any = None, timeout: float | None = None) -> Any:
        import treq  # imported late so unit tests can run without a reactor

        headers: dict[bytes | str, list[bytes | str]] = {
            "Authorization": [f"Bearer {self._config.token}"],
            "Content-Type": ["application/json"],
        }
        data = json.dumps(payload).encode() if payload is not None else None
        try:
            resp = await treq.request(
                method,
                f"{self._config.url}/_presence_router/v1/{path}",
                headers=headers,
                data=data,
                timeout=timeout or self._config.timeout,
            )
            content = await treq.content(resp)
        except Exception as e:
            ERRORS.labels(path.split("?")[0]).inc()
            raise RoutingAPIError(f"{type(e).__name__}: {e}") from e
        if resp.code != 200:
            ERRORS.labels(path.split("?")[0]).inc()
            raise RoutingAPIError(f"HTTP {resp.code}: {content[:200]!r}")
        if self._failing:
            self._failing = False
            logger.info("presence-router at %s answers again", self._config.url)
        return json.loads(content)

    def _warn(self, what: str, error: Exception) -> None:
        self._failing = True
        now = time.monotonic()
        if now - self._last_warning >= WARN_INTERVAL:
            self._last_warning = now
            logger.warning(
                "presence-router at %s is unreachable (%s: %s); answering from the cache (version %d) until it is back",
                self._config.url, what, error, self._cache.version,
            )

    # -- change feed ---------------------------------------------------------

    def _start_polling(self) -> None:
        try:
            from twisted.internet import reactor
        except ImportError:  # pragma: no cover
            return
        self._since: int | None = None
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
                self._warn("changes", e)
                await self._api.sleep(backoff)
                # Capped low so that a restarted presence-router is seen
                # within seconds; warnings stay rate-limited.
                backoff = min(backoff * 2, MAX_POLL_BACKOFF)

    async def poll_once(self) -> None:
        """One long poll of the change feed: invalidate, then push."""
        since = getattr(self, "_since", None)
        query = {"timeout": self._config.poll_timeout_ms}
        if since is not None:
            query["since"] = since
        body = await self._request(
            "GET", "changes?" + urlencode(query), timeout=self._config.poll_timeout_ms / 1000 + 10
        )
        version = int(body["version"])
        if since is None:
            logger.info("Connected to presence-router at %s, rules version %d", self._config.url, version)
        if body.get("reset") or version != self._cache.version:
            if body.get("reset") or version > self._cache.version:
                if since is not None:
                    logger.info("Rules changed to version %d", version)
                self._invalidate(version)
        self._since = version
        self._confirmed = time.monotonic()
        push_to = body.get("push_to") or []
        if push_to and self._config.push and since is not None and not body.get("reset"):
            logger.info("Sending current presence to %d users who gained it", len(push_to))
            await self._api.send_local_online_presence_to(push_to)
