"""Unit tests of the adapter with a fake ModuleApi and a fake routing API."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import attr
import pytest

import presence_router_adapter as pra
from presence_router_adapter import ALL_USERS, PresenceRouterAdapter, parse_config


@attr.s(frozen=True, slots=True, auto_attribs=True)
class State:
    user_id: str
    state: str = "online"


class FakeModuleApi:
    def __init__(self) -> None:
        self.registrations: list[dict[str, Any]] = []
        self.pushed: list[list[str]] = []

    def register_presence_router_callbacks(self, **kwargs: Any) -> None:
        self.registrations.append(kwargs)

    def run_as_background_process(self, *args: Any, **kwargs: Any) -> None:
        pass

    async def send_local_online_presence_to(self, users: list[str]) -> None:
        self.pushed.append(list(users))

    async def sleep(self, seconds: float) -> None:
        pass


class FakeRoutingAPI:
    """Evaluates the stock semantics like presence-router does, and counts requests."""

    def __init__(self) -> None:
        self.version = 1
        self.always_send = {"@dash:x"}
        self.blacklist: set[str] = set()
        self.requests: list[str] = []
        self.down = False
        self.changes: dict[str, Any] = {}

    async def request(self, method: str, path: str, payload: Any = None, timeout: float | None = None) -> Any:
        self.requests.append(path.split("?")[0])
        if self.down:
            raise pra.RoutingAPIError("ConnectionRefusedError")
        if path.startswith("interested_users"):
            user = path.split("user_id=")[1].replace("%40", "@").replace("%3A", ":")
            if user in self.always_send:
                return {"version": self.version, "all": True}
            return {"version": self.version, "all": False, "users": []}
        if path == "users_for_states":
            idx = [i for i, s in enumerate(payload["states"]) if s["user_id"] not in self.blacklist]
            routes = [{"users": sorted(self.always_send), "states": idx}] if self.always_send else []
            return {"version": self.version, "routes": routes}
        if path.startswith("changes"):
            return self.changes
        raise AssertionError(path)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture
def setup() -> tuple[PresenceRouterAdapter, FakeModuleApi, FakeRoutingAPI]:
    api = FakeModuleApi()
    routing = FakeRoutingAPI()
    adapter = PresenceRouterAdapter(parse_config({"url": "http://127.0.0.1:1", "token": "t", "push": True}), api)
    adapter._request = routing.request  # type: ignore[method-assign]
    pra_logger = logging.getLogger("presence_router_adapter")
    pra_logger.propagate = True
    return adapter, api, routing


def test_modules_style_registers_once() -> None:
    api = FakeModuleApi()
    PresenceRouterAdapter({"url": "http://h", "token": "t"}, api)
    assert len(api.registrations) == 1
    assert set(api.registrations[0]) == {"get_users_for_states", "get_interested_users"}


def test_legacy_style_registers_once_through_synapse_loader() -> None:
    from synapse.events.presence_router import load_legacy_presence_router

    api = FakeModuleApi()

    class FakeServerConfig:
        presence_router_module_class = PresenceRouterAdapter
        presence_router_config = parse_config({"url": "http://h", "token": "t"})

    class FakeConfig:
        server = FakeServerConfig()

    class FakeHS:
        config = FakeConfig()

        def get_module_api(self) -> FakeModuleApi:
            return api

    load_legacy_presence_router(FakeHS())  # type: ignore[arg-type]
    assert len(api.registrations) == 1, "the legacy loader registers; the adapter must not"


def test_interested_users_all_and_cache_hit_makes_no_request(setup: Any) -> None:
    adapter, _, routing = setup
    assert run(adapter.get_interested_users("@dash:x")) == ALL_USERS
    assert run(adapter.get_interested_users("@alice:x")) == set()
    n = len(routing.requests)
    assert run(adapter.get_interested_users("@dash:x")) == ALL_USERS
    assert isinstance(run(adapter.get_interested_users("@alice:x")), set)
    assert len(routing.requests) == n


def test_users_for_states_routes_and_caches(setup: Any) -> None:
    adapter, _, routing = setup
    routing.blacklist = {"@alice:x"}
    states = [State("@alice:x"), State("@bob:x"), State("@bob:x", "unavailable")]
    result = run(adapter.get_users_for_states(states))
    assert result == {"@dash:x": {State("@bob:x"), State("@bob:x", "unavailable")}}
    assert all(type(v) is set for v in result.values())
    n = len(routing.requests)
    assert run(adapter.get_users_for_states(states)) == result
    assert run(adapter.get_users_for_states([])) == {"@dash:x": set()}
    assert len(routing.requests) == n, "a warm cache makes no request"
    run(adapter.get_users_for_states([State("@carol:y")]))
    assert len(routing.requests) == n + 1, "a miss fetches only what is missing, in one request"


def test_one_state_from_a_warm_cache_answers_like_a_batch(setup: Any) -> None:
    adapter, _, routing = setup
    routing.always_send = {"@dash:x", "@mon:x"}
    routing.blacklist = {"@alice:x"}
    run(adapter.get_users_for_states([State("@alice:x"), State("@bob:x")]))
    n = len(routing.requests)
    bob, alice = State("@bob:x"), State("@alice:x")
    assert run(adapter.get_users_for_states([bob])) == {"@dash:x": {bob}, "@mon:x": {bob}}
    assert run(adapter.get_users_for_states([alice])) == {"@dash:x": set(), "@mon:x": set()}
    assert run(adapter.get_users_for_states(iter([bob]))) == {"@dash:x": {bob}, "@mon:x": {bob}}
    assert len(routing.requests) == n, "a warm cache makes no request"


def test_one_state_routed_to_some_keys_only(setup: Any) -> None:
    adapter, _, _ = setup

    async def two_routes(method: str, path: str, payload: Any = None, timeout: float | None = None) -> Any:
        users = [s["user_id"] for s in payload["states"]]
        return {
            "version": 1,
            "routes": [
                {"users": ["@a:x"], "states": [i for i, u in enumerate(users) if u == "@bob:x"]},
                {"users": ["@a:x", "@b:x"], "states": [i for i, u in enumerate(users) if u == "@carol:x"]},
            ],
        }

    adapter._request = two_routes  # type: ignore[method-assign]
    bob, carol = State("@bob:x"), State("@carol:x")
    assert run(adapter.get_users_for_states([bob, carol])) == {"@a:x": {bob, carol}, "@b:x": {carol}}
    assert run(adapter.get_users_for_states([bob])) == {"@a:x": {bob}, "@b:x": set()}
    assert run(adapter.get_users_for_states([carol])) == {"@a:x": {carol}, "@b:x": {carol}}


def test_all_users_are_keys_even_when_nothing_routes(setup: Any) -> None:
    adapter, _, routing = setup
    routing.blacklist = {"@alice:x"}
    assert run(adapter.get_users_for_states([State("@alice:x")])) == {"@dash:x": set()}
    assert run(adapter.get_users_for_states([])) == {"@dash:x": set()}


def test_version_change_invalidates(setup: Any) -> None:
    adapter, api, routing = setup
    routing.changes = {"version": 1, "push_to": [], "reset": True}
    run(adapter.poll_once())
    assert run(adapter.get_interested_users("@mon:x")) == set()
    routing.always_send.add("@mon:x")
    routing.version = 2
    routing.changes = {"version": 2, "push_to": ["@mon:x"], "reset": False}
    run(adapter.poll_once())
    assert run(adapter.get_interested_users("@mon:x")) == ALL_USERS
    assert api.pushed == [["@mon:x"]]


def test_push_only_when_enabled_and_not_on_reset() -> None:
    api = FakeModuleApi()
    routing = FakeRoutingAPI()
    adapter = PresenceRouterAdapter({"url": "http://h", "token": "t"}, api)
    adapter._request = routing.request  # type: ignore[method-assign]
    routing.changes = {"version": 1, "push_to": [], "reset": True}
    run(adapter.poll_once())
    routing.changes = {"version": 2, "push_to": ["@mon:x"], "reset": False}
    run(adapter.poll_once())
    assert api.pushed == [], "push is off by default"


def test_reset_drops_cache(setup: Any) -> None:
    adapter, _, routing = setup
    routing.changes = {"version": 1, "push_to": [], "reset": True}
    run(adapter.poll_once())
    run(adapter.get_interested_users("@dash:x"))
    routing.changes = {"version": 1, "push_to": [], "reset": True}
    run(adapter.poll_once())
    n = len(routing.requests)
    run(adapter.get_interested_users("@dash:x"))
    assert len(routing.requests) == n + 1


def test_router_down_fails_open_and_warns_once(setup: Any, caplog: pytest.LogCaptureFixture) -> None:
    adapter, _, routing = setup
    assert run(adapter.get_interested_users("@dash:x")) == ALL_USERS
    run(adapter.get_users_for_states([State("@bob:x")]))
    routing.down = True
    routing.version = 2
    routing.changes = {}
    adapter._invalidate(2)  # a change arrived, then presence-router went away
    with caplog.at_level(logging.WARNING, logger="presence_router_adapter"):
        for _ in range(5):
            assert run(adapter.get_interested_users("@new:x")) == set()
            result = run(adapter.get_users_for_states([State("@bob:x")]))
            assert "@dash:x" in result, "a user told ALL must stay a key"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1


@pytest.mark.parametrize(
    "config,key",
    [
        ({"token": "t"}, "url"),
        ({"url": "ftp://x", "token": "t"}, "url"),
        ({"url": "http://x"}, "token"),
        ({"url": "http://x", "token": "t", "token_file": "/f"}, "token"),
        ({"url": "http://x", "token_file": "/nonexistent/file"}, "token_file"),
        ({"url": "http://x", "token": "t", "timeout": 0}, "timeout"),
        ({"url": "http://x", "token": "t", "push": "yes"}, "push"),
        ({"url": "http://x", "token": "t", "poll_timeout": 120000}, "poll_timeout"),
        ({"url": "http://x", "token": "t", "timout": 5}, "timout"),
    ],
)
def test_parse_config_names_the_key(config: dict[str, Any], key: str) -> None:
    with pytest.raises(Exception) as e:
        parse_config(config)
    assert key in str(e.value)


def test_token_file(tmp_path: Any) -> None:
    f = tmp_path / "token"
    f.write_text("secret\n")
    assert parse_config({"url": "http://x", "token_file": str(f)}).token == "secret"
