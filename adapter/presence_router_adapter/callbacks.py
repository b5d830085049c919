"""Synapse's two presence-router callbacks, answered from the cache; a miss
asks the routing API (unless the breaker is open)."""

from __future__ import annotations

from typing import Any, Callable, Iterable
from urllib.parse import urlencode

from .api import _ALL_RECIPIENTS, _KNOWN_GROUP, _interested_answer, _routes_answer, _states_body
from .cache import _NOWHERE, ALL_USERS, _Cache, _Route
from .client import RoutingClient
from .metrics import SKIPPED, STATS

# The most distinct users one users_for_states request asks about; a bigger
# batch is split (the routing API refuses bodies over 16 MiB).
MAX_STATES_PER_REQUEST = 10_000


class Callbacks(RoutingClient):
    """The callbacks, as a part of PresenceRouterAdapter: they read the
    cache that the change feed replaces, and ask through the client."""

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
            answer = ALL_USERS if everyone else set(users)
            cache = self._cache
            if version == cache.version:
                if len(cache.interested) >= self._config.cache_size:
                    cache.interested.clear()
                cache.interested[user_id] = answer
            if everyone:
                cache.told_all(user_id)
        else:
            STATS.giu_hits += 1
        return answer

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
                    # Set in C, not user by user: a group's route may hold
                    # 10,000 members.
                    result.update(dict.fromkeys(route.users, set(states)))
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
                    if keys_route is not None and len(answers) == len(missing) and all(
                        r is keys_route or r is _NOWHERE for r in answers
                    ):
                        # The usual answer (one state per user): every missed
                        # user goes to the recipients or nowhere; one
                        # comprehension groups them.
                        missed_routed = [s for s, r in zip(missing, answers) if r is keys_route]
                        if missed_routed:
                            groups.setdefault(keys_route, []).extend(missed_routed)
                    elif len(answers) == len(missing) and answers.count(answers[0]) == len(answers):
                        # One route for every missed state (one state per
                        # user): a group's members.
                        if answers[0] is not _NOWHERE:
                            groups.setdefault(answers[0], []).extend(missing)
                    else:
                        # Several routes (rare: remote recipients): the
                        # missed states are grouped as the cached ones.
                        more, _ = self._group(dict(zip(unique, answers)).get, missing)
                        for route, group in more.items():
                            groups.setdefault(route, []).extend(group)
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
            result.update(dict.fromkeys(route.users, shared))
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
            held = dict(cache.group_routes) if known is not None else {}
            path = "users_for_states" if known is None else f"users_for_states?known_version={known}"
            if held:
                path += "&" + urlencode({"known_groups": ",".join(held)}, safe=",/")
            body = await self._request("POST", path, _states_body(chunk))
            version, routes = _routes_answer(body, len(chunk), known, frozenset(held))
            cache = self._cache
            # Answers of another version serve this call only.
            target = cache if version == cache.version else _Cache(version)
            nowhere = _NOWHERE
            assigned: list[_Route] = [nowhere] * len(chunk)
            route_objs = []
            for members, _, key in routes:
                if members is _ALL_RECIPIENTS and known_keys is not None:
                    route = known_keys
                elif members is _KNOWN_GROUP and key is not None:
                    route = held[key]
                else:
                    route = target.route(frozenset(members))
                    if key is not None and target is cache:
                        cache.group_routes[key] = route
                route_objs.append(route)
            # A state in several routes (a group's member) goes to their
            # union, made once per pair of routes, not once per state.
            unions: dict[tuple[int, int], _Route] = {}
            untouched = True  # no state assigned yet
            for route, (_, indices, _) in zip(route_objs, routes):
                if untouched and len(indices) == len(chunk) and len(set(indices)) == len(chunk):
                    # The first route to take every state (a group's members,
                    # the recipients): one assignment.
                    assigned = [route] * len(chunk)
                    untouched = False
                    continue
                untouched = False
                for i in indices:
                    prev = assigned[i]
                    if prev is nowhere:
                        assigned[i] = route
                    else:
                        pair = (id(prev), id(route))
                        union = unions.get(pair)
                        if union is None:
                            union = unions[pair] = target.route(prev.users | route.users)
                        assigned[i] = union
            # Every user who must be a key (told ALL) is in a route that is
            # not a group's (the answer lists them all); with one such
            # route, that route is the keys.
            key_routes = [r for r, (_, _, key) in zip(route_objs, routes) if key is None]
            if len(key_routes) == 1:
                chunk_keys = key_routes[0]
            else:
                chunk_keys = target.route(frozenset().union(*(r.users for r in key_routes)))
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
