"""Errors: what the server refused (RFC 9457 problem+json), and what a governed call was not allowed to do."""

from __future__ import annotations

from typing import Any

from .models import Evaluation


class AgentNexusError(Exception):
    """Any error of this client."""


class TransportError(AgentNexusError):
    """The server could not be reached or did not answer (after the retries)."""


class ProblemError(AgentNexusError):
    """The server refused the request with a problem document (RFC 9457)."""

    def __init__(self, status: int, title: str, detail: str, type: str = "", errors: Any = None) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type
        self.errors = errors

    @classmethod
    def from_answer(cls, status: int, body: Any) -> "ProblemError":
        if isinstance(body, dict):
            return cls(
                status=int(body.get("status", status)),
                title=str(body.get("title", "")),
                detail=str(body.get("detail", "")),
                type=str(body.get("type", "")),
                errors=body.get("errors"),
            )
        return cls(status=status, title="Unexpected answer", detail=str(body)[:200])


class Denied(AgentNexusError):
    """A governed call was not allowed: denied by a policy, rejected by a person, or expired.

    ``evaluation`` is the decision; ``reason`` says why.
    """

    def __init__(self, evaluation: Evaluation) -> None:
        reason = evaluation.reason or evaluation.status
        super().__init__(f"{evaluation.status}: {reason}")
        self.evaluation = evaluation
        self.reason = reason


class StillPending(AgentNexusError):
    """The evaluation was still waiting for a person when the wait ended."""

    def __init__(self, evaluation: Evaluation) -> None:
        super().__init__(f"evaluation {evaluation.evaluation_id} is still pending")
        self.evaluation = evaluation
