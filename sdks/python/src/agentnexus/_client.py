"""The clients: :class:`AgentNexus` (blocking) and :class:`AsyncAgentNexus` (asyncio), over httpx.

A request that got no answer, a 5xx or a 429 is tried again with backoff (honouring
``Retry-After``); an evaluation is retried under one ``idempotency_key``, so a retry is never a
second evaluation.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx

from .errors import ProblemError, StillPending, TransportError
from .models import Evaluation

MAX_WAIT_SECS = 60


def _backoff(attempt: int, retry_after: str | None) -> float:
    if retry_after is not None:
        try:
            return min(float(retry_after), 30.0)
        except ValueError:
            pass
    return min(0.25 * float(2**attempt), 30.0)


def _proposal(fields: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in fields.items() if v is not None}
    body.setdefault("idempotency_key", f"py-{uuid.uuid4()}")
    return body


def _answer(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        body = response.text
    if response.is_success:
        return body
    raise ProblemError.from_answer(response.status_code, body)


def _retryable(response: httpx.Response) -> bool:
    return response.status_code == 429 or response.status_code >= 500


class _Base:
    def __init__(self, base_url: str, api_key: str, retries: int) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, not {base_url!r}")
        if not api_key:
            raise ValueError("api_key is empty")
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self._headers = {"Authorization": f"Bearer {api_key}", "User-Agent": "agentnexus-python/0.1.0"}

    def approval_page_url(self, evaluation_id: str) -> str:
        """Where a person signs in to decide a pending evaluation (the dashboard's page)."""
        return f"{self.base_url}/approvals/evaluations/{evaluation_id}"


class AgentNexus(_Base):
    """A blocking client for one server and one API key."""

    def __init__(self, base_url: str, api_key: str, *, retries: int = 3, timeout: float = 30.0) -> None:
        super().__init__(base_url, api_key, retries)
        self._http = httpx.Client(base_url=self.base_url, headers=self._headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "AgentNexus":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _request(self, method: str, path: str, *, hold: float = 0, **kwargs: Any) -> Any:
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, timeout=30.0 + hold, **kwargs)
            except httpx.TransportError as e:
                if attempt >= self.retries:
                    raise TransportError(str(e)) from e
                time.sleep(_backoff(attempt, None))
            else:
                if not _retryable(response) or attempt >= self.retries:
                    return _answer(response)
                time.sleep(_backoff(attempt, response.headers.get("retry-after")))
            attempt += 1

    def evaluate(self, **proposal: Any) -> Evaluation:
        """Proposes an action (``agent_id``, ``action``, ``resource``, ``amount_cents``,
        ``params``, ``context``, … as in SPEC §4) and answers its decision."""
        return Evaluation.from_answer(self._request("POST", "/api/v1/evaluate", json=_proposal(proposal)))

    def get_evaluation(self, evaluation_id: str, wait: float | None = None) -> Evaluation:
        """An evaluation now; with ``wait`` (seconds, at most 60), once its status changes."""
        params = {"wait": int(min(wait, MAX_WAIT_SECS))} if wait else None
        body = self._request("GET", f"/api/v1/evaluations/{evaluation_id}", params=params, hold=wait or 0)
        return Evaluation.from_answer(body)

    def wait_for_decision(self, evaluation_id: str, timeout: float = 600) -> Evaluation:
        """Waits until the evaluation is decided; raises :class:`StillPending` after ``timeout``."""
        until = time.monotonic() + timeout
        while True:
            left = max(until - time.monotonic(), 1)
            ev = self.get_evaluation(evaluation_id, wait=left)
            if ev.is_final:
                return ev
            if time.monotonic() >= until:
                raise StillPending(ev)

    def report_receipt(self, evaluation_id: str, outcome: str, proposal_hash: str | None = None) -> Evaluation:
        """Reports what ran (``executed``, ``failed`` or ``skipped``) and the hash of what it was;
        answers the evaluation carrying the receipt (``raw["receipt"]["conforms"]``)."""
        body: dict[str, Any] = {"outcome": outcome}
        if proposal_hash is not None:
            body["proposal_hash"] = proposal_hash
        return Evaluation.from_answer(self._request("POST", f"/api/v1/evaluations/{evaluation_id}/receipt", json=body))


class AsyncAgentNexus(_Base):
    """The same client for asyncio."""

    def __init__(self, base_url: str, api_key: str, *, retries: int = 3, timeout: float = 30.0) -> None:
        super().__init__(base_url, api_key, retries)
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=self._headers, timeout=timeout)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncAgentNexus":
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def _request(self, method: str, path: str, *, hold: float = 0, **kwargs: Any) -> Any:
        attempt = 0
        while True:
            try:
                response = await self._http.request(method, path, timeout=30.0 + hold, **kwargs)
            except httpx.TransportError as e:
                if attempt >= self.retries:
                    raise TransportError(str(e)) from e
                await asyncio.sleep(_backoff(attempt, None))
            else:
                if not _retryable(response) or attempt >= self.retries:
                    return _answer(response)
                await asyncio.sleep(_backoff(attempt, response.headers.get("retry-after")))
            attempt += 1

    async def evaluate(self, **proposal: Any) -> Evaluation:
        return Evaluation.from_answer(await self._request("POST", "/api/v1/evaluate", json=_proposal(proposal)))

    async def get_evaluation(self, evaluation_id: str, wait: float | None = None) -> Evaluation:
        params = {"wait": int(min(wait, MAX_WAIT_SECS))} if wait else None
        body = await self._request("GET", f"/api/v1/evaluations/{evaluation_id}", params=params, hold=wait or 0)
        return Evaluation.from_answer(body)

    async def wait_for_decision(self, evaluation_id: str, timeout: float = 600) -> Evaluation:
        until = time.monotonic() + timeout
        while True:
            left = max(until - time.monotonic(), 1)
            ev = await self.get_evaluation(evaluation_id, wait=left)
            if ev.is_final:
                return ev
            if time.monotonic() >= until:
                raise StillPending(ev)

    async def report_receipt(self, evaluation_id: str, outcome: str, proposal_hash: str | None = None) -> Evaluation:
        body: dict[str, Any] = {"outcome": outcome}
        if proposal_hash is not None:
            body["proposal_hash"] = proposal_hash
        answer = await self._request("POST", f"/api/v1/evaluations/{evaluation_id}/receipt", json=body)
        return Evaluation.from_answer(answer)
