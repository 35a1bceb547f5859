"""Checks that a finished ``panchro run`` left thumbnails and that its report shows them.

Called from the run tests, which already paid for a real run of the model, so that the
thumbnails and the report of a real run cost no second run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from PIL import Image as PILImage
from sqlalchemy import create_engine, text

from workers.thumbnails import LONG_EDGE, MARKER


def check_run_thumbnails_and_report(
    dest: Path, name: str, invoke: Callable[..., Any], *, done: int
) -> None:
    """Assert that every done image of a run has its thumbnail pair and is in the report.

    Args:
        dest: The run's output folder.
        name: The collection's name.
        invoke: Runs the CLI in-process with the given arguments.
        done: Images the run colorized.
    """
    catalog = dest / ".panchro" / "catalog.sqlite3"
    engine = create_engine(f"sqlite:///{catalog}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT relative_path, source_thumb_uri, output_thumb_uri FROM images "
                    "WHERE status = 'done' ORDER BY id"
                )
            ).all()
    finally:
        engine.dispose()
    assert len(rows) == done
    thumbs = {}
    for path, source_thumb, output_thumb in rows:
        for uri in (source_thumb, output_thumb):
            assert uri and uri.startswith(f"{dest}/.panchro/thumbs/")
            with PILImage.open(uri) as thumb:
                assert thumb.format == "JPEG" and max(thumb.size) <= LONG_EDGE
                assert thumb.info.get("comment") == MARKER
        thumbs[path] = (source_thumb, output_thumb)

    report = dest / "report.html"
    result = invoke("--database-url", f"sqlite:///{catalog}", "report", name, "-o", str(report))

    assert result.exit_code == 0, result.output
    assert f"report of {name} ({done} images" in result.output
    html = report.read_text(encoding="utf-8")
    found = re.search(r'id="panchro-rows">(.*?)</script>', html, re.S)
    tables = re.search(r'id="panchro-tables">(.*?)</script>', html, re.S)
    assert found is not None and tables is not None
    prefixes = json.loads(tables.group(1))["prefixes"]
    shown = {
        row[1]: tuple(str(dest / unquote(prefixes[e[0]] + e[1])) for e in row[4:6])
        for row in json.loads(found.group(1))
    }
    assert shown == thumbs
