"""Verifying AgentNexus's webhooks (Standard Webhooks: ``webhook-id``, ``webhook-timestamp``,
``webhook-signature``, HMAC-SHA256 over ``id.timestamp.body`` with the ``whsec_`` secret)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

TOLERANCE_SECS = 300


class InvalidSignature(Exception):
    """The delivery is not signed with the secret, or is too old or too new."""


def verify(secret: str, headers: Mapping[str, str], body: bytes, now: float | None = None) -> Any:
    """Checks a delivery and answers its JSON payload; raises :class:`InvalidSignature` otherwise.

    ``headers`` may use any case. The timestamp must be within five minutes of ``now``.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id = lower["webhook-id"]
        timestamp = lower["webhook-timestamp"]
        signatures = lower["webhook-signature"]
    except KeyError as e:
        raise InvalidSignature(f"missing header {e.args[0]}") from None
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise InvalidSignature("webhook-timestamp is not a number") from None
    current = time.time() if now is None else now
    if abs(current - sent_at) > TOLERANCE_SECS:
        raise InvalidSignature("webhook-timestamp is outside the tolerance")
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return json.loads(body)
    raise InvalidSignature("no signature matches")
