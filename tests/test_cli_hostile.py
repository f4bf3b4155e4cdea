"""`supportflow queue send` with lines no queue can take (issue 14), as a user runs it: one
line naming the line number and the reason, exit 2, no traceback, nothing sent."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

GOOD = json.dumps({"activity_id": "ok-1", "tenant_id": "acme"})


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"activity_id": "a", "score": NaN}', "score: NaN or Infinity"),
        ('{"activity_id": "a", "score": Infinity}', "score: NaN or Infinity"),
        ('{"activity_id": "a", "n": 1e400}', "n: NaN or Infinity (or a number too large)"),
        ('{"activity_id": "a", "text": "x\\u0000y"}', "text: holds a NUL character"),
        ('{"activity_id": "a", "text": "x\\ud800y"}', "text: holds a lone surrogate"),
        ('{"activity_id": "a", "deep": ' + "[" * 5000 + "]" * 5000 + "}", "nested deeper than"),
        ('{"activity_id": "a", "n": ' + "9" * 5000 + "}", "not valid JSON"),
        (json.dumps({"activity_id": "a", "pad": "x" * (256 * 1024)}), "at most 262144"),
    ],
)
def test_bad_line_is_one_line_exit_2_and_nothing_sent(tmp_path, pg_queues, line, reason):
    path = tmp_path / "events.jsonl"
    path.write_text(f"{GOOD}\n{line}\n{GOOD}\n")
    result = subprocess.run(
        [sys.executable, "-m", "orchestration.cli", "queue", "send", "activities", str(path)],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    [message] = result.stderr.strip().splitlines()
    assert message.startswith(f"supportflow: error: {path}:2: ")
    assert reason in message
    assert "Traceback" not in result.stderr
    assert all(s.visible == 0 for s in pg_queues.stats())
