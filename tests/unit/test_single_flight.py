"""SingleFlight: one call per key at a time, its result or error shared by every caller."""

import asyncio

import pytest

from services.common.single_flight import SingleFlight


class Calls:
    def __init__(self) -> None:
        self.started: list[str] = []
        self.release = asyncio.Event()

    async def slow(self, key: str) -> str:
        self.started.append(key)
        await self.release.wait()
        return f"result of {key}"


def test_callers_of_one_key_share_one_call_and_other_keys_get_their_own() -> None:
    async def go() -> tuple[list[str], list[str], int]:
        flight: SingleFlight[str, str] = SingleFlight()
        calls = Calls()
        waiting = [
            asyncio.ensure_future(flight.run(key, lambda key=key: calls.slow(key)))
            for key in ("a", "a", "b", "a")
        ]
        await asyncio.sleep(0)
        calls.release.set()
        results = await asyncio.gather(*waiting)
        return results, calls.started, len(flight)

    results, started, in_flight = asyncio.run(go())
    assert results == ["result of a", "result of a", "result of b", "result of a"]
    assert sorted(started) == ["a", "b"]
    assert in_flight == 0


def test_an_error_reaches_every_caller_and_the_next_call_runs_anew() -> None:
    async def go() -> tuple[list[BaseException | str], str]:
        flight: SingleFlight[str, str] = SingleFlight()
        attempts = 0

        async def flaky() -> str:
            nonlocal attempts
            attempts += 1
            await asyncio.sleep(0)
            if attempts == 1:
                raise ConnectionError("down")
            return "up"

        shared = await asyncio.gather(
            flight.run("k", flaky), flight.run("k", flaky), return_exceptions=True
        )
        return shared, await flight.run("k", flaky)

    shared, later = asyncio.run(go())
    assert [type(outcome) for outcome in shared] == [ConnectionError, ConnectionError]
    assert later == "up"


def test_a_cancelled_caller_does_not_cancel_the_call_the_others_wait_for() -> None:
    async def go() -> str:
        flight: SingleFlight[str, str] = SingleFlight()
        calls = Calls()
        first = asyncio.ensure_future(flight.run("a", lambda: calls.slow("a")))
        second = asyncio.ensure_future(flight.run("a", lambda: calls.slow("a")))
        await asyncio.sleep(0)
        first.cancel()
        calls.release.set()
        with pytest.raises(asyncio.CancelledError):
            await first
        return await second

    assert asyncio.run(go()) == "result of a"
