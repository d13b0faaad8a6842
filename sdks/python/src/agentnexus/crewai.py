"""CrewAI: tool calls that AgentNexus governs, through CrewAI's own tool-call hooks
(``pip install ./sdks/python[crewai]``).

``guard = Guard(client, agent_id=…)`` registers a before- and an after-tool-call hook
(``crewai.hooks``) while it is entered (``with guard:``, or ``guard.register()``). Every tool call
of every agent is then proposed to AgentNexus first, with the tool's name as the action (or the
``action=`` given with :meth:`Guard.govern`) and its arguments as ``params``:

- ``allow``: the tool runs, and the after-tool-call hook reports the receipt with the
  evaluation's ``proposal_hash`` (``executed``, or ``failed`` when the tool raised).
- ``deny`` (or a person's rejection, or an expiry): the before hook blocks the call (returns
  ``False``), so the tool never runs; the after hook replaces CrewAI's "blocked" message with the
  reason, which is what the model reads.
- ``require_approval``: by default the run **stops** with :class:`ApprovalRequired`, a
  ``crewai.hooks.HookAborted`` (the stop CrewAI passes through every layer: no retry, no
  fallback), carrying ``evaluation_id``, ``approval_url``, ``reason``, ``tool`` and ``arguments``;
  ``crew.kickoff()`` raises it. Once a person decided, ``guard.wait_for_decision(pause)`` returns
  the decision (it long-polls AgentNexus), and ``crew.kickoff()`` again: when the model asks for
  the same call (same tool, same arguments), it is that evaluation, not a new one, so an
  approved call runs once and a rejected one is refused with the reason. With ``wait=True``
  the before hook blocks until the decision instead (up to ``timeout`` seconds; after that the
  call is refused as still waiting).

The hooks fail closed: if AgentNexus cannot be asked, the call does not run and the model is
told why (CrewAI ignores an exception raised by a hook, so the guard never lets one escape).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from crewai.hooks import (
    HookAborted,
    ToolCallHookContext,
    register_after_tool_call_hook,
    register_before_tool_call_hook,
    unregister_after_tool_call_hook,
    unregister_before_tool_call_hook,
)
from crewai.tools.tool_failure import ToolFailure
from crewai.utilities.string_utils import sanitize_tool_name

from ._client import AgentNexus
from .errors import StillPending
from .models import Evaluation

log = logging.getLogger(__name__)

# What CrewAI says (and runs the after hooks with) when a before hook blocked a call, and what it
# makes of a tool that raised.
_BLOCKED = "Tool execution blocked by hook."
_RAISED = "Error executing tool"


class ApprovalRequired(HookAborted):
    """The run stopped: a person has to decide this tool call in AgentNexus first.

    It is CrewAI's own ``HookAborted``, so ``crew.kickoff()`` (or ``agent.kickoff()``) raises it
    as it is. Show ``approval_url`` to whoever decides; then ``guard.wait_for_decision(pause)``
    and kick off again."""

    def __init__(self, evaluation: Evaluation, approval_url: str, tool: str, arguments: dict[str, Any]) -> None:
        reason = evaluation.reason or "approval required"
        super().__init__(reason=f"AgentNexus is waiting for a person: {reason}", source="agentnexus")
        self.evaluation = evaluation
        self.evaluation_id = evaluation.evaluation_id
        self.approval_url = approval_url
        self.reason = reason
        self.tool = tool
        self.arguments = arguments


@dataclass(frozen=True)
class _Rule:
    action: str | None = None
    resource: Callable[..., str | None] | None = None
    amount_cents: Callable[..., int | None] | None = None


@dataclass
class _Call:
    """What the before hook decided for one call, for the after hook of the same call."""

    evaluation: Evaluation | None
    runs: bool
    said: str | None = None
    pause: ApprovalRequired | None = None


class Guard:
    """Governs the tool calls of CrewAI agents, for one agent of AgentNexus."""

    def __init__(self, client: AgentNexus, *, agent_id: str, wait: bool = False, timeout: float = 600) -> None:
        self.client = client
        self.agent_id = agent_id
        self.wait = wait
        self.timeout = timeout
        self._rules: dict[str, _Rule] = {}
        self._lock = threading.Lock()
        # The before hook's decision for each call in flight, by its argument dict (CrewAI hands
        # the same dict to the before and the after hook of one call).
        self._calls: dict[int, tuple[dict[str, Any], _Call]] = {}
        # Calls stopped for a person, by tool and arguments: asked again, they are that evaluation.
        self._held: dict[str, Evaluation] = {}
        self._registered = False

    def govern(
        self,
        tool: str,
        *,
        action: str | None = None,
        resource: Callable[..., str | None] | None = None,
        amount_cents: Callable[..., int | None] | None = None,
    ) -> "Guard":
        """How calls of the tool named ``tool`` are proposed: ``action`` (the tool's name by
        default), and ``resource`` / ``amount_cents`` computed from the call's arguments."""
        self._rules[_name(tool)] = _Rule(action=action, resource=resource, amount_cents=amount_cents)
        return self

    # Registration with CrewAI.

    def register(self) -> None:
        """Registers the guard's hooks with CrewAI (global: every agent, crew and tool)."""
        if not self._registered:
            register_before_tool_call_hook(self.before_tool_call)
            register_after_tool_call_hook(self.after_tool_call)
            self._registered = True

    def unregister(self) -> None:
        if self._registered:
            unregister_before_tool_call_hook(self.before_tool_call)
            unregister_after_tool_call_hook(self.after_tool_call)
            self._registered = False

    def __enter__(self) -> "Guard":
        self.register()
        return self

    def __exit__(self, *_: object) -> None:
        self.unregister()

    def wait_for_decision(self, pause: ApprovalRequired, timeout: float | None = None) -> Evaluation:
        """Waits until a person decided the stopped call (``StillPending`` after ``timeout``,
        the guard's by default); kick the crew off again afterwards."""
        return self.client.wait_for_decision(pause.evaluation_id, timeout=self.timeout if timeout is None else timeout)

    # The hooks.

    def before_tool_call(self, ctx: ToolCallHookContext) -> bool | None:
        """CrewAI's before-tool-call hook: ``False`` blocks the call."""
        try:
            call = self._decide(ctx)
        except Exception as e:  # CrewAI would ignore it and run the tool: fail closed instead.
            log.warning("AgentNexus could not decide %s: %s", ctx.tool_name, e)
            call = _Call(evaluation=None, runs=False, said=f"AgentNexus could not be asked ({e}); the call did not run.")
        with self._lock:
            self._calls[id(ctx.tool_input)] = (ctx.tool_input, call)
        return None if call.runs else False

    def after_tool_call(self, ctx: ToolCallHookContext) -> str | None:
        """CrewAI's after-tool-call hook: the reason for a blocked call, the receipt for one
        that ran, the stop for one that waits for a person."""
        with self._lock:
            entry = self._calls.get(id(ctx.tool_input))
            if entry is None or entry[0] is not ctx.tool_input:
                return None
            del self._calls[id(ctx.tool_input)]
        call = entry[1]
        if call.pause is not None:
            raise call.pause
        if not call.runs:
            return call.said
        ev = call.evaluation
        if ev is not None:
            try:
                self.client.report_receipt(ev.evaluation_id, _outcome(ctx), ev.proposal_hash)
            except Exception as e:  # the tool ran; a lost receipt shows as missing in AgentNexus
                log.warning("AgentNexus did not take the receipt of %s: %s", ev.evaluation_id, e)
        return None

    def _decide(self, ctx: ToolCallHookContext) -> _Call:
        tool = _name(ctx.tool_name)
        args = dict(ctx.tool_input)
        key = json.dumps([tool, args], sort_keys=True, default=str)
        with self._lock:
            held = self._held.pop(key, None)
        if held is not None:
            # Asked again after a stop: the same evaluation, decided by now (or not).
            ev = self.client.get_evaluation(held.evaluation_id)
        else:
            rule = self._rules.get(tool, _Rule())
            ev = self.client.evaluate(
                agent_id=self.agent_id,
                action=rule.action or tool,
                params=args,
                resource=rule.resource(**args) if rule.resource else None,
                amount_cents=rule.amount_cents(**args) if rule.amount_cents else None,
            )
        if not ev.is_final and self.wait:
            try:
                ev = self.client.wait_for_decision(ev.evaluation_id, timeout=self.timeout)
            except StillPending:
                url = self.client.approval_page_url(ev.evaluation_id)
                said = f"Still waiting for a person in AgentNexus ({url}); the call did not run. Do not retry it now."
                return _Call(evaluation=ev, runs=False, said=said)
        if not ev.is_final:
            with self._lock:
                self._held[key] = ev
            pause = ApprovalRequired(ev, self.client.approval_page_url(ev.evaluation_id), tool, args)
            return _Call(evaluation=ev, runs=False, pause=pause)
        if not ev.may_execute:
            said = f"Not allowed by AgentNexus ({ev.status}): {ev.reason or ev.status}. Do not retry this call."
            return _Call(evaluation=ev, runs=False, said=said)
        return _Call(evaluation=ev, runs=True)


def _name(tool: str) -> str:
    """A tool's name as CrewAI's hooks see it."""
    return sanitize_tool_name(tool)


def _outcome(ctx: ToolCallHookContext) -> str:
    raw = ctx.raw_tool_result
    if isinstance(raw, str) and raw.startswith(_BLOCKED):
        return "skipped"  # another hook blocked it after this guard allowed it
    if isinstance(raw, ToolFailure) or (isinstance(raw, str) and raw.startswith(_RAISED)):
        return "failed"
    return "executed"
