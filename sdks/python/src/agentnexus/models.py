"""What the API answers, typed: the fields every client needs, the whole answer in ``raw``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FINAL = frozenset({"allowed", "denied", "approved", "rejected", "expired"})


@dataclass(frozen=True)
class MatchedRule:
    policy: str
    rule: str
    effect: str


@dataclass(frozen=True)
class Evaluation:
    """An evaluation (SPEC §4): its decision, status and the hash of what was proposed."""

    evaluation_id: str
    decision: str
    status: str
    reason: str | None
    proposal_hash: str
    matched_rules: list[MatchedRule] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def may_execute(self) -> bool:
        """Whether the agent may go ahead: ``allowed`` or ``approved``."""
        return self.status in ("allowed", "approved")

    @property
    def is_final(self) -> bool:
        """Whether nothing is waiting for a person any more."""
        return self.status in FINAL

    @classmethod
    def from_answer(cls, body: dict[str, Any]) -> "Evaluation":
        rules = [
            MatchedRule(policy=str(r.get("policy", "")), rule=str(r.get("rule", "")), effect=str(r.get("effect", "")))
            for r in body.get("matched_rules") or []
            if isinstance(r, dict)
        ]
        return cls(
            evaluation_id=str(body["evaluation_id"]),
            decision=str(body["decision"]),
            status=str(body["status"]),
            reason=body.get("reason"),
            proposal_hash=str(body.get("proposal_hash", "")),
            matched_rules=rules,
            raw=body,
        )
