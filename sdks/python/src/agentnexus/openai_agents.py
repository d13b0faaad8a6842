"""The OpenAI Agents SDK: function tools that AgentNexus governs
(``pip install ./sdks/python[openai-agents]``).

``Governor(client, agent_id=…)`` makes tools with :meth:`Governor.tool`: each call is proposed
with the tool's name as the action (or ``action=``) and its arguments as ``params``.

- ``allow``: the tool runs, and the receipt is reported with the evaluation's ``proposal_hash``.
- ``deny``: the tool does not run; the model gets a tool output saying why.
- ``require_approval``: the tool ``needs_approval``, so the run stops with
  ``result.interruptions`` (the SDK's own pause). Once a person decided in AgentNexus,
  ``state = await governor.resolve(result)`` approves or rejects each interruption in the run
  state as AgentNexus decided (waiting up to ``timeout`` for the decision), and
  ``Runner.run(agent, state)`` goes on: an approved call runs once, a rejected one is reported to
  the model with the reason.

The idempotency key is the model's call id, so the SDK's approval check and the call itself are
the same evaluation.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from agents import FunctionTool, RunContextWrapper, RunResult, RunState, function_tool
from agents.tool_context import ToolContext

from ._client import AsyncAgentNexus
from .models import Evaluation


class Governor:
    """Governs the function tools it makes, for one agent of AgentNexus."""

    def __init__(self, client: AsyncAgentNexus, *, agent_id: str, timeout: float = 600) -> None:
        self.client = client
        self.agent_id = agent_id
        self.timeout = timeout
        # The evaluation of each call that waits for a person, by call id.
        self._waiting: dict[str, str] = {}

    def tool(
        self,
        fn: Callable[..., Any],
        *,
        action: str | None = None,
        resource: Callable[..., str | None] | None = None,
        amount_cents: Callable[..., int | None] | None = None,
    ) -> FunctionTool:
        """A function tool of ``fn`` that runs only when AgentNexus allows it."""

        async def evaluate(params: dict[str, Any], call_id: str, name: str) -> Evaluation:
            return await self.client.evaluate(
                agent_id=self.agent_id,
                action=action or name,
                params=params,
                resource=resource(**params) if resource else None,
                amount_cents=amount_cents(**params) if amount_cents else None,
                idempotency_key=f"openai-agents-{call_id}",
            )

        async def needs_approval(_ctx: RunContextWrapper[Any], params: dict[str, Any], call_id: str) -> bool:
            ev = await evaluate(params, call_id, governed.name)
            if ev.is_final:
                return False
            self._waiting[call_id] = ev.evaluation_id
            return True

        governed = function_tool(fn, needs_approval=needs_approval)
        run_tool = governed.on_invoke_tool

        async def on_invoke(ctx: ToolContext[Any], arguments: str) -> Any:
            params = json.loads(arguments or "{}")
            ev = await evaluate(params, ctx.tool_call_id, governed.name)
            if not ev.is_final:
                ev = await self.client.wait_for_decision(ev.evaluation_id, timeout=self.timeout)
            if not ev.may_execute:
                return f"Not allowed by AgentNexus ({ev.status}): {ev.reason or ev.status}. Do not retry this call."
            try:
                out = await run_tool(ctx, arguments)
            except BaseException:
                await self.client.report_receipt(ev.evaluation_id, "failed", ev.proposal_hash)
                raise
            await self.client.report_receipt(ev.evaluation_id, "executed", ev.proposal_hash)
            return out

        governed.on_invoke_tool = on_invoke
        return governed

    async def resolve(self, result: RunResult) -> RunState[Any]:
        """The run's state with each interruption approved or rejected as AgentNexus decided
        (waiting for the decision); run it again with ``Runner.run(agent, state)``."""
        state = result.to_state()
        for item in result.interruptions:
            call_id = getattr(item.raw_item, "call_id", None)
            evaluation_id = self._waiting.get(call_id) if isinstance(call_id, str) else None
            if evaluation_id is None:
                continue
            ev = await self.client.wait_for_decision(evaluation_id, timeout=self.timeout)
            if ev.may_execute:
                state.approve(item)
            else:
                state.reject(
                    item,
                    rejection_message=f"Not allowed by AgentNexus ({ev.status}): {ev.reason or ev.status}.",
                )
        return state
