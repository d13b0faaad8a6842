"""``@governed`` against a real server: allowed runs and reports a conforming receipt, denied
never runs, approval waits for the person and runs once, a failure is reported as failed."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
import pytest

from agentnexus import AgentNexus, AsyncAgentNexus, Denied, governed
from conftest import Server


def receipt_of(server: Server, evaluation_id: str) -> Any:
    r = httpx.get(
        f"{server.url}/api/v1/evaluations/{evaluation_id}",
        headers={"Authorization": f"Bearer {server.admin_key}"},
    )
    return r.json().get("receipt")


def last_evaluation(server: Server, agent_id: str) -> str:
    r = httpx.get(
        f"{server.url}/api/v1/evaluations",
        params={"agent_id": agent_id, "limit": 1},
        headers={"Authorization": f"Bearer {server.admin_key}"},
    )
    return str(r.json()["evaluations"][0]["evaluation_id"])


def test_governed_functions(server: Server) -> None:
    client = AgentNexus(server.url, server.agent_key)
    ran: list[dict[str, Any]] = []

    @governed(client=client, agent_id="gov-bot", action="stripe.refund", amount_cents=lambda **kw: kw["amount_cents"])
    def refund(charge: str, amount_cents: int) -> str:
        ran.append({"charge": charge, "amount_cents": amount_cents})
        return f"refunded {charge}"

    assert refund(charge="ch_1", amount_cents=500) == "refunded ch_1"
    assert ran == [{"charge": "ch_1", "amount_cents": 500}]
    receipt = receipt_of(server, last_evaluation(server, "gov-bot"))
    assert (receipt["outcome"], receipt["conforms"]) == ("executed", True), receipt

    # Approval required: waits for the owner, then runs once.
    threading.Timer(0.5, lambda: server.approve(last_evaluation(server, "gov-bot"))).start()
    assert refund(charge="ch_2", amount_cents=5000) == "refunded ch_2"
    assert len(ran) == 2

    @governed(client=client, agent_id="gov-bot", action="db.delete")
    def delete(table: str) -> None:
        ran.append({"deleted": table})

    with pytest.raises(Denied) as denied:
        delete(table="orders")
    assert denied.value.reason == "Deletes are not for agents"
    assert len(ran) == 2, "a denied call never runs"

    @governed(client=client, agent_id="gov-bot", action="stripe.refund")
    def broken(charge: str) -> None:
        raise RuntimeError("the card network is down")

    with pytest.raises(RuntimeError):
        broken(charge="ch_3")
    receipt = receipt_of(server, last_evaluation(server, "gov-bot"))
    assert receipt["outcome"] == "failed", receipt
    client.close()


def test_governed_coroutines(server: Server) -> None:
    async def run() -> None:
        async with AsyncAgentNexus(server.url, server.agent_key) as client:

            @governed(client=client, agent_id="async-bot", action="stripe.refund", amount_cents=lambda **kw: kw["cents"])
            async def refund(cents: int) -> int:
                return cents

            assert await refund(cents=7) == 7
            loop = asyncio.get_running_loop()
            loop.call_later(0.5, lambda: threading.Thread(target=lambda: server.approve(last_evaluation(server, "async-bot"), "reject")).start())
            with pytest.raises(Denied) as rejected:
                await refund(cents=9000)
            assert rejected.value.evaluation.status == "rejected"

    asyncio.run(run())
    with pytest.raises(TypeError):
        governed(client=AgentNexus(server.url, server.agent_key), agent_id="a", action="b")(_coroutine)


async def _coroutine() -> None:
    return None
