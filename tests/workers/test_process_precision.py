"""process_image() runs each image in the precision its collection asks for.

``panchro submit`` records the precision of a collection (``PANCHRO_PRECISION``); ``auto``
leaves the choice to each worker's own setting. A stand-in network notes which autocast
dtype every forward pass ran under.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from sqlalchemy.orm import Session, sessionmaker
from torch import nn
from workers_helpers import (
    StubNet,
    add_collection,
    attempts_of,
    read_image,
    stub_colorizer,
    write_gray_png,
)

from storage import LocalStorage
from workers.process import ProcessStatus, process_image

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _RecordsAutocast(nn.Module):
    """The stand-in network, noting the autocast dtype of each forward (None without)."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = StubNet()
        self.dtypes: list[torch.dtype | None] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        on = torch.is_autocast_enabled(x.device.type)
        self.dtypes.append(torch.get_autocast_dtype(x.device.type) if on else None)
        out: torch.Tensor = self.inner(x)
        return out


@pytest.mark.parametrize(
    ("asked", "used", "dtype"),
    [("bf16", "bf16", torch.bfloat16), ("auto", "fp32", None), (None, "fp32", None)],
)
def test_process_image_runs_in_the_precision_the_collection_asks_for(
    sessions: sessionmaker[Session],
    source: Path,
    output: Path,
    asked: str | None,
    used: str,
    dtype: torch.dtype | None,
) -> None:
    # The worker is configured for fp32; auto (or nothing) leaves the choice to it.
    write_gray_png(source / "p.png")
    ids = add_collection(sessions, source, output, ["p.png"], precision=asked)
    model = _RecordsAutocast()

    colorizer = stub_colorizer(model, precision="fp32")
    outcome = process_image(
        ids["p.png"],
        sessions=sessions,
        storage_for=lambda uri: LocalStorage(),
        colorizer=colorizer,
        worker="cpu0@test",
    )

    assert (outcome.status, outcome.precision) == (ProcessStatus.DONE, used)
    assert model.dtypes == [dtype]
    row = read_image(sessions, ids["p.png"])
    assert row.precision == used
    assert [attempt.precision for attempt in attempts_of(sessions, row.id)] == [used]
