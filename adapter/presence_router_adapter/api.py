"""The routing API's wire format: answers checked for their shape, and the
users_for_states request encoded."""

from __future__ import annotations

from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _encode_string
from typing import Any


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
    all_interested: bool


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
        _flag(body, "all_interested"),
    )


def _interested_answer(body: Any) -> tuple[int, bool, list[str]]:
    version = _version(body)
    everyone = _flag(body, "all")
    return version, everyone, [] if everyone else _users(body.get("users", []), "users")


# A route's users when the answer says all_recipients: the users every
# answer lists, which the client holds for the version it named.
_ALL_RECIPIENTS: list[str] = []


# A group route's users when the answer says known: the users of the route
# with that key, which the client holds for the version it named.
_KNOWN_GROUP: list[str] = []


def _routes_answer(
    body: Any, n: int, known: int | None, known_groups: frozenset[str] = frozenset()
) -> tuple[int, list[tuple[list[str], list[int], str | None]]]:
    """Check a users_for_states answer to n states: each route's users, its
    states and, for a group's route (whose members need not be keys of
    every answer), its key. A route with all_recipients, or a group route
    with known (allowed only at the version the request said it knows, and
    for a key it named), has _ALL_RECIPIENTS or _KNOWN_GROUP as its users."""
    version = _version(body)
    routes = body.get("routes")
    if not isinstance(routes, list):
        raise InvalidAnswer("routes is not a list")
    out = []
    for route in routes:
        if not isinstance(route, dict):
            raise InvalidAnswer("a route is not an object")
        key: str | None = None
        if _flag(route, "group"):
            key = route.get("key")
            if not isinstance(key, str):
                raise InvalidAnswer("a group's route has no key")
        if route.get("all_recipients") is True:
            if version != known:
                raise InvalidAnswer(f"all_recipients at version {version}, but the request knew version {known}")
            users = _ALL_RECIPIENTS
        elif key is not None and route.get("known") is True:
            if version != known or key not in known_groups:
                raise InvalidAnswer(f"group route {key!r} known at version {version}, but the request did not hold it")
            users = _KNOWN_GROUP
        else:
            users = _users(route.get("users"), "a route's users")
        states = route.get("states")
        if not isinstance(states, list) or not set(map(type, states)) <= _INT or (states and not 0 <= min(states) <= max(states) < n):
            raise InvalidAnswer(f"a route's states are not indices of the {n} states asked about")
        out.append((users, states, key))
    return version, out


def _states_body(users: list[str]) -> bytes:
    """The users_for_states request for users, encoded. User IDs that need
    no escaping (all but odd historical ones) are joined in one go, a tenth
    of what json.dumps of the same objects costs; a /sync of an always-send
    user can bring thousands."""
    joined = "".join(users)
    if joined.isascii() and joined.isprintable() and '"' not in joined and "\\" not in joined:
        return ('{"states":[{"user_id":"' + '"},{"user_id":"'.join(users) + '"}]}').encode() if users else b'{"states":[]}'
    return ('{"states":[' + ",".join(['{"user_id":' + _encode_string(u) + "}" for u in users]) + "]}").encode()
