"""AgentNexus for Python: propose an action before an agent takes it, wait for a person when
approval is required, and report what ran (SPEC §12)."""

from ._client import AgentNexus, AsyncAgentNexus
from .errors import AgentNexusError, Denied, ProblemError, StillPending, TransportError
from .governed import governed
from .models import Evaluation, MatchedRule
from .webhooks import InvalidSignature, verify

__all__ = [
    "AgentNexus",
    "AgentNexusError",
    "AsyncAgentNexus",
    "Denied",
    "Evaluation",
    "InvalidSignature",
    "MatchedRule",
    "ProblemError",
    "StillPending",
    "TransportError",
    "governed",
    "verify",
]
__version__ = "0.1.0"
