"""``@governed``: a function that runs only when AgentNexus allows it.

The call's keyword arguments become the proposal's ``params``. ``allow`` runs the function;
``require_approval`` waits for the person's decision (up to ``wait_timeout`` seconds) and runs it
when approved; ``deny``, a rejection or an expiry raise :class:`Denied` without running it. After
it ran, the receipt is reported with the evaluation's ``proposal_hash`` (``executed``, or
``failed`` when it raised).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar, cast

from ._client import AgentNexus, AsyncAgentNexus
from .errors import Denied
from .models import Evaluation

F = TypeVar("F", bound=Callable[..., Any])


def governed(
    *,
    client: AgentNexus | AsyncAgentNexus,
    agent_id: str,
    action: str,
    resource: Callable[..., str | None] | None = None,
    amount_cents: Callable[..., int | None] | None = None,
    wait_timeout: float = 600,
) -> Callable[[F], F]:
    """Governs a function (sync with :class:`AgentNexus`, ``async def`` with :class:`AsyncAgentNexus`).

    ``resource`` and ``amount_cents``, when given, compute those fields from the call's arguments.
    """

    def proposal(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        fields: dict[str, Any] = {"agent_id": agent_id, "action": action, "params": dict(kwargs)}
        if resource is not None:
            fields["resource"] = resource(*args, **kwargs)
        if amount_cents is not None:
            fields["amount_cents"] = amount_cents(*args, **kwargs)
        return fields

    def decorate(fn: F) -> F:
        if inspect.iscoroutinefunction(fn):
            if not isinstance(client, AsyncAgentNexus):
                raise TypeError("an async function is governed with an AsyncAgentNexus client")
            aclient = client

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                ev = await aclient.evaluate(**proposal(args, kwargs))
                if not ev.is_final:
                    ev = await aclient.wait_for_decision(ev.evaluation_id, timeout=wait_timeout)
                _check(ev)
                try:
                    result = await fn(*args, **kwargs)
                except BaseException:
                    await aclient.report_receipt(ev.evaluation_id, "failed", ev.proposal_hash)
                    raise
                await aclient.report_receipt(ev.evaluation_id, "executed", ev.proposal_hash)
                return result

            return cast(F, run_async)

        if not isinstance(client, AgentNexus):
            raise TypeError("a plain function is governed with an AgentNexus client")
        sclient = client

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            ev = sclient.evaluate(**proposal(args, kwargs))
            if not ev.is_final:
                ev = sclient.wait_for_decision(ev.evaluation_id, timeout=wait_timeout)
            _check(ev)
            try:
                result = fn(*args, **kwargs)
            except BaseException:
                sclient.report_receipt(ev.evaluation_id, "failed", ev.proposal_hash)
                raise
            sclient.report_receipt(ev.evaluation_id, "executed", ev.proposal_hash)
            return result

        return cast(F, run)

    return decorate


def _check(ev: Evaluation) -> None:
    if not ev.may_execute:
        raise Denied(ev)
