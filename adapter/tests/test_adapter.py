"""Unit tests of the adapter with a fake ModuleApi and a fake routing API."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import attr
import pytest

import presence_router_adapter as pra
import presence_router_adapter.cache
import presence_router_adapter.client
import presence_router_adapter.metrics
from presence_router_adapter import ALL_USERS, PresenceRouterAdapter, parse_config


@attr.s(frozen=True, slots=True, auto_attribs=True)
class State:
    user_id: str
    state: str = "online"


class NotTheWriter(Exception):
    """What Synapse raises from send_local_online_presence_to elsewhere."""

    def __init__(self) -> None:
        super().__init__(
            "send_local_online_presence_to can only be run on the process that is configured to write to the "
            "presence stream (by default this is the main process)"
        )


class FakeModuleApi:
    def __init__(self, writer: bool = True) -> None:
        self.registrations: list[dict[str, Any]] = []
        self.pushed: list[list[str]] = []
        self.push_calls = 0
        self.writer = writer
        self.unknown: set[str] = set()  # users Synapse cannot push to

    def register_presence_router_callbacks(self, **kwargs: Any) -> None:
        self.registrations.append(kwargs)

    def run_as_background_process(self, *args: Any, **kwargs: Any) -> None:
        pass

    async def send_local_online_presence_to(self, users: list[str]) -> None:
        self.push_calls += 1
        if not self.writer:
            raise NotTheWriter()
        if self.unknown & set(users):
            # As Synapse: the whole batch fails on its users table's foreign key.
            raise Exception("IntegrityError: FOREIGN KEY constraint failed")
        self.pushed.append(list(users))

    async def sleep(self, seconds: float) -> None:
        pass


class FakeRoutingAPI:
    """Evaluates the stock semantics like presence-router does, keeps a change
    log for the feed, and counts requests."""

    def __init__(self) -> None:
        self.version = 1
        self.always_send = {"@dash:x"}
        self.blacklist: set[str] = set()
        self.requests: list[str] = []
        self.batch_sizes: list[int] = []
        self.down = False
        self.log: list[dict[str, Any]] = []  # one entry per version after 1
        self.answer: dict[str, Any] | None = None  # the next changes answer, as is
        self.recipients_omitted = 0

    def change(self, add_always: tuple[str, ...] = (), remove_always: tuple[str, ...] = (),
               add_black: tuple[str, ...] = (), remove_black: tuple[str, ...] = ()) -> None:
        push_to = sorted(set(add_always) - self.always_send)
        if remove_black and set(remove_black) & self.blacklist:
            push_to = sorted((self.always_send | set(add_always)) - set(remove_always))
        self.always_send = (self.always_send | set(add_always)) - set(remove_always)
        self.blacklist = (self.blacklist | set(add_black)) - set(remove_black)
        self.version += 1
        self.log.append({"version": self.version, "push_to": push_to, "sources": sorted(set(add_black) | set(remove_black)),
                         "added": list(add_always), "removed": list(remove_always)})

    async def request(self, method: str, path: str, payload: Any = None, timeout: float | None = None) -> Any:
        self.requests.append(path.split("?")[0])
        if self.down:
            raise pra.RoutingAPIError("ConnectionRefusedError")
        if path.startswith("interested_users"):
            user = path.split("user_id=")[1].replace("%40", "@").replace("%3A", ":")
            if user in self.always_send:
                return {"version": self.version, "all": True}
            return {"version": self.version, "all": False, "users": []}
        if path.split("?")[0] == "users_for_states":
            payload = json.loads(payload)
            self.batch_sizes.append(len(payload["states"]))
            idx = [i for i, s in enumerate(payload["states"]) if s["user_id"] not in self.blacklist]
            if not self.always_send:
                return {"version": self.version, "routes": []}
            if path.endswith(f"?known_version={self.version}"):
                self.recipients_omitted += 1
                return {"version": self.version, "routes": [{"all_recipients": True, "states": idx}]}
            return {"version": self.version, "routes": [{"users": sorted(self.always_send), "states": idx}]}
        if path.startswith("changes"):
            if self.answer is not None:
                answer, self.answer = self.answer, None
                return answer
            since = int(path.split("since=")[1]) if "since=" in path else None
            if since is None:
                return {"version": self.version, "push_to": [], "reset": True}
            entries = [e for e in self.log if e["version"] > since]
            added: dict[str, bool] = {}
            for e in entries:
                added.update({u: True for u in e["added"]})
                added.update({u: False for u in e["removed"]})
            return {
                "version": self.version, "reset": False,
                "push_to": sorted({u for e in entries for u in e["push_to"]}),
                "sources": sorted({u for e in entries for u in e["sources"]}), "all_sources": False,
                "destinations_added": sorted(u for u, a in added.items() if a),
                "destinations_removed": sorted(u for u, a in added.items() if not a),
            }
        raise AssertionError(path)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def make(push: Any = True, writer: bool = True) -> tuple[PresenceRouterAdapter, FakeModuleApi, FakeRoutingAPI]:
    api = FakeModuleApi(writer)
    routing = FakeRoutingAPI()
    adapter = PresenceRouterAdapter(parse_config({"url": "http://127.0.0.1:1", "token": "t", "push": push}), api)
    adapter._request = routing.request  # type: ignore[method-assign]
    logging.getLogger("presence_router_adapter").propagate = True
    run(adapter.poll_once())  # connects to the feed: the cache is at the current version
    return adapter, api, routing


@pytest.fixture
def setup() -> tuple[PresenceRouterAdapter, FakeModuleApi, FakeRoutingAPI]:
    return make()


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
    assert routing.batch_sizes[-1] == 1


def test_a_miss_shares_one_route_among_its_users(setup: Any) -> None:
    adapter, _, routing = setup
    routing.always_send = {f"@dash{i}:x" for i in range(100)}
    routing.blacklist = {"@b0:x", "@b1:x"}
    run(adapter.get_users_for_states([State(f"@u{i}:x") for i in range(500)] + [State("@b0:x"), State("@b1:x")]))
    cache = adapter._cache
    routed = {id(cache.routes_of[f"@u{i}:x"]) for i in range(500)}
    assert len(routed) == 1, "every routed user shares one destination set"
    assert cache.routes_of["@b0:x"] is cache.routes_of["@b1:x"] is pra.cache._NOWHERE, "one shared empty answer"
    assert cache.routes_of["@u0:x"] is cache.keys


def test_recipients_already_held_are_not_sent_again(setup: Any) -> None:
    adapter, _, routing = setup
    routing.always_send = {f"@dash{i}:x" for i in range(100)}
    first = run(adapter.get_users_for_states([State("@a:x")]))
    assert routing.recipients_omitted == 0, "the first answer carries the recipients"
    second = run(adapter.get_users_for_states([State("@b:x")]))
    assert routing.recipients_omitted == 1, "the next miss names the version it holds"
    assert set(second) == set(first) and second["@dash7:x"] == {State("@b:x")}
    assert adapter._cache.routes_of["@b:x"] is adapter._cache.keys


def test_all_recipients_for_a_version_not_held_is_invalid(setup: Any) -> None:
    adapter, _, _ = setup
    adapter._request = _answers("users_for_states", {"version": 1, "routes": [{"all_recipients": True, "states": [0]}]})  # type: ignore[method-assign]
    assert run(adapter.get_users_for_states([State("@bob:x")])) == {}
    assert adapter._open


def test_a_big_batch_is_split_and_asks_about_each_user_once(setup: Any) -> None:
    adapter, _, routing = setup
    states = [State(f"@u{i}:x") for i in range(25_000)] * 2
    result = run(adapter.get_users_for_states(states))
    assert routing.batch_sizes == [10_000, 10_000, 5_000]
    assert len(result["@dash:x"]) == 25_000


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
        users = [s["user_id"] for s in json.loads(payload)["states"]]
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


def test_a_blacklist_change_drops_only_that_users_answer(setup: Any) -> None:
    adapter, _, routing = setup
    states = [State(f"@u{i}:x") for i in range(100)]
    run(adapter.get_users_for_states(states))
    routing.change(add_black=("@u7:x",))
    run(adapter.poll_once())
    n = len(routing.requests)
    result = run(adapter.get_users_for_states(states))
    assert routing.requests[n:] == ["users_for_states"] and routing.batch_sizes[-1] == 1, "only @u7 is asked again"
    assert State("@u7:x") not in result["@dash:x"] and len(result["@dash:x"]) == 99
    routing.change(remove_black=("@u7:x",))
    run(adapter.poll_once())
    assert State("@u7:x") in run(adapter.get_users_for_states(states))["@dash:x"]


def test_an_always_send_change_patches_answers_without_asking(setup: Any) -> None:
    adapter, api, routing = setup
    routing.blacklist = {"@ceo:x"}
    states = [State(f"@u{i}:x") for i in range(100)] + [State("@ceo:x")]
    run(adapter.get_users_for_states(states))
    assert run(adapter.get_interested_users("@mon:x")) == set()
    assert run(adapter.get_interested_users("@dash:x")) == ALL_USERS
    routing.change(add_always=("@mon:x",))
    run(adapter.poll_once())
    n = len(routing.requests)
    result = run(adapter.get_users_for_states(states))
    assert routing.requests[n:] == [], "a destination change is patched in, not asked again"
    assert set(result) == {"@dash:x", "@mon:x"} and len(result["@mon:x"]) == 100 and State("@ceo:x") not in result["@mon:x"]
    assert run(adapter.get_interested_users("@mon:x")) == ALL_USERS, "the added user's interest was dropped and asked again"
    assert api.pushed == [["@mon:x"]]
    routing.change(remove_always=("@dash:x",))
    run(adapter.poll_once())
    assert set(run(adapter.get_users_for_states(states))) == {"@mon:x", "@dash:x"}, "a user once told ALL stays a key"
    one = run(adapter.get_users_for_states([State("@u1:x")]))
    assert set(one) == {"@mon:x", "@dash:x"} and one["@dash:x"] == set(), "also when one state is routed"
    assert run(adapter.get_users_for_states(states))["@dash:x"] == set()


def test_destinations_added_to_an_empty_list_ask_again() -> None:
    adapter, _, routing = make()
    routing.change(remove_always=("@dash:x",))
    run(adapter.poll_once())
    routing.blacklist = {"@ceo:x"}
    assert run(adapter.get_users_for_states([State("@bob:x"), State("@ceo:x")])) == {}
    routing.change(add_always=("@mon:x",))
    run(adapter.poll_once())
    result = run(adapter.get_users_for_states([State("@bob:x"), State("@ceo:x")]))
    assert result["@mon:x"] == {State("@bob:x")}, "with every answer empty, routed users could not be told apart"


def test_version_change_and_push(setup: Any) -> None:
    adapter, api, routing = setup
    assert run(adapter.get_interested_users("@mon:x")) == set()
    routing.change(add_always=("@mon:x",))
    run(adapter.poll_once())
    assert run(adapter.get_interested_users("@mon:x")) == ALL_USERS
    assert api.pushed == [["@mon:x"]]


def test_push_off_and_not_on_reset() -> None:
    adapter, api, routing = make(push=False)
    routing.change(add_always=("@mon:x",))
    run(adapter.poll_once())
    assert api.pushed == [], "push: false never pushes"
    adapter, api, routing = make(push=True)
    routing.answer = {"version": 5, "push_to": ["@mon:x"], "reset": True}
    run(adapter.poll_once())
    assert api.pushed == []


def test_untracked_presence_turns_push_auto_off(caplog: pytest.LogCaptureFixture) -> None:
    """Synapse would repeat the snapshot a push sends in every /sync."""

    class Server:
        track_presence = False

    class Config:
        server = Server()

    class HS:
        config = Config()

    for push, want in (("auto", []), (True, [["@mon:x"]])):
        api = FakeModuleApi()
        api._hs = HS()  # type: ignore[attr-defined]
        routing = FakeRoutingAPI()
        with caplog.at_level(logging.WARNING, logger="presence_router_adapter"):
            adapter = PresenceRouterAdapter(parse_config({"url": "http://127.0.0.1:1", "token": "t", "push": push}), api)
        assert "untracked" in caplog.text
        caplog.clear()
        adapter._request = routing.request  # type: ignore[method-assign]
        run(adapter.poll_once())
        routing.change(add_always=("@mon:x",))
        run(adapter.poll_once())
        assert api.pushed == want, f"push {push!r} with untracked presence"


def test_push_auto_pushes_on_the_writer_only() -> None:
    adapter, api, routing = make(push="auto", writer=True)
    routing.change(add_always=("@mon:x",))
    run(adapter.poll_once())
    assert api.pushed == [["@mon:x"]], "auto pushes where Synapse allows it"
    adapter, api, routing = make(push="auto", writer=False)
    for user in ("@mon:x", "@desk:x"):
        routing.change(add_always=(user,))
        run(adapter.poll_once())
    assert api.push_calls == 1, "after Synapse says this process does not write presence, auto stops trying"
    adapter, api, routing = make(push=True, writer=False)
    for user in ("@mon:x", "@desk:x"):
        routing.change(add_always=(user,))
        run(adapter.poll_once())
    assert api.push_calls == 2, "push: true keeps trying (and warns)"


def test_reset_drops_cache(setup: Any) -> None:
    adapter, _, routing = setup
    run(adapter.get_interested_users("@dash:x"))
    routing.answer = {"version": 1, "push_to": [], "reset": True}
    run(adapter.poll_once())
    n = len(routing.requests)
    run(adapter.get_interested_users("@dash:x"))
    assert len(routing.requests) == n + 1


def test_breaker_answers_misses_at_once_until_the_feed_is_back(setup: Any, caplog: pytest.LogCaptureFixture) -> None:
    adapter, _, routing = setup
    assert run(adapter.get_interested_users("@dash:x")) == ALL_USERS
    run(adapter.get_users_for_states([State("@bob:x")]))
    routing.down = True
    skipped = pra.metrics.SKIPPED.labels("get_users_for_states")._value.get()
    with caplog.at_level(logging.WARNING, logger="presence_router_adapter"):
        assert run(adapter.get_interested_users("@new:x")) == set()  # fails, opens the breaker
        n = len(routing.requests)
        for i in range(5):
            assert run(adapter.get_interested_users(f"@new{i}:x")) == set()
            result = run(adapter.get_users_for_states([State("@bob:x"), State(f"@other{i}:x")]))
            assert result == {"@dash:x": {State("@bob:x")}}, "cached answers still serve; a user told ALL stays a key"
        assert len(routing.requests) == n, "no request while the breaker is open"
    assert pra.metrics.SKIPPED.labels("get_users_for_states")._value.get() == skipped + 5
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1, "one warning per 30 s"
    with pytest.raises(pra.RoutingAPIError):
        run(adapter.poll_once())  # the feed still fails: still open
    assert run(adapter.get_interested_users("@new:x")) == set() and len(routing.requests) == n + 1
    routing.down = False
    run(adapter.poll_once())  # the feed reaches presence-router: closed again
    assert run(adapter.get_users_for_states([State("@other0:x")])) == {"@dash:x": {State("@other0:x")}}
    assert routing.requests[-1] == "users_for_states"


def _answers(kind: str, body: Any) -> Any:
    async def answer(method: str, path: str, payload: Any = None, timeout: float | None = None) -> Any:  # noqa: ARG001
        if path.startswith(kind):
            return body
        raise AssertionError(path)

    return answer


@pytest.mark.parametrize(
    "kind,body",
    [
        ("users_for_states", {"version": 1, "routes": [{"users": ["@dash:x"], "states": [1]}]}),  # index outside the request
        ("users_for_states", {"version": 1, "routes": [{"users": ["@dash:x"], "states": [-1]}]}),  # negative index
        ("users_for_states", {"version": 1, "routes": [{"users": [7], "states": [0]}]}),  # user ID not a string
        ("users_for_states", {"version": 1, "routes": [{"users": ["@dash:x"], "states": [True]}]}),  # bool index
        ("users_for_states", {"version": -7, "routes": []}),  # negative version
        ("users_for_states", {"version": "1", "routes": []}),  # version not an integer
        ("users_for_states", {"version": 1.5, "routes": []}),
        ("users_for_states", {"version": 1}),  # no routes
        ("users_for_states", ["not", "an", "object"]),
        ("interested_users", {"version": 1, "all": "no"}),  # non-boolean all
        ("interested_users", {"version": 1, "all": False, "users": [None]}),
        ("interested_users", {"version": -1, "all": True}),
    ],
)
def test_an_invalid_answer_fails_open(kind: str, body: Any, caplog: pytest.LogCaptureFixture) -> None:
    adapter, _, _ = make()
    adapter._request = _answers(kind, body)  # type: ignore[method-assign]
    invalid = pra.metrics.INVALID.labels(kind)._value.get()
    with caplog.at_level(logging.WARNING, logger="presence_router_adapter"):
        if kind == "users_for_states":
            assert run(adapter.get_users_for_states([State("@bob:x")])) == {}
        else:
            assert run(adapter.get_interested_users("@bob:x")) == set()
    assert pra.metrics.INVALID.labels(kind)._value.get() == invalid + 1
    assert adapter._open, "an invalid answer counts as a failed request"
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


@pytest.mark.parametrize(
    "body",
    [
        {"version": -7, "push_to": [], "reset": False},
        {"version": "2", "push_to": [], "reset": False},
        {"version": 2, "push_to": [1], "reset": False},
        {"version": 2, "push_to": [], "reset": "no"},
        {"version": 2, "push_to": [], "reset": False, "sources": "@a:x"},
    ],
)
def test_an_invalid_feed_answer_does_not_wedge_the_feed(body: Any) -> None:
    adapter, _, routing = make()
    routing.answer = body
    with pytest.raises(pra.InvalidAnswer):
        run(adapter.poll_once())
    run(adapter.poll_once())  # the next answer is fine
    assert adapter._cache.version == routing.version


def test_a_version_going_back_resets_the_cache() -> None:
    adapter, _, routing = make()
    routing.change(add_always=("@mon:x",))
    run(adapter.poll_once())
    run(adapter.get_users_for_states([State("@bob:x")]))
    routing.answer = {"version": 1, "push_to": [], "reset": False}  # presence-router's database was replaced
    with pytest.raises(pra.InvalidAnswer):
        run(adapter.poll_once())
    assert adapter._cache.routes_of == {} and adapter._since is None
    routing.version = 1
    run(adapter.poll_once())  # starts over without since: reset
    assert adapter._cache.version == 1 and adapter._since == 1


def test_the_cache_is_bounded() -> None:
    api = FakeModuleApi()
    routing = FakeRoutingAPI()
    adapter = PresenceRouterAdapter(parse_config({"url": "http://h", "token": "t", "cache_size": 1000}), api)
    adapter._request = routing.request  # type: ignore[method-assign]
    run(adapter.poll_once())
    for start in range(0, 5000, 500):
        run(adapter.get_users_for_states([State(f"@u{i}:x") for i in range(start, start + 500)]))
        assert len(adapter._cache.routes_of) <= 1000


@pytest.mark.parametrize(
    "config,key",
    [
        ({"token": "t"}, "url"),
        ({"url": "ftp://x", "token": "t"}, "url"),
        ({"url": [], "token": "t"}, "url"),
        ({"url": ["http://x", "ftp://y"], "token": "t"}, "url"),
        ({"url": {"a": "http://x"}, "token": "t"}, "url"),
        ({"url": "http://x"}, "token"),
        ({"url": "http://x", "token": "t", "token_file": "/f"}, "token"),
        ({"url": "http://x", "token_file": "/nonexistent/file"}, "token_file"),
        ({"url": "http://x", "token": "t", "timeout": 0}, "timeout"),
        ({"url": "http://x", "token": "t", "push": "yes"}, "push"),
        ({"url": "http://x", "token": "t", "poll_timeout": 120000}, "poll_timeout"),
        ({"url": "http://x", "token": "t", "cache_size": 10}, "cache_size"),
        ({"url": "http://x", "token": "t", "timout": 5}, "timout"),
    ],
)
def test_parse_config_names_the_key(config: dict[str, Any], key: str) -> None:
    with pytest.raises(Exception) as e:
        parse_config(config)
    assert key in str(e.value)


def test_parse_config_url_list() -> None:
    assert parse_config({"url": "http://a/", "token": "t"}).urls == ("http://a",)
    urls = parse_config({"url": ["http://a:1", "http://b:2/", "http://a:1"], "token": "t"}).urls
    assert urls == ("http://a:1", "http://b:2"), "in order, each once, without a trailing slash"


def test_parse_config_push() -> None:
    assert parse_config({"url": "http://x", "token": "t"}).push == "auto"
    assert parse_config({"url": "http://x", "token": "t", "push": True}).push == "on"
    assert parse_config({"url": "http://x", "token": "t", "push": False}).push == "off"


def test_token_file(tmp_path: Any) -> None:
    f = tmp_path / "token"
    f.write_text("secret\n")
    assert parse_config({"url": "http://x", "token_file": str(f)}).token == "secret"


def test_two_routes_and_repeated_users_are_grouped_by_route(setup: Any) -> None:
    """An answer with two routes (always-send users on another server get
    local users' presence only) and a batch that names a user twice: each
    state goes to its route's users, and every key is present."""
    adapter, _, routing = setup

    async def request(method: str, path: str, payload: Any = None, timeout: float | None = None) -> Any:
        states = json.loads(payload)["states"]
        local = [i for i, s in enumerate(states) if s["user_id"].endswith(":x")]
        return {"version": routing.version, "routes": [
            {"users": ["@far:y"], "states": local},
            {"users": ["@dash:x"], "states": list(range(len(states)))},
        ]}

    adapter._request = request
    a, b, a_again = State("@a:x"), State("@b:y"), State("@a:x", "unavailable")
    got = run(adapter.get_users_for_states([a, b, a_again]))
    assert got == {"@far:y": {a, a_again}, "@dash:x": {a, b, a_again}}
    # Served from the cache the second time, grouped the same way.
    assert run(adapter.get_users_for_states([a, b, a_again])) == got


def test_one_unknown_recipient_does_not_silence_the_push_for_the_others(caplog: pytest.LogCaptureFixture) -> None:
    """A user Synapse does not know on always-send (a typo) fails the whole
    send_local_online_presence_to batch: the others still get current
    presence, and the failed user is named once, and counted."""
    adapter, api, routing = make()
    api.unknown = {"@dahs:x"}
    routing.change(add_always=("@desk:x", "@dahs:x", "@mon:x", "@ops:x", "@tv:x"))
    failures = presence_router_adapter.metrics.PUSH_FAILURES._value.get()
    with caplog.at_level(logging.INFO, logger="presence_router_adapter"):
        run(adapter.poll_once())
        routing.blacklist.add("@gone:x")
        routing.change(remove_black=("@gone:x",))  # everyone on always-send gains presence again
        run(adapter.poll_once())
    delivered = {u for batch in api.pushed for u in batch}
    assert delivered == {"@dash:x", "@desk:x", "@mon:x", "@ops:x", "@tv:x"}, api.pushed
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "@dahs:x" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert presence_router_adapter.metrics.PUSH_FAILURES._value.get() == failures + 2


def test_group_routes_reach_their_members_and_are_not_keys(setup: Any) -> None:
    """A group's route (group: true) reaches its members; its members are
    not keys of answers to other states (only users told ALL must be), and
    a member of the group and of always-send's route gets the union."""
    adapter, _, routing = setup
    team = ["@a:x", "@b:x", "@c:x"]
    paths: list[str] = []

    async def request(method: str, path: str, payload: Any = None, timeout: float | None = None) -> Any:
        if not path.startswith("users_for_states"):
            return await routing.request(method, path, payload, timeout)
        states = json.loads(payload)["states"]
        members = [i for i, s in enumerate(states) if s["user_id"] in team]
        paths.append(path)
        group: dict[str, Any] = {"group": True, "key": "team", "states": members}
        if "known_groups=team" in path:
            group["known"] = True  # the adapter holds the members at this version
        else:
            group["users"] = team
        return {"version": routing.version, "routes": [{"users": ["@dash:x"], "states": list(range(len(states)))}, group]}

    adapter._request = request
    a, out = State("@a:x"), State("@out:x")
    got = run(adapter.get_users_for_states([a, out]))
    assert got == {"@dash:x": {a, out}, "@a:x": {a}, "@b:x": {a}, "@c:x": {a}}
    # An outsider's state alone: the group's members are not keys.
    assert run(adapter.get_users_for_states([out])) == {"@dash:x": {out}}
    assert run(adapter.get_users_for_states([a])) == {"@dash:x": {a}, "@a:x": {a}, "@b:x": {a}, "@c:x": {a}}
    # The members were sent once; a miss at the same version names them
    # known (the 10,000 members of a big group are not sent again).
    b = State("@b:x")
    assert run(adapter.get_users_for_states([b])) == {"@dash:x": {b}, "@a:x": {b}, "@b:x": {b}, "@c:x": {b}}
    assert "known_groups=team" not in paths[0] and "known_groups=team" in paths[-1]
    # A new version: the held members are dropped, and asked for again.
    routing.change(add_always=("@dash2:x",))
    run(adapter.poll_once())
    run(adapter.get_users_for_states([State("@c:x")]))
    assert "known_groups" not in paths[-1]


def test_many_members_share_one_union_route(setup: Any) -> None:
    """1,000 members' states in a group and on always-send's route: one
    union, shared by all of them (made once, not once per state)."""
    adapter, _, routing = setup
    members = [f"@m{i}:x" for i in range(1000)]

    async def request(method: str, path: str, payload: Any = None, timeout: float | None = None) -> Any:
        n = len(json.loads(payload)["states"])
        return {"version": routing.version, "routes": [
            {"users": ["@dash:x"], "states": list(range(n))},
            {"group": True, "key": "all", "users": members, "states": list(range(n))},
        ]}

    adapter._request = request
    states = [State(u) for u in members]
    got = run(adapter.get_users_for_states(states))
    assert set(got) == set(members) | {"@dash:x"}
    assert all(v == set(states) for v in got.values())
    routes = {id(r) for r in adapter._cache.routes_of.values()}
    assert len(routes) == 1


def test_group_interest_is_one_shared_set_until_the_feed_drops_it(setup: Any) -> None:
    """A member's interested_users answer is served from the cache as the
    same set (no copy per /sync); all_interested drops it, and ALL answers
    stay."""
    adapter, _, routing = setup
    calls: list[str] = []

    async def request(method: str, path: str, payload: Any = None, timeout: float | None = None) -> Any:
        calls.append(path)
        if "dash" in path:
            return {"version": routing.version, "all": True}
        return {"version": routing.version, "all": False, "users": ["@a:x", "@b:x"]}

    adapter._request = request
    first = run(adapter.get_interested_users("@a:x"))
    assert first == {"@a:x", "@b:x"}
    assert run(adapter.get_interested_users("@a:x")) is first
    assert run(adapter.get_interested_users("@dash:x")) == ALL_USERS
    assert len(calls) == 2
    routing.version += 1
    routing.answer = {"version": routing.version, "reset": False, "push_to": [], "sources": [], "all_sources": True,
                      "destinations_added": [], "destinations_removed": [], "all_interested": True}
    run(adapter.poll_once())
    run(adapter.get_interested_users("@a:x"))
    run(adapter.get_interested_users("@dash:x"))
    assert len(calls) == 3  # the member asked again; the ALL answer stayed


class BuggyPresenceWriter:
    """Synapse's presence writer as it behaves: send_full_presence_to_users
    re-sets next(iter(local users))'s state and loses its status message."""

    def __init__(self) -> None:
        self.states: dict[str, tuple[str, str | None]] = {}

    async def get_state(self, user: Any) -> Any:
        state, msg = self.states.get(user.to_string(), ("offline", None))
        return attr.make_class("S", ["state", "status_msg"])(state, msg)


class PresenceApi(FakeModuleApi):
    def __init__(self) -> None:
        super().__init__()
        writer = BuggyPresenceWriter()
        self.writer_states = writer.states
        self._hs = type("HS", (), {"get_presence_handler": lambda _self: writer})()

    def is_mine(self, user: str) -> bool:
        return user.endswith(":x")

    async def send_local_online_presence_to(self, users: list[str]) -> None:
        await super().send_local_online_presence_to(users)
        local: set[str] = set()
        for u in users:
            if self.is_mine(u):
                local.add(u)
        victim = next(iter(local))
        self.writer_states[victim] = (self.writer_states.get(victim, ("offline", None))[0], None)

    async def set_presence_for_users(self, users: dict[str, tuple[str, str | None]]) -> None:
        self.writer_states.update(users)


def test_a_push_gives_back_the_status_message_synapse_clears() -> None:
    """Synapse's push clears one recipient's status message (its
    "status_message" key is not the "status_msg" that set_state reads):
    the adapter sets it again, whichever recipient Synapse picked."""
    api = PresenceApi()
    routing = FakeRoutingAPI()
    adapter = PresenceRouterAdapter(parse_config({"url": "http://127.0.0.1:1", "token": "t", "push": True}), api)
    adapter._request = routing.request  # type: ignore[method-assign]
    users = [f"@u{i}:x" for i in range(5)] + ["@far:y"]
    for u in users:
        api.writer_states[u] = ("online", f"status of {u}")
    run(adapter._push(users))
    assert api.pushed == [users]
    for u in users:
        assert api.writer_states[u] == ("online", f"status of {u}"), u


@pytest.mark.parametrize("route", [
    {"group": True, "key": "team", "known": True, "states": [0]},  # not held
    {"group": True, "users": ["@a:x"], "states": [0]},  # no key
])
def test_a_group_route_the_client_cannot_use_is_invalid(route: dict[str, Any]) -> None:
    from presence_router_adapter.api import _routes_answer

    with pytest.raises(pra.InvalidAnswer):
        _routes_answer({"version": 3, "routes": [route]}, 1, 3, frozenset({"other"}))
