"""The versioned cache of answers: routes shared between the users routed
alike, patched in place when the change feed adds or removes destinations."""

from __future__ import annotations

from typing import Union


class _Route:
    """The destination users of every source user routed to it. Shared, so
    that a cache miss costs one set per distinct route, not one per user;
    patched in place when the change feed adds or removes destinations."""

    __slots__ = ("users",)

    def __init__(self, users: frozenset[str]) -> None:
        self.users = users


# The answer for a user whose presence goes nowhere extra; never patched.
_NOWHERE = _Route(frozenset())

ALL_USERS = "ALL"  # synapse.events.presence_router.PresenceRouter.ALL_USERS
# ALL_USERS or the users. The set is handed to Synapse as it is, answer
# after answer (Synapse copies what a callback returns before using it),
# so that a member of a 10,000-member group costs no copy per /sync.
Interest = Union[str, set[str]]


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
        # Group routes by key, as answered at this version: named in
        # known_groups, so that a 10,000-member group is not sent again.
        self.group_routes: dict[str, _Route] = {}

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
