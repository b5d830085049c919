"""The adapter's Prometheus series; the hot path counts in plain integers
(STATS), exported by a collector."""

from __future__ import annotations

from typing import Any, Iterable

from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import CounterMetricFamily


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
URL_IN_USE = Gauge(
    "presence_router_adapter_url_in_use",
    "1 for the presence-router URL the adapter uses now, 0 for the others of its list",
    ["url"],
)
PUSH_FAILURES = Counter(
    "presence_router_adapter_push_failures_total",
    "Users to whom sending current presence failed (each failed push to one user; the others of its batch got theirs)",
)
