"""Every Python snippet of the package's README, run as written against the test server (its
URL and an agent key put in for the placeholders), printing what the page says it prints."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

from conftest import Server

README = Path(__file__).resolve().parent.parent / "README.md"


def test_every_snippet_runs(server: Server) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) == 3
    printed = []
    for block in blocks:
        code = block.replace("http://127.0.0.1:8080", server.url).replace("anx_…", server.agent_key)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, str(README), "exec"), {})
        printed.append(out.getvalue())
    first = printed[0].splitlines()
    assert first[0].startswith("allow allowed "), first
    assert first[1].startswith("422 ") and "action" in first[1], first
    assert printed[1].splitlines() == ["refunded 500 on ch_1", "denied: Deletes are not for agents"]
    assert printed[2].strip() == "{'test': 2432232314}"
