"""Requests of a burst take turns on the event loop (core.turns)."""

from __future__ import annotations

import asyncio

import httpx

from core.turns import Turns


async def test_a_burst_starts_a_few_per_turn_in_the_order_it_asked_with_the_loops_io_read_between() -> None:
    turns = Turns(per_turn=4)
    log: list[str] = []

    async def request(i: int) -> None:
        await turns.wait()
        log.append(f"start {i}")
        if i == 0:  # what the loop reads meanwhile (a database reply) is scheduled like this
            asyncio.get_running_loop().call_soon(log.append, "reply")

    await asyncio.gather(*(request(i) for i in range(10)))
    assert log == [
        "start 0", "start 1", "start 2", "start 3",
        "reply",  # the reply is handled before the rest of the burst, not after all of it
        "start 4", "start 5", "start 6", "start 7",
        "start 8", "start 9",
    ]


async def test_a_request_that_comes_alone_starts_at_once() -> None:
    turns = Turns(per_turn=4)
    for _ in range(3):  # one per turn, as requests arrive on a quiet server
        ran: list[bool] = []
        asyncio.get_running_loop().call_soon(ran.append, True)
        await turns.wait()
        assert ran == []  # it did not wait for a turn of the loop
        await asyncio.sleep(0)


def test_a_gate_left_mid_turn_by_a_closed_loop_admits_on_the_next_loop() -> None:
    """An app outlives the loop it served on (tests, a restarted server); its turn count must not."""
    turns = Turns(per_turn=1)

    async def last_request() -> None:
        await turns.wait()
        asyncio.get_running_loop().stop()  # the loop ends with this turn: its count is never reset

    first = asyncio.new_event_loop()
    first.run_until_complete(last_request())
    first.close()
    second = asyncio.new_event_loop()
    try:
        second.run_until_complete(asyncio.wait_for(turns.wait(), timeout=1))
    finally:
        second.close()


async def test_many_concurrent_requests_are_all_answered(client: httpx.AsyncClient) -> None:
    answers = await asyncio.gather(*(client.get("/healthz") for _ in range(40)))
    assert [a.status_code for a in answers] == [200] * 40
