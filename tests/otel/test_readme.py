"""The README's console example runs as written and prints what the README says it prints."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

README = ROOT / "packages" / "qtasks-otel" / "README.md"


def example() -> str:
    section = README.read_text().split("## Try it", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "the README has a runnable example"
    return match.group(1)


def test_the_console_example_prints_one_trace_from_request_to_retried_task(tmp_path: Path) -> None:
    script = tmp_path / "console_example.py"
    script.write_text(example())
    done = subprocess.run([sys.executable, script.name], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "result: success 5"
    spans = [line.split() for line in lines if line.startswith(("send ", "process ", "request "))]
    statuses = sorted((s[0], s[s.index("parent") + 2]) for s in spans)
    unset = "UNSET"
    assert statuses == [("process", "ERROR"), ("process", unset), ("request", unset), ("send", unset), ("send", unset)]
    assert len({s[s.index("trace") + 1] for s in spans}) == 1, "one trace"
    printed = {line.split()[0] for line in lines if line.startswith(("messaging.", "qtasks."))}
    assert printed >= {
        "messaging.client.sent.messages",
        "messaging.client.consumed.messages",
        "messaging.client.operation.duration",
        "messaging.process.duration",
        "qtasks.task.active",
        "qtasks.task.retries",
    }
