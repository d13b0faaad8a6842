"""A real `agentnexus serve` for the tests (SQLite in a temporary directory, a free port), its
admin and agent keys, and a person who approves from the dashboard as an owner would."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

OWNER = "owner@example.com"
PASSWORD = "correct horse battery staple"

# The policy both SDKs' suites test against.
POLICY = (Path(__file__).resolve().parents[2] / "testdata" / "payments.yaml").read_text()


@dataclass
class Server:
    url: str
    admin_key: str
    agent_key: str

    def approve(self, evaluation_id: str, decision: str = "approve") -> None:
        """Signs in as the owner, opens the evaluation from the inbox and decides it."""
        with httpx.Client(base_url=self.url, follow_redirects=False) as web:
            r = web.post("/sign-in", data={"email": OWNER, "password": PASSWORD})
            assert r.status_code == 303, r.text
            inbox = web.get("/inbox")
            csrf = re.search(r'name="csrf" value="([^"]+)"', inbox.text)
            assert csrf, inbox.text
            opened = web.post(f"/inbox/{evaluation_id}", data={"csrf": csrf.group(1)})
            assert opened.status_code == 303, opened.text
            link = opened.headers["location"]
            decided = web.post(link, data={"decision": decision, "comment": "checked"})
            assert decided.status_code == 200, decided.text

    def approve_at(self, approval_url: str, decision: str = "approve") -> None:
        """Follows an approval link an adapter handed out, as the owner: signs in, opens the
        link, goes on to review from there and decides."""
        assert approval_url.startswith(self.url + "/"), approval_url
        with httpx.Client(base_url=self.url, follow_redirects=False) as web:
            r = web.post("/sign-in", data={"email": OWNER, "password": PASSWORD})
            assert r.status_code == 303, r.text
            page = web.get(approval_url)
            assert page.status_code == 200, page.text
            form = re.search(r'<form method="post" action="(/inbox/[^"]+)"><input type="hidden" name="csrf" value="([^"]+)"', page.text)
            assert form, page.text
            opened = web.post(form.group(1), data={"csrf": form.group(2)})
            assert opened.status_code == 303, opened.text
            decided = web.post(opened.headers["location"], data={"decision": decision, "comment": "checked"})
            assert decided.status_code == 200, decided.text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    binary = os.environ.get("AGENTNEXUS_BIN")
    if not binary or not Path(binary).is_file():
        pytest.fail("AGENTNEXUS_BIN must name a built agentnexus binary (cargo build -p agentnexus)")
    work = tmp_path_factory.mktemp("server")
    for _ in range(5):
        port = free_port()
        env = dict(
            os.environ,
            AGENTNEXUS_DATABASE_URL=f"sqlite://{work}/sdk.db",
            AGENTNEXUS_LISTEN=f"127.0.0.1:{port}",
            AGENTNEXUS_SECRET_KEY_FILE=str(work / "sdk.key"),
            AGENTNEXUS_SIGNING_KEY_FILE=str(work / "sdk-signing.key"),
            AGENTNEXUS_BOOTSTRAP_EMAIL=OWNER,
            AGENTNEXUS_BOOTSTRAP_PASSWORD=PASSWORD,
            AGENTNEXUS_WEBHOOK_ALLOW_PRIVATE="1",
            RUST_LOG="info",
        )
        log = open(work / "serve.log", "w")
        proc = subprocess.Popen([binary, "serve"], env=env, stdout=subprocess.PIPE, stderr=log, text=True, cwd=work)
        deadline = time.monotonic() + 30
        serving = False
        while time.monotonic() < deadline and proc.poll() is None:
            if "AgentNexus is serving" in (work / "serve.log").read_text():
                serving = True
                break
            time.sleep(0.05)
        if serving:
            break
        proc.kill()
        proc.wait()
        (work / "sdk.db").unlink(missing_ok=True)
    else:
        pytest.fail("agentnexus serve did not start: " + (work / "serve.log").read_text())
    assert proc.stdout is not None
    admin_key = ""
    while not admin_key:
        line = proc.stdout.readline()
        if not line:
            pytest.fail("agentnexus serve printed no admin key: " + (work / "serve.log").read_text())
        found = re.search(r"anx_[A-Za-z0-9]+", line) if "admin key" in line else None
        admin_key = found.group(0) if found else admin_key
    url = f"http://127.0.0.1:{port}"
    admin = {"Authorization": f"Bearer {admin_key}"}
    r = httpx.put(f"{url}/api/v1/policies/payments", content=POLICY, headers={**admin, "Content-Type": "application/yaml"})
    assert r.status_code == 200, r.text
    r = httpx.post(f"{url}/api/v1/keys", json={"name": "sdk", "scope": "agent"}, headers=admin)
    assert r.status_code in (200, 201), r.text
    yield Server(url=url, admin_key=admin_key, agent_key=r.json()["key"])
    proc.terminate()
    proc.wait(timeout=30)
