"""Tests of workers.broker: the one home of kombu's Redis internals, light enough for both sides."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from workers.broker import message_body

ROOT = Path(__file__).resolve().parents[2]


def test_the_scheduler_imports_only_names_and_broker_from_workers() -> None:
    found: set[str] = set()
    for path in (ROOT / "scheduler").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
    assert {name for name in found if name.split(".")[0] == "workers"} <= {
        "workers.names",
        "workers.broker",
    }


def test_importing_the_broker_module_stays_light() -> None:
    code = (
        "import sys, workers.broker; "
        "heavy = ('torch', 'ddcolor', 'kombu.transport.redis', 'celery', 'workers.app'); "
        "bad = [m for m in heavy if m in sys.modules]; "
        "sys.exit(str(bad) if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_message_body_decodes_base64_bodies_and_keeps_plain_ones() -> None:
    plain = {"body": "[[7], {}, {}]", "properties": {"body_encoding": "utf-8"}}
    encoded = {"body": "W1s3XSwge30sIHt9XQ==", "properties": {"body_encoding": "base64"}}

    assert message_body(plain) == message_body(encoded) == "[[7], {}, {}]"
