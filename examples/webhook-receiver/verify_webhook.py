"""Standard Webhooks signature check for AgentNexus deliveries (docs/webhooks.md)."""
import base64
import hashlib
import hmac
import time

TOLERANCE_SECONDS = 5 * 60


class InvalidWebhook(Exception):
    pass


def verify_webhook(secret: str, headers: dict, body: bytes, check_timestamp: bool = True) -> None:
    """Raises InvalidWebhook unless `body` was signed with `secret`.

    `headers` maps lower-case header names to values; `body` is the raw request body,
    exactly as received (do not parse and re-serialise it first).
    """
    msg_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not (msg_id and timestamp and signatures):
        raise InvalidWebhook("missing webhook headers")
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise InvalidWebhook("bad webhook-timestamp")
    if check_timestamp and abs(time.time() - sent_at) > TOLERANCE_SECONDS:
        raise InvalidWebhook("webhook-timestamp too far from now")

    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()

    for candidate in signatures.split(" "):
        version, _, signature = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(signature, expected):
            return
    raise InvalidWebhook("no matching signature")
