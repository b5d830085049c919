"""Warm-cache adapter against the seed's example presence router, in one process.

Run: .venv/bin/python bench/adapter_bench.py [--quick] [--cold bin/presence-router]
Prints time per call of each and the ratio (adapter / example); the target
is <= 1.5x. Both run in the same process on the same inputs, so the ratio
holds on a noisy machine where absolute times do not.

With --cold, it also starts the presence-router binary on loopback (no
homeserver needed: the routing API serves while the homeserver is down) and
times the adapter's cache misses, each a real request to the routing API,
for the same batches: p50 and p99.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import timeit
import urllib.request
from typing import Any, Iterable

import attr

from presence_router_adapter import ALL_USERS, PresenceRouterAdapter


@attr.s(frozen=True, slots=True, auto_attribs=True)
class State:  # the fields that matter of synapse.api.presence.UserPresenceState
    user_id: str
    state: str = "online"


class ExamplePresenceRouter:
    """The seed document's example router (user_id instead of its state_key typo)."""

    def __init__(self, always_send: list[str], blacklisted: list[str]) -> None:
        self.always_send_to_users = always_send
        self.blacklisted_users = blacklisted

    async def get_users_for_states(self, state_updates: Iterable[Any]) -> dict[str, set[Any]]:
        destination_users = {}
        desired_updates = set()
        for update in state_updates:
            if update.user_id not in self.blacklisted_users:
                desired_updates.add(update)
        for user_id in self.always_send_to_users:
            destination_users[user_id] = desired_updates
        return destination_users

    async def get_interested_users(self, user_id: str) -> set[str] | str:
        if user_id in self.always_send_to_users:
            return ALL_USERS
        return set()


class NoModuleApi:
    def register_presence_router_callbacks(self, **kwargs: Any) -> None:
        pass

    def run_as_background_process(self, *args: Any, **kwargs: Any) -> None:
        pass


def drive(coro: Any) -> Any:
    """Run a coroutine that never suspends (a warm cache makes no request)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise RuntimeError("the coroutine suspended: the cache was not warm")


def main() -> None:
    quick = "--quick" in sys.argv
    always = [f"@dash{i}:example.org" for i in range(10)]
    blacklisted = ["@alice:example.org", "@ceo:example.org"]
    example = ExamplePresenceRouter(always, blacklisted)
    adapter = PresenceRouterAdapter({"url": "http://127.0.0.1:1", "token": "x"}, NoModuleApi())

    async def fake_request(method: str, path: str, payload: Any = None, timeout: float | None = None) -> Any:
        if path.startswith("interested_users"):
            user = path.split("user_id=")[1].replace("%40", "@").replace("%3A", ":")
            return {"version": 1, "all": user in always, "users": []}
        idx = [i for i, s in enumerate(json.loads(payload)["states"]) if s["user_id"] not in blacklisted]
        return {"version": 1, "routes": [{"users": always, "states": idx}]}

    adapter._request = fake_request  # type: ignore[method-assign]
    adapter._replace_cache(1)  # as the change feed does when it connects
    batches = {
        f"{n} states": [State(blacklisted[0] if i % 50 == 0 else f"@user{i}:example.org") for i in range(n)] for n in (100, 5000)
    }
    batches = {"1 state, blacklisted": [State(blacklisted[0])], "1 state, routed": [State("@user1:example.org")], **batches}
    # Warm the cache the way Synapse would: a first call per user.
    for batch in batches.values():
        asyncio.run(adapter.get_users_for_states(batch))
    for user in ("@dash3:example.org", "@bob:example.org"):
        asyncio.run(adapter.get_interested_users(user))
    for name, batch in batches.items():
        assert drive(adapter.get_users_for_states(batch)) == drive(example.get_users_for_states(batch)), name

    cases = [
        ("get_interested_users (listed)", lambda r: drive(r.get_interested_users("@dash3:example.org"))),
        ("get_interested_users (unlisted)", lambda r: drive(r.get_interested_users("@bob:example.org"))),
    ] + [(f"get_users_for_states ({n})", (lambda b: lambda r: drive(r.get_users_for_states(b)))(b)) for n, b in batches.items()]
    print(f"{'case':44} {'example':>12} {'adapter':>12} {'ratio':>7}  target <= 1.5x")
    worst = 0.0
    for name, call in cases:
        number = 20 if "5000" in name else 2000
        if quick:
            number = max(1, number // 20)
        times = {}
        for label, router in (("example", example), ("adapter", adapter)):
            times[label] = min(timeit.repeat(lambda: call(router), number=number, repeat=3 if quick else 7)) / number
        ratio = times["adapter"] / times["example"]
        worst = max(worst, ratio)
        verdict = "ok" if ratio <= 1.5 else "MISSED"
        print(f"{name:44} {times['example'] * 1e6:10.2f}us {times['adapter'] * 1e6:10.2f}us {ratio:6.2f}x  {verdict}")
    print(f"worst ratio: {worst:.2f}x")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_router(binary: str, workdir: str, always: list[str], blacklisted: list[str]) -> tuple[subprocess.Popen[bytes], str, str]:
    """Start presence-router with the lists imported; return (process, url, token)."""
    port, token = free_port(), os.urandom(16).hex()
    with open(os.path.join(workdir, "token"), "w") as f:
        f.write(token)
    config = os.path.join(workdir, "config.yaml")
    with open(config, "w") as f:
        f.write(
            f"homeserver: {{address: 'http://127.0.0.1:{free_port()}', domain: example.org}}\n"
            f"appservice: {{address: 'http://127.0.0.1:{port}', hostname: 127.0.0.1, port: {port}, id: bench,"
            " bot_username: presence, as_token: generate-with-g, hs_token: generate-with-g}\n"
            "bot: {control_room: '#control:example.org', admins: ['@admin:example.org']}\n"
            f"router: {{token_file: {workdir}/token}}\n"
            f"database: {{path: {workdir}/bench.db}}\n"
            "logging: {level: warn}\n"
        )
    stock = os.path.join(workdir, "homeserver.yaml")
    with open(stock, "w") as f:
        f.write(
            "presence:\n  presence_router:\n    module: x.ExamplePresenceRouter\n    config:\n"
            f"      always_send_to_users: {always!r}\n      blacklisted_users: {blacklisted!r}\n"
        )
    run = lambda *args: subprocess.run([binary, "-c", config, *args], check=True, capture_output=True)  # noqa: E731
    run("-g", "-r", os.path.join(workdir, "registration.yaml"))
    run("--import-synapse-config", stock)
    proc = subprocess.Popen([binary, "-c", config], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while True:
        try:
            urllib.request.urlopen(url + "/_matrix/mau/live", timeout=1).close()
            return proc, url, token
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("presence-router did not start for the cold-path benchmark")
            time.sleep(0.05)


def cold_path(binary: str, quick: bool) -> None:
    """Cache misses over loopback against the real binary: p50 and p99."""
    from twisted.internet import defer, task

    always = [f"@dash{i}:example.org" for i in range(10)]
    blacklisted = ["@alice:example.org", "@ceo:example.org"]
    batches = {n: [State(blacklisted[0] if i % 50 == 0 else f"@user{i}:example.org") for i in range(n)] for n in (1, 100, 5000)}
    with tempfile.TemporaryDirectory() as workdir:
        proc, url, token = start_router(binary, workdir, always, blacklisted)
        try:
            adapter = PresenceRouterAdapter({"url": url, "token": token}, NoModuleApi())

            async def measure() -> None:
                await adapter.poll_once()  # connects to the change feed
                print(f"\ncold path: cache misses over loopback to {binary}")
                print(f"{'case':36} {'calls':>6} {'p50':>10} {'p99':>10}")
                cases: list[tuple[str, Any]] = [
                    ("get_interested_users (listed)", lambda: adapter.get_interested_users("@dash3:example.org")),
                    ("get_interested_users (unlisted)", lambda: adapter.get_interested_users("@bob:example.org")),
                ] + [(f"get_users_for_states ({n} states)", (lambda b: lambda: adapter.get_users_for_states(b))(b)) for n, b in batches.items()]
                for name, call in cases:
                    calls = 30 if "5000" in name else 300
                    if quick:
                        calls = 5
                    samples = []
                    for _ in range(calls + 3):
                        adapter._replace_cache(adapter._cache.version)  # every call misses
                        start = time.perf_counter()
                        await call()
                        samples.append(time.perf_counter() - start)
                    samples = sorted(samples[3:])  # the first calls open the connection
                    p50, p99 = samples[len(samples) // 2], samples[min(len(samples) - 1, int(len(samples) * 0.99))]
                    print(f"{name:36} {calls:6d} {p50 * 1e3:8.2f}ms {p99 * 1e3:8.2f}ms")
                if adapter._cache.version < 1:
                    raise RuntimeError("the adapter never got an answer from presence-router")
                await huge_batch(adapter, quick)

            task.react(lambda _reactor: defer.ensureDeferred(measure()))
        finally:
            proc.terminate()
            proc.wait(10)


async def huge_batch(adapter: PresenceRouterAdapter, quick: bool) -> None:
    """A batch bigger than one routing API request may carry (the routing
    API answers 413 over 16 MiB, about 260,000 states): it must succeed."""
    n = 30_000 if quick else 300_000
    states = [State(f"@huge{i}:example.org") for i in range(n)]
    adapter._replace_cache(adapter._cache.version)
    cpu, wall = time.process_time(), time.perf_counter()
    result = await adapter.get_users_for_states(states)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    routed = len(result.get("@dash0:example.org", ()))
    verdict = "ok" if routed == n else f"FAILED ({routed} routed)"
    print(f"\nuncached batch of {n} states against the real binary: {verdict}; adapter CPU {cpu * 1e3:.0f} ms, wall {wall * 1e3:.0f} ms")
    if routed != n:
        raise SystemExit(f"the {n}-state batch was not routed")


def served_from_memory(adapter: PresenceRouterAdapter, always: list[str], blacklisted: set[str], keep: bool = True) -> dict[tuple[bool, bytes], bytes]:
    """Answer the adapter's routing API requests from memory: the answers are
    encoded beforehand (the server's work), so only the adapter's own work
    (encoding the request, decoding and caching the answer) is timed."""
    from twisted.internet import defer

    answers: dict[tuple[bool, bytes], bytes] = {}

    def answer_for(states: list[dict[str, str]], version: int, known: bool) -> bytes:
        indices = [i for i, st in enumerate(states) if st["user_id"] not in blacklisted]
        route: dict[str, Any] = {"all_recipients": True} if known else {"users": always}
        return json.dumps({"version": version, "routes": [{**route, "states": indices}]}).encode()

    def request_deferred(method: str, path: str, payload: bytes, timeout: float) -> Any:
        version = adapter._cache.version
        known = path.endswith(f"?known_version={version}")
        body = answers.get((known, payload))  # the request as the adapter encoded it
        if body is None:  # not prepared: encode it now (untimed runs), and keep it
            body = answer_for(json.loads(payload)["states"], version, known)
            if keep:
                answers[(known, payload)] = body
        return defer.succeed((200, body))

    adapter._request_deferred = request_deferred  # type: ignore[method-assign]
    return answers


def timed(call: Any, setup: Any, runs: int) -> float:
    """The median time of call over runs, each after an untimed setup."""
    samples = []
    for _ in range(runs):
        setup()
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    samples.sort()
    return samples[len(samples) // 2]


def peak_memory(call: Any, setup: Any) -> int:
    """The peak memory call allocates (traced), after an untimed setup."""
    import gc
    import tracemalloc

    setup()
    gc.collect()
    tracemalloc.start()
    call()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def costs(quick: bool) -> None:
    """The issue's cost targets, against the example router on the same batch."""
    import gc
    import tracemalloc

    from presence_router_adapter.api import _Feed
    from presence_router_adapter.cache import _Cache

    print("\ncosts against the example router (same batch, same process; answers served from memory)")
    print(f"{'case':64} {'example':>10} {'adapter':>10} {'ratio':>7}")

    # 1. 10,000 always-send users x 2,000 uncached states.
    always = [f"@dash{i}:example.org" for i in range(10_000)]
    blacklisted = {f"@user{i}:example.org" for i in range(0, 2000, 50)}
    example = ExamplePresenceRouter(always, sorted(blacklisted))
    example.blacklisted_users = blacklisted  # type: ignore[assignment]  # a set, in fairness to the example
    adapter = PresenceRouterAdapter({"url": "http://127.0.0.1:1", "token": "x"}, NoModuleApi())
    adapter._replace_cache(1)
    served_from_memory(adapter, always, blacklisted)
    batch = [State(f"@user{i}:example.org") for i in range(2000)]
    def uncached() -> None:  # the recipients stay known, as across changes
        adapter._cache.routes_of.clear()

    fresh = lambda: adapter._replace_cache(1)  # noqa: E731  # nothing known, as at start or after a reset
    fresh()
    assert drive(adapter.get_users_for_states(batch)) == drive(example.get_users_for_states(batch))
    uncached()
    assert drive(adapter.get_users_for_states(batch)) == drive(example.get_users_for_states(batch))
    runs = 5 if quick else 31
    t_example = timed(lambda: drive(example.get_users_for_states(batch)), lambda: None, runs)
    t_adapter = timed(lambda: drive(adapter.get_users_for_states(batch)), uncached, runs)
    peak = peak_memory(lambda: drive(adapter.get_users_for_states(batch)), uncached)
    report("cold: 10,000 always-send x 2,000 uncached states", t_example, t_adapter, 2.0, f"peak memory added {peak / 1e6:.1f} MB")
    t_first = timed(lambda: drive(adapter.get_users_for_states(batch)), fresh, runs)
    peak = peak_memory(lambda: drive(adapter.get_users_for_states(batch)), fresh)
    print(f"{'  the first miss after a start or reset (recipients not held yet)':64} {t_example * 1e3:8.2f}ms {t_first * 1e3:8.2f}ms {t_first / t_example:6.2f}x  (no target: once per start)  peak memory added {peak / 1e6:.1f} MB")

    # 2. After a one-user blacklist change, 100,000 states of users seen before.
    n = 100_000
    always = [f"@dash{i}:example.org" for i in range(10)]
    blacklisted = {f"@seen{i}:example.org" for i in range(0, n, 50)}
    example = ExamplePresenceRouter(always, [])
    example.blacklisted_users = blacklisted  # type: ignore[assignment]
    adapter = PresenceRouterAdapter({"url": "http://127.0.0.1:1", "token": "x"}, NoModuleApi())
    adapter._replace_cache(1)
    served_from_memory(adapter, always, blacklisted)
    batch = [State(f"@seen{i}:example.org") for i in range(n)]
    drive(adapter.get_users_for_states(batch))  # every user seen once
    changed = batch[7].user_id
    blacklisted.add(changed)
    adapter._apply(_Feed(2, False, [], [changed], False, [], [], False))

    def one_user_changed() -> None:
        adapter._cache.routes_of.pop(changed, None)  # as the change feed drops it

    assert drive(adapter.get_users_for_states(batch)) == drive(example.get_users_for_states(batch))
    t_example = timed(lambda: drive(example.get_users_for_states(batch)), lambda: None, runs)
    t_adapter = timed(lambda: drive(adapter.get_users_for_states(batch)), one_user_changed, runs)
    report("after a one-user blacklist change: 100,000 states seen before", t_example, t_adapter, 2.0, "")

    # 3. Memory per cached user.
    n = 100_000 if quick else 1_000_000
    adapter = PresenceRouterAdapter({"url": "http://127.0.0.1:1", "token": "x", "cache_size": n}, NoModuleApi())
    adapter._replace_cache(1)
    served_from_memory(adapter, always, set(), keep=False)  # nothing kept but the adapter's cache
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for start in range(0, n, 100_000):
        states = [State(f"@member{i}:example.org") for i in range(start, start + 100_000)]
        drive(adapter.get_users_for_states(states))
    del states
    gc.collect()
    per_user = (tracemalloc.get_traced_memory()[0] - before) / n
    tracemalloc.stop()
    assert len(adapter._cache.routes_of) == n
    verdict = "ok" if per_user <= 150 else "MISSED"
    print(f"{'memory: ' + format(n, ',') + ' cached users (the user IDs included)':64} {per_user:8.0f} B/user  target <= 150  {verdict}")


def groups(quick: bool) -> None:
    """The group targets (issue 25): a cached member's get_interested_users
    against a cached ALL answer, and a cold get_users_for_states of 1,000
    members' states against the example router given the same recipients
    (the 10,000 members on its always-send list)."""
    from twisted.internet import defer

    print("\ngroups: one 10,000-member group (answers served from memory)")
    print(f"{'case':64} {'reference':>10} {'adapter':>10} {'ratio':>7}")
    members = [f"@member{i}:example.org" for i in range(10_000)]
    adapter = PresenceRouterAdapter({"url": "http://127.0.0.1:1", "token": "x"}, NoModuleApi())
    adapter._replace_cache(1)
    members_json = json.dumps(members)
    interested = json.dumps({"version": 1, "all": False, "users": members}).encode()
    everyone = json.dumps({"version": 1, "all": True}).encode()

    answers: dict[tuple[str, bytes], bytes] = {}

    def request_deferred(method: str, path: str, payload: bytes, timeout: float) -> Any:
        if path.startswith("interested_users"):
            return defer.succeed((200, everyone if "dash" in path else interested))
        # The answer to a request is made once: the routing API's work
        # (reading the states, writing the answer) is another process's, not
        # the adapter's, and is not timed here.
        body = answers.get((path, payload))
        if body is None:
            n = len(json.loads(payload)["states"])
            held = "known_groups=everyone" in path
            group = '"known":true' if held else '"users":' + members_json
            body = answers[(path, payload)] = (
                '{"version":1,"routes":[{"group":true,"key":"everyone",' + group + ',"states":' + json.dumps(list(range(n))) + "}]}"
            ).encode()
        return defer.succeed((200, body))

    adapter._request_deferred = request_deferred  # type: ignore[method-assign]
    drive(adapter.get_interested_users(members[5]))
    drive(adapter.get_interested_users("@dash:example.org"))
    number = 200 if quick else 20_000
    t_all = min(timeit.repeat(lambda: drive(adapter.get_interested_users("@dash:example.org")), number=number, repeat=5)) / number
    t_member = min(timeit.repeat(lambda: drive(adapter.get_interested_users(members[5])), number=number, repeat=5)) / number
    report("get_interested_users, cached: a member vs an ALL answer", t_all, t_member, 2.0, "(no copy of the 10,000 members per call)")

    example = ExamplePresenceRouter(members, [])
    # A second adapter: the first one told @dash ALL, which makes it a key
    # of every answer (as Synapse needs), unlike the example's.
    adapter = PresenceRouterAdapter({"url": "http://127.0.0.1:1", "token": "x"}, NoModuleApi())
    adapter._replace_cache(1)
    adapter._request_deferred = request_deferred  # type: ignore[method-assign]
    batch = [State(members[i * 10]) for i in range(1000)]
    drive(adapter.get_users_for_states(batch))
    assert drive(adapter.get_users_for_states(batch)) == drive(example.get_users_for_states(batch))
    rounds, runs = (1, 5) if quick else (9, 5)

    def uncached() -> None:  # the members held at this version: asked with known_groups
        adapter._cache.routes_of.clear()

    def fresh() -> None:  # a new version: the members are sent again
        adapter._cache.routes_of.clear()
        adapter._cache.group_routes.clear()

    def example_call() -> None:
        drive(example.get_users_for_states(batch))

    def adapter_call() -> None:
        drive(adapter.get_users_for_states(batch))

    t_example, t_uncached, ratio, worst = alternating(example_call, adapter_call, uncached, rounds, runs)
    report("get_users_for_states, 1,000 members' states, uncached", t_example, t_uncached, 2.0,
           f"(the group's members held: known_groups; median ratio of {rounds} alternating rounds {ratio:.2f}x, worst {worst:.2f}x)", ratio)
    t_example, t_fresh, ratio, _ = alternating(example_call, adapter_call, fresh, rounds, runs)
    print(f"{'  the first miss at a version (the 10,000 members decoded)':64} {t_example * 1e3:8.2f}ms {t_fresh * 1e3:8.2f}ms {ratio:6.2f}x  (no target: once per version)")


def alternating(reference: Any, call: Any, setup: Any, rounds: int, runs: int) -> tuple[float, float, float, float]:
    """Time reference and call (after an untimed setup) in alternating
    rounds of runs each, so that the machine's noise hits both: their median
    times, and the median and worst of the rounds' ratios call/reference."""
    refs, calls, ratios = [], [], []
    for _ in range(rounds):
        refs.append(timed(reference, lambda: None, runs))
        calls.append(timed(call, setup, runs))
        ratios.append(calls[-1] / refs[-1])
    median = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
    return median(refs), median(calls), median(ratios), max(ratios)


def report(name: str, t_example: float, t_adapter: float, target: float, extra: str, ratio: float | None = None) -> None:
    """Print one row; the ratio is the times' unless given (a median of rounds)."""
    if ratio is None:
        ratio = t_adapter / t_example
    verdict = "ok" if ratio <= target else "MISSED"
    print(f"{name:64} {t_example * 1e3:8.2f}ms {t_adapter * 1e3:8.2f}ms {ratio:6.2f}x  target <= {target}x {verdict}  {extra}")


if __name__ == "__main__":
    main()
    costs("--quick" in sys.argv)
    groups("--quick" in sys.argv)
    if "--cold" in sys.argv:
        cold_path(sys.argv[sys.argv.index("--cold") + 1], "--quick" in sys.argv)
