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

import time
from typing import Any

from .api import InvalidAnswer, RoutingAPIError
from .cache import _Cache
from .cache import ALL_USERS
from .callbacks import Callbacks
from .config import AdapterConfig, parse_config
from .feed import ChangeFeed
from .metrics import CACHE_ENTRIES, LAG

__all__ = ["ALL_USERS", "AdapterConfig", "InvalidAnswer", "PresenceRouterAdapter", "RoutingAPIError", "parse_config"]


class PresenceRouterAdapter(Callbacks, ChangeFeed):
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
        self._check_untracked()
        self._push_warned: set[str] = set()
        self._confirmed = time.monotonic()
        self._agent: Any = None  # made on the first request
        self._show_url()
        LAG.set_function(lambda: time.monotonic() - self._confirmed)
        CACHE_ENTRIES.labels("get_users_for_states").set_function(lambda: len(self._cache.routes_of))
        CACHE_ENTRIES.labels("get_interested_users").set_function(lambda: len(self._cache.interested))
        if not legacy:
            self._api.register_presence_router_callbacks(
                get_users_for_states=self.get_users_for_states,
                get_interested_users=self.get_interested_users,
            )
        self._start_polling()
