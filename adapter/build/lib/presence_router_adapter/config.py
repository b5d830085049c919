"""The module's config block, validated; errors name the key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


def _config_error(msg: str) -> Exception:
    try:
        from synapse.config import ConfigError

        return ConfigError(msg)
    except ImportError:  # pragma: no cover - only without Synapse
        return ValueError(msg)


PushMode = Literal["auto", "on", "off"]


@dataclass(frozen=True)
class AdapterConfig:
    # presence-router's URLs, in order of preference: with an active and a
    # standby process, each serves the routing API; the adapter uses one
    # and moves to the next when a request to it fails.
    urls: tuple[str, ...]
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
    urls = [url] if isinstance(url, str) else url
    if (
        not isinstance(urls, list)
        or not urls
        or not all(isinstance(u, str) and u.startswith(("http://", "https://")) for u in urls)
    ):
        raise _config_error(
            "presence_router_adapter: 'url' must be the http(s) URL of presence-router, or a list of them "
            "(an active and a standby process)"
        )
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
    return AdapterConfig(tuple(dict.fromkeys(u.rstrip("/") for u in urls)), token, float(timeout), push, poll, cache_size)
