"""The LangGraph adapter in LangGraph's own agent loop (``create_react_agent``), driven by
LangChain's own fake chat model asking to call a tool, against a real server: allowed runs once
with a conforming receipt; denied never runs and the model sees the reason; approval interrupts
the graph, and resuming after the owner approves runs the tool once."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

pytest.importorskip  # the adapter's dependencies are part of the test environment (ci/)
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel  # noqa: E402
from langchain_core.messages import AIMessage, ToolMessage  # noqa: E402
from langchain_core.tools import tool  # noqa: E402
from langgraph.checkpoint.memory import InMemorySaver  # noqa: E402
from langgraph.types import Command  # noqa: E402

from agentnexus import AgentNexus  # noqa: E402
from agentnexus.langgraph import governed_tool  # noqa: E402
from conftest import Server  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from langgraph.prebuilt import create_react_agent


class ToolCallingFake(GenericFakeChatModel):
    """LangChain's fake chat model, which answers the scripted messages; binding tools is a
    no-op for it (the script already names the calls)."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self


def scripted(tool_name: str, args: dict[str, Any], call_id: str) -> Iterator[AIMessage]:
    return iter(
        [
            AIMessage(content="", tool_calls=[{"name": tool_name, "args": args, "id": call_id, "type": "tool_call"}]),
            AIMessage(content="done"),
        ]
    )


ran: list[dict[str, Any]] = []


@tool
def refund(charge: str, amount_cents: int) -> str:
    """Refund a charge."""
    ran.append({"charge": charge, "amount_cents": amount_cents})
    return f"refunded {amount_cents} on {charge}"


def receipt(server: Server, evaluation_id: str) -> Any:
    r = httpx.get(f"{server.url}/api/v1/evaluations/{evaluation_id}", headers={"Authorization": f"Bearer {server.admin_key}"})
    return r.json()["receipt"]


def agent_for(client: AgentNexus, messages: Iterator[AIMessage], action: str = "stripe.refund") -> Any:
    governed = governed_tool(
        refund, client=client, agent_id="lg-bot", action=action, amount_cents=lambda **a: a["amount_cents"]
    )
    return create_react_agent(ToolCallingFake(messages=messages), [governed], checkpointer=InMemorySaver())


def tool_messages(state: dict[str, Any]) -> list[ToolMessage]:
    return [m for m in state["messages"] if isinstance(m, ToolMessage)]


def test_the_adapter_in_langgraphs_loop(server: Server) -> None:
    client = AgentNexus(server.url, server.agent_key)
    ran.clear()

    # Allowed: runs once, receipt conforms.
    agent = agent_for(client, scripted("refund", {"charge": "ch_1", "amount_cents": 500}, "call_allow"))
    state = agent.invoke({"messages": [("user", "refund ch_1")]}, {"configurable": {"thread_id": "t1"}})
    assert ran == [{"charge": "ch_1", "amount_cents": 500}]
    assert tool_messages(state)[0].content == "refunded 500 on ch_1"
    assert state["messages"][-1].content == "done"

    # Denied: never runs; the model sees why.
    agent = agent_for(client, scripted("refund", {"charge": "ch_x", "amount_cents": 1}, "call_deny"), action="db.delete")
    state = agent.invoke({"messages": [("user", "delete")]}, {"configurable": {"thread_id": "t2"}})
    assert len(ran) == 1
    said = tool_messages(state)[0].content
    assert "Deletes are not for agents" in str(said), said

    # Approval: interrupted with the evaluation, resumed after the owner approves, runs once.
    agent = agent_for(client, scripted("refund", {"charge": "ch_2", "amount_cents": 5000}, "call_big"))
    config: Any = {"configurable": {"thread_id": "t3"}}
    state = agent.invoke({"messages": [("user", "refund ch_2")]}, config)
    (paused,) = state["__interrupt__"]
    evaluation_id = paused.value["evaluation_id"]
    assert paused.value["approval_url"].endswith(f"/approvals/evaluations/{evaluation_id}")
    assert ran == [{"charge": "ch_1", "amount_cents": 500}], "nothing ran while waiting"
    server.approve(evaluation_id)
    state = agent.invoke(Command(resume="approved"), config)
    assert ran[-1] == {"charge": "ch_2", "amount_cents": 5000} and len(ran) == 2
    assert tool_messages(state)[-1].content == "refunded 5000 on ch_2"
    assert (receipt(server, evaluation_id)["outcome"], receipt(server, evaluation_id)["conforms"]) == ("executed", True)
