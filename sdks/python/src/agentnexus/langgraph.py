"""LangGraph / LangChain: a tool that AgentNexus governs (``pip install ./sdks/python[langgraph]``).

``governed_tool(tool, client=…, agent_id=…)`` wraps a LangChain tool for a LangGraph agent
(``ToolNode``, ``create_react_agent``, ``create_agent``): each call is proposed with the tool's
name as the action (or ``action=``) and its arguments as ``params``.

- ``allow``: the tool runs, and the receipt is reported with the evaluation's ``proposal_hash``.
- ``deny`` (or a rejection, or an expiry): the tool does not run; the model gets a tool message
  saying why.
- ``require_approval``: by default the graph is **interrupted** (``langgraph.types.interrupt``)
  with ``{"evaluation_id", "approval_url", "reason", "tool", "args"}``; resume it with
  ``Command(resume=…)`` once a person decided (the decision itself is read from AgentNexus,
  whatever the resume value). With ``wait=True`` the tool blocks until the decision instead.

The idempotency key is the model's tool-call id, so the re-run LangGraph makes on resume is the
same evaluation, and the tool runs at most once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langchain_core.messages import ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from langgraph.types import interrupt
from pydantic import ConfigDict

from ._client import AgentNexus
from .models import Evaluation


class GovernedTool(BaseTool):
    """A LangChain tool that runs only when AgentNexus allows it."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    inner: BaseTool
    client: AgentNexus
    agent_id: str
    action: str
    wait: bool = False
    timeout: float = 600
    resource: Callable[..., str | None] | None = None
    amount_cents: Callable[..., int | None] | None = None

    def _run(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - invoke is the way in
        raise NotImplementedError("GovernedTool runs through invoke")

    def _decide(self, args: dict[str, Any], call_id: str | None) -> Evaluation:
        key = f"langgraph-{call_id}" if call_id else None
        ev = self.client.evaluate(
            agent_id=self.agent_id,
            action=self.action,
            params=args,
            resource=self.resource(**args) if self.resource else None,
            amount_cents=self.amount_cents(**args) if self.amount_cents else None,
            idempotency_key=key,
        )
        if ev.is_final:
            return ev
        if not self.wait:
            interrupt(
                {
                    "evaluation_id": ev.evaluation_id,
                    "approval_url": self.client.approval_page_url(ev.evaluation_id),
                    "reason": ev.reason,
                    "tool": self.inner.name,
                    "args": args,
                }
            )
        # Resumed (or waiting by design): the decision is AgentNexus's.
        return self.client.wait_for_decision(ev.evaluation_id, timeout=self.timeout)

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        is_call = isinstance(input, dict) and input.get("type") == "tool_call"
        call_id: str | None = input.get("id") if is_call else None
        args: dict[str, Any] = dict(input["args"] if is_call else input) if isinstance(input, dict) else {"input": input}
        ev = self._decide(args, call_id)
        if not ev.may_execute:
            said = f"Not allowed by AgentNexus ({ev.status}): {ev.reason or ev.status}. Do not retry this call."
            if is_call:
                return ToolMessage(content=said, tool_call_id=call_id or "", name=self.name, status="error")
            return said
        try:
            result = self.inner.invoke(input, config, **kwargs)
        except BaseException:
            self.client.report_receipt(ev.evaluation_id, "failed", ev.proposal_hash)
            raise
        self.client.report_receipt(ev.evaluation_id, "executed", ev.proposal_hash)
        return result


def governed_tool(
    tool: BaseTool,
    *,
    client: AgentNexus,
    agent_id: str,
    action: str | None = None,
    wait: bool = False,
    timeout: float = 600,
    resource: Callable[..., str | None] | None = None,
    amount_cents: Callable[..., int | None] | None = None,
) -> GovernedTool:
    """Wraps ``tool`` so AgentNexus decides each call (see the module's description).
    ``resource`` and ``amount_cents`` compute those fields from the call's arguments."""
    return GovernedTool(
        name=tool.name,
        description=tool.description,
        args_schema=tool.args_schema,
        inner=tool,
        client=client,
        agent_id=agent_id,
        action=action or tool.name,
        wait=wait,
        timeout=timeout,
        resource=resource,
        amount_cents=amount_cents,
    )
