"""Warm-cache adapter against the seed's example presence router, in one process.

Run: .venv/bin/python bench/adapter_bench.py [--quick]
Prints time per call of each and the ratio (adapter / example); the target
is <= 1.5x. Both run in the same process on the same inputs, so the ratio
holds on a noisy machine where absolute times do not.
"""

from __future__ import annotations

import asyncio
import sys
import timeit
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
        idx = [i for i, s in enumerate(payload["states"]) if s["user_id"] not in blacklisted]
        return {"version": 1, "routes": [{"users": always, "states": idx}]}

    adapter._request = fake_request  # type: ignore[method-assign]
    batches = {n: [State(blacklisted[0] if i % 50 == 0 else f"@user{i}:example.org") for i in range(n)] for n in (1, 100, 5000)}
    # Warm the cache the way Synapse would: a first call per user.
    asyncio.run(adapter.get_users_for_states(batches[5000]))
    asyncio.run(adapter.get_users_for_states(batches[1]))
    for user in ("@dash3:example.org", "@bob:example.org"):
        asyncio.run(adapter.get_interested_users(user))
    for n, batch in batches.items():
        assert drive(adapter.get_users_for_states(batch)) == drive(example.get_users_for_states(batch)), n

    cases = [
        ("get_interested_users (listed)", lambda r: drive(r.get_interested_users("@dash3:example.org"))),
        ("get_interested_users (unlisted)", lambda r: drive(r.get_interested_users("@bob:example.org"))),
    ] + [(f"get_users_for_states ({n} states)", (lambda b: lambda r: drive(r.get_users_for_states(b)))(b)) for n, b in batches.items()]
    print(f"{'case':36} {'example':>12} {'adapter':>12} {'ratio':>7}  target <= 1.5x")
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
        print(f"{name:36} {times['example'] * 1e6:10.2f}us {times['adapter'] * 1e6:10.2f}us {ratio:6.2f}x  {verdict}")
    print(f"worst ratio: {worst:.2f}x")


if __name__ == "__main__":
    main()
