"""A worker node killed between writing an output and recording it ``done``.

Run as ``python killed_after_write.py <database url> <image id>``: claims the queued image,
colorizes it with a stand-in network whose colours differ from ``StubNet``'s, writes the
output, and is then killed with SIGKILL before it can record anything, as a node killed
at that moment would be.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from workers_helpers import StubNet, stub_colorizer  # noqa: E402

from catalog import make_sessionmaker  # noqa: E402
from storage import LocalStorage  # noqa: E402
from workers.process import process_image  # noqa: E402


class _DiesAfterWrite(LocalStorage):
    """Local storage whose process is killed as soon as a write has landed."""

    def write(self, uri: Any, data: Any, **options: Any) -> None:
        super().write(uri, data, **options)
        os.kill(os.getpid(), signal.SIGKILL)


def main(database_url: str, image_id: str) -> None:
    """Process one image until the kill."""
    net = StubNet()
    with torch.no_grad():
        net.conv.bias.copy_(torch.tensor([-7.0, 9.0]))
    process_image(
        int(image_id),
        sessions=make_sessionmaker(database_url),
        storage_for=lambda uri: _DiesAfterWrite(),
        colorizer=stub_colorizer(net),
        worker="doomed@node",
        task_id="m-doomed",
    )


if __name__ == "__main__":
    main(*sys.argv[1:3])
