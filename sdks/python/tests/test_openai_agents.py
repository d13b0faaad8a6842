"""The OpenAI Agents SDK adapter in the SDK's own run loop (``Runner.run``), driven by a custom
``Model`` that asks to call a tool, against a real server: allowed runs once with a conforming
receipt; denied never runs and the model sees the reason; approval stops the run with the SDK's
own interruptions, and after the owner approves, resolving and running again runs the tool once
(after a rejection, never)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx
from agents import Agent, Model, ModelResponse, Runner, Usage, set_tracing_disabled
from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText

from agentnexus import AsyncAgentNexus
from agentnexus.openai_agents import Governor
from conftest import Server


class Scripted(Model):
    """A model that first asks to call one tool, then answers with what the tool said."""

    def __init__(self, tool: str, arguments: str, call_id: str) -> None:
        self.call = ResponseFunctionToolCall(arguments=arguments, call_id=call_id, name=tool, type="function_call", id=f"fc_{call_id}")
        self.seen: list[Any] = []

    async def get_response(self, system_instructions: Any, input: Any, *args: Any, **kwargs: Any) -> ModelResponse:
        self.seen.append(input)
        outputs = [i for i in input if isinstance(i, dict) and i.get("type") == "function_call_output"] if isinstance(input, list) else []
        if not outputs:
            return ModelResponse(output=[self.call], usage=Usage(), response_id=None)
        said = str(outputs[-1].get("output"))
        text = ResponseOutputText(annotations=[], text=f"tool said: {said}", type="output_text")
        message = ResponseOutputMessage(id="msg_1", content=[text], role="assistant", status="completed", type="message")
        return ModelResponse(output=[message], usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise NotImplementedError


# No traces leave the machine.
set_tracing_disabled(True)

ran: list[int] = []


def refund(charge: str, amount_cents: int) -> str:
    """Refund a charge."""
    ran.append(amount_cents)
    return f"refunded {amount_cents} on {charge}"


def receipt(server: Server, evaluation_id: str) -> Any:
    r = httpx.get(f"{server.url}/api/v1/evaluations/{evaluation_id}", headers={"Authorization": f"Bearer {server.admin_key}"})
    return r.json()["receipt"]


def test_the_adapter_in_the_agents_sdks_loop(server: Server) -> None:
    async def run() -> None:
        async with AsyncAgentNexus(server.url, server.agent_key) as client:
            governor = Governor(client, agent_id="oa-bot", timeout=30)

            def agent(model: Model, action: str = "stripe.refund") -> Agent[Any]:
                tool = governor.tool(refund, action=action, amount_cents=lambda **a: a["amount_cents"])
                return Agent(name="payments", model=model, tools=[tool])

            ran.clear()
            result = await Runner.run(agent(Scripted("refund", '{"charge": "ch_1", "amount_cents": 500}', "c1")), "refund ch_1")
            assert ran == [500]
            assert result.final_output == "tool said: refunded 500 on ch_1"

            result = await Runner.run(agent(Scripted("refund", '{"charge": "ch_x", "amount_cents": 1}', "c2"), action="db.delete"), "delete")
            assert ran == [500], "a denied call never runs"
            assert "Deletes are not for agents" in str(result.final_output), result.final_output

            for decision, runs in (("approve", [500, 5000]), ("reject", [500, 5000])):
                call = f"c3-{decision}"
                a = agent(Scripted("refund", '{"charge": "ch_2", "amount_cents": 5000}', call))
                result = await Runner.run(a, "refund ch_2")
                assert len(result.interruptions) == 1 and ran == [500] + ([5000] if decision == "reject" else [])
                evaluation_id = governor._waiting[call]
                threading.Timer(0.3, server.approve, args=(evaluation_id, decision)).start()
                state = await governor.resolve(result)
                result = await Runner.run(a, state)
                assert ran == runs, (decision, ran)
                if decision == "approve":
                    assert result.final_output == "tool said: refunded 5000 on ch_2"
                    r = receipt(server, evaluation_id)
                    assert (r["outcome"], r["conforms"]) == ("executed", True)
                else:
                    assert "rejected" in str(result.final_output), result.final_output

    asyncio.run(run())
