"""The CrewAI adapter in CrewAI's own agent loop (``Crew.kickoff``), driven by a ``BaseLLM`` that
asks for a tool with a native function call, against a real server: allowed runs once with a
conforming receipt; denied never runs and the model reads the reason in its next prompt;
approval stops the run with ``ApprovalRequired``, the owner approves through the approval link
it carries, and the next kickoff runs the tool once (after a rejection, never); ``wait=True``
blocks in the hook until the owner approved; an unreachable AgentNexus runs nothing. And
docs/integrations/crewai.md, run as written.

CrewAI lives in a virtual environment of its own (ci/requirements-sdk-crewai.txt), so the SDK's
main run leaves this file out (``--ignore``); here a missing CrewAI is an import error."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

# No telemetry or traces leave the machine; set before CrewAI is imported.
for _name, _value in {
    "OTEL_SDK_DISABLED": "true",
    "CREWAI_DISABLE_TELEMETRY": "true",
    "CREWAI_DISABLE_TRACKING": "true",
    "CREWAI_TRACING_ENABLED": "false",
}.items():
    os.environ[_name] = _value

import httpx  # noqa: E402
import pytest  # noqa: E402
from crewai import Agent, Crew, CrewOutput, Task  # noqa: E402
from crewai.llms.base_llm import BaseLLM  # noqa: E402
from crewai.tools import tool  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402

from agentnexus import AgentNexus  # noqa: E402
from agentnexus.crewai import ApprovalRequired, Guard  # noqa: E402
from conftest import Server  # noqa: E402

if TYPE_CHECKING:
    from crewai.agents.agent_builder.base_agent import BaseAgent
    from crewai.tools.base_tool import BaseTool
    from crewai.utilities.types import LLMMessage


class Scripted(BaseLLM):
    """A model that asks to call one tool, then answers with what the tool said: with a native
    function call, or (``native=False``) in CrewAI's text format (Thought / Action / Action
    Input, then Final Answer). It keeps every prompt it was given."""

    tool: str = "refund"
    arguments: dict[str, Any] = Field(default_factory=dict)
    native: bool = True
    prompts: list[list[dict[str, Any]]] = Field(default_factory=list)

    def call(
        self,
        messages: str | list[LLMMessage],
        tools: list[dict[str, BaseTool]] | None = None,
        callbacks: list[Any] | None = None,
        available_functions: dict[str, Any] | None = None,
        from_task: Task | None = None,
        from_agent: BaseAgent | None = None,
        response_model: type[BaseModel] | None = None,
    ) -> Any:
        prompt: list[dict[str, Any]] = [{"role": "user", "content": messages}] if isinstance(messages, str) else [dict(m) for m in messages]
        self.prompts.append(prompt)
        said = observations(prompt, self.native)
        if said:
            return f"tool said: {said[-1]}" if self.native else f"Thought: I know it now.\nFinal Answer: tool said: {said[-1]}"
        if self.native:
            call_id = f"call_{len(self.prompts)}"
            return [{"id": call_id, "type": "function", "function": {"name": self.tool, "arguments": json.dumps(self.arguments)}}]
        return f"Thought: I use the tool.\nAction: {self.tool}\nAction Input: {json.dumps(self.arguments)}"

    def supports_function_calling(self) -> bool:
        return self.native

    def get_input_tokens_count(self, messages: Any, tools: Any = None, response_model: Any = None) -> int:
        return 1


def observations(prompt: list[dict[str, Any]], native: bool) -> list[str]:
    """What the tools said, as the model reads it in a prompt: tool messages (native calls), or
    the Observation CrewAI appends to the model's Action (text format)."""
    if native:
        return [str(m["content"]) for m in prompt if m.get("role") == "tool"]
    said = [str(m["content"]) for m in prompt if m.get("role") == "assistant" and "\nObservation:" in str(m["content"])]
    return [s.split("\nObservation:", 1)[1].strip() for s in said]


ran: list[dict[str, Any]] = []


@tool("refund")
def refund(charge: str, amount_cents: int) -> str:
    """Refund a charge."""
    ran.append({"charge": charge, "amount_cents": amount_cents})
    return f"refunded {amount_cents} on {charge}"


def crew_for(model: Scripted) -> Crew:
    agent = Agent(role="payments", goal="Settle refunds", backstory="A support agent.", llm=model, tools=[refund])
    task = Task(description="Refund what the customer asks", expected_output="What was done", agent=agent)
    return Crew(agents=[agent], tasks=[task])


def kickoff(crew: Crew) -> str:
    """Runs the crew; its final answer."""
    out = crew.kickoff()
    assert isinstance(out, CrewOutput), out
    return out.raw


def guard_for(client: AgentNexus, agent_id: str, action: str = "stripe.refund", **options: Any) -> Guard:
    return Guard(client, agent_id=agent_id, **options).govern(
        "refund", action=action, amount_cents=lambda **args: args["amount_cents"]
    )


def evaluations(server: Server, agent_id: str, status: str | None = None) -> list[dict[str, Any]]:
    params = {"agent_id": agent_id, **({"status": status} if status else {})}
    r = httpx.get(f"{server.url}/api/v1/evaluations", params=params, headers={"Authorization": f"Bearer {server.admin_key}"})
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["evaluations"]
    return found


def evaluation(server: Server, evaluation_id: str) -> Any:
    r = httpx.get(f"{server.url}/api/v1/evaluations/{evaluation_id}", headers={"Authorization": f"Bearer {server.admin_key}"})
    assert r.status_code == 200, r.text
    return r.json()


def tool_messages(model: Scripted) -> list[str]:
    """What the tools said, in the model's last prompt."""
    return observations(model.prompts[-1], model.native)


@pytest.fixture
def client(server: Server) -> Any:
    ran.clear()
    with AgentNexus(server.url, server.agent_key) as c:
        yield c


@pytest.mark.parametrize("native", [True, False], ids=["function-calls", "text-actions"])
def test_an_allowed_call_runs_once_with_a_conforming_receipt(server: Server, client: AgentNexus, native: bool) -> None:
    agent_id = f"crew-{uuid.uuid4().hex[:6]}"
    model = Scripted(model="scripted", arguments={"charge": "ch_1", "amount_cents": 500}, native=native)
    with guard_for(client, agent_id):
        out = kickoff(crew_for(model))
    assert ran == [{"charge": "ch_1", "amount_cents": 500}]
    assert tool_messages(model) == ["refunded 500 on ch_1"]
    assert out == "tool said: refunded 500 on ch_1"
    (ev,) = evaluations(server, agent_id)
    ev = evaluation(server, ev["evaluation_id"])
    assert ev["status"] == "allowed"
    assert (ev["receipt"]["outcome"], ev["receipt"]["conforms"]) == ("executed", True), ev["receipt"]


@pytest.mark.parametrize("native", [True, False], ids=["function-calls", "text-actions"])
def test_a_denied_call_never_runs_and_the_model_reads_why(server: Server, client: AgentNexus, native: bool) -> None:
    agent_id = f"crew-{uuid.uuid4().hex[:6]}"
    model = Scripted(model="scripted", arguments={"charge": "ch_x", "amount_cents": 1}, native=native)
    with guard_for(client, agent_id, action="db.delete"):
        out = kickoff(crew_for(model))
    assert ran == [], "a denied call never runs"
    (said,) = tool_messages(model)
    assert said == "Not allowed by AgentNexus (denied): Deletes are not for agents. Do not retry this call.", said
    assert out == f"tool said: {said}"
    (ev,) = evaluations(server, agent_id)
    assert evaluation(server, ev["evaluation_id"])["receipt"] is None


@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_approval_stops_the_run_and_the_next_kickoff_runs_it_once(server: Server, client: AgentNexus, decision: str) -> None:
    agent_id = f"crew-{uuid.uuid4().hex[:6]}"
    model = Scripted(model="scripted", arguments={"charge": "ch_2", "amount_cents": 5000})
    crew = crew_for(model)
    guard = guard_for(client, agent_id, timeout=30)
    with guard:
        with pytest.raises(ApprovalRequired) as stopped:
            crew.kickoff()
        pause = stopped.value
        assert ran == [], "nothing runs while a person decides"
        assert (pause.tool, pause.arguments, pause.reason) == ("refund", {"charge": "ch_2", "amount_cents": 5000}, "Large refunds need an owner")
        assert pause.approval_url == f"{server.url}/approvals/evaluations/{pause.evaluation_id}"
        assert evaluation(server, pause.evaluation_id)["status"] == "pending"

        server.approve_at(pause.approval_url, decision)
        decided = guard.wait_for_decision(pause)
        assert decided.status == ("approved" if decision == "approve" else "rejected")

        out = kickoff(crew)
    (only,) = evaluations(server, agent_id)
    assert only["evaluation_id"] == pause.evaluation_id, "the resumed call is the same evaluation"
    receipt = evaluation(server, pause.evaluation_id)["receipt"]
    if decision == "approve":
        assert ran == [{"charge": "ch_2", "amount_cents": 5000}], "the approved call ran once"
        assert out == "tool said: refunded 5000 on ch_2"
        assert (receipt["outcome"], receipt["conforms"]) == ("executed", True), receipt
        assert decided.proposal_hash == pause.evaluation.proposal_hash
    else:
        assert ran == []
        assert out.startswith("tool said: Not allowed by AgentNexus (rejected)"), out
        assert receipt is None


def test_waiting_in_the_hook_runs_the_call_once_approved(server: Server, client: AgentNexus) -> None:
    agent_id = f"crew-{uuid.uuid4().hex[:6]}"
    model = Scripted(model="scripted", arguments={"charge": "ch_3", "amount_cents": 7000})

    def approve_when_pending() -> None:
        for _ in range(300):
            pending = evaluations(server, agent_id, "pending")
            if pending:
                server.approve_at(client.approval_page_url(pending[0]["evaluation_id"]))
                return
            time.sleep(0.05)

    approver = threading.Thread(target=approve_when_pending)
    approver.start()
    with guard_for(client, agent_id, wait=True, timeout=30):
        out = kickoff(crew_for(model))
    approver.join(timeout=30)
    assert ran == [{"charge": "ch_3", "amount_cents": 7000}]
    assert out == "tool said: refunded 7000 on ch_3"
    (ev,) = evaluations(server, agent_id)
    ev = evaluation(server, ev["evaluation_id"])
    assert ev["status"] == "approved"
    assert (ev["receipt"]["outcome"], ev["receipt"]["conforms"]) == ("executed", True), ev["receipt"]


def test_an_unreachable_agentnexus_runs_nothing(server: Server) -> None:
    ran.clear()
    model = Scripted(model="scripted", arguments={"charge": "ch_4", "amount_cents": 100})
    with AgentNexus("http://127.0.0.1:9", "anx_unreachable", retries=0) as nowhere:
        with guard_for(nowhere, "crew-nowhere"):
            kickoff(crew_for(model))
    assert ran == []
    (said,) = tool_messages(model)
    assert said.startswith("AgentNexus could not be asked"), said


def test_the_crewai_page(server: Server) -> None:
    """docs/integrations/crewai.md run as written (the server's URL and an agent key put in for
    the placeholders, this file's model as ``model``), the owner approving from the dashboard
    while the snippet waits."""
    ran.clear()
    page = Path(__file__).resolve().parents[3] / "docs" / "integrations" / "crewai.md"
    (block,) = re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
    agent_id = f"crew-page-{uuid.uuid4().hex[:6]}"
    code = block.replace("http://127.0.0.1:8080", server.url).replace("anx_…", server.agent_key)
    code = code.replace('"support-bot"', f'"{agent_id}"')

    def approve_when_pending() -> None:
        for _ in range(300):
            pending = evaluations(server, agent_id, "pending")
            if pending:
                server.approve(pending[0]["evaluation_id"])
                return
            time.sleep(0.05)

    approver = threading.Thread(target=approve_when_pending)
    approver.start()
    model = Scripted(model="scripted", arguments={"charge": "ch_2", "amount_cents": 5000})
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(page), "exec"), {"model": model, "__name__": "__main__"})
    approver.join(timeout=30)
    # CrewAI itself warns that its events do not pair up when a HookAborted stopped a run (it
    # emits no agent_execution_error for one); everything else is what the snippet printed.
    printed = re.sub(r"\[CrewAIEventsBus\] Warning: Event pairing mismatch\.[^\n]*\n'[^\n]*\n", "", out.getvalue()).splitlines()
    assert printed == ["waiting for a person: Large refunds need an owner", "tool said: refunded 5000 on ch_2"], out.getvalue()
