"""The read-ahead holds its decoding while the model computes on the CPU, and only then."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy.orm import Session, sessionmaker
from workers_helpers import ObservedStorage, add_collection, stub_colorizer, write_gray_png

import workers.colorizing
from catalog import get_images, transaction
from ddcolor.pipeline import Colorizer, ColorizeResult
from workers.process import ProcessStatus, process_image
from workers.readahead import ReadAhead

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: How long a decode that is held must not happen; a free one takes milliseconds.
HELD_S = 0.5
#: How long a decode that is free to run may take at most (a loaded test machine).
FREE_S = 10.0


class _Decodes:
    """Which originals were decoded, each signalled by an event once its decode began."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, threading.Event] = {}

    def event(self, name: str) -> threading.Event:
        with self._lock:
            return self._events.setdefault(name, threading.Event())

    def began(self, name: str, timeout: float) -> bool:
        return self.event(name).wait(timeout)


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> _Decodes:
    """Observe every decode of ``workers.colorizing``; the real decoder still does it."""
    seen = _Decodes()
    decode = workers.colorizing.decode_image

    def observed(data: bytes, *, name: str, **options: Any) -> Any:
        seen.event(Path(name).name).set()
        return decode(data, name=name, **options)

    monkeypatch.setattr(workers.colorizing, "decode_image", observed)
    return seen


@pytest.fixture
def two_images(sessions: sessionmaker[Session], source: Path, output: Path) -> dict[str, int]:
    for name in ("a.png", "b.png"):
        write_gray_png(source / name)
    return add_collection(sessions, source, output, ["a.png", "b.png"])


@dataclass
class _Reading:
    """A read-ahead over a store that signals when ``b.png``'s bytes were fetched."""

    sessions: sessionmaker[Session]
    ids: dict[str, int]
    decodes: _Decodes
    read_ahead: ReadAhead
    fetched: threading.Event

    def start_b(self) -> None:
        with transaction(self.sessions) as db:
            self.read_ahead.prefetch_in(db, [self.ids["b.png"]])

    def source_of_b(self) -> tuple[str, str | None]:
        with transaction(self.sessions) as db:
            [image] = get_images(db, [self.ids["b.png"]])
            return image.source_uri, image.source_checksum


@pytest.fixture
def reading(
    sessions: sessionmaker[Session], two_images: dict[str, int], decodes: _Decodes
) -> Iterator[_Reading]:
    fetched = threading.Event()

    def on_read(where: str, thread: str) -> None:
        if where.endswith("b.png"):
            fetched.set()

    storage = ObservedStorage(on_read=on_read)
    read_ahead = ReadAhead(lambda uri: storage)
    try:
        yield _Reading(sessions, two_images, decodes, read_ahead, fetched)
    finally:
        read_ahead.close()


def test_on_the_cpu_a_read_fetches_but_decodes_only_after_the_model(reading: _Reading) -> None:
    with reading.read_ahead.model_computing(on_cpu=True):
        reading.start_b()
        assert reading.fetched.wait(FREE_S), "the bytes are fetched while the model computes"
        assert not reading.decodes.began("b.png", HELD_S), "decoded beside the model"
    assert reading.decodes.began("b.png", FREE_S)
    original = reading.read_ahead.take(reading.ids["b.png"], *reading.source_of_b())
    assert original is not None and original.decoded.pixels.size > 0
    assert reading.read_ahead.hits == 1


def test_on_a_gpu_nothing_is_held(reading: _Reading) -> None:
    with reading.read_ahead.model_computing(on_cpu=False):
        reading.start_b()
        assert reading.decodes.began("b.png", FREE_S)


def test_a_model_that_fails_releases_the_hold(reading: _Reading) -> None:
    with pytest.raises(RuntimeError, match="the model broke"):
        with reading.read_ahead.model_computing(on_cpu=True):
            reading.start_b()
            assert reading.fetched.wait(FREE_S)
            raise RuntimeError("the model broke")
    assert reading.decodes.began("b.png", FREE_S)


def test_closing_releases_a_held_read(reading: _Reading) -> None:
    with reading.read_ahead.model_computing(on_cpu=True):
        reading.start_b()
        assert reading.fetched.wait(FREE_S)
        reading.read_ahead.close()
        # Its thread is not left waiting for a model that may never finish.
        assert reading.decodes.began("b.png", FREE_S)


def test_a_cpu_worker_decodes_the_next_image_after_its_model_not_beside_it(
    sessions: sessionmaker[Session], two_images: dict[str, int], decodes: _Decodes
) -> None:
    model_began = threading.Event()

    def fetch_b_once_the_model_runs(where: str, thread: str) -> None:
        # Without this, b might be fetched and decoded before a's model starts: allowed.
        if where.endswith("b.png"):
            model_began.wait(FREE_S)

    class Watching(Colorizer):
        """The stand-in model, which looks whether the next image is decoded meanwhile."""

        decoded_meanwhile: list[bool] = []

        def colorize(self, pixels: np.ndarray, **options: Any) -> ColorizeResult:
            if not model_began.is_set():
                model_began.set()
                self.decoded_meanwhile.append(decodes.began("b.png", HELD_S))
            return super().colorize(pixels, **options)

    plain = stub_colorizer()
    colorizer = Watching(plain.model, model_name="stub", device="cpu", precision="fp32", size=256)
    storage = ObservedStorage(on_read=fetch_b_once_the_model_runs)
    read_ahead = ReadAhead(lambda uri: storage, guess_next=True)
    try:
        outcomes = [
            process_image(
                two_images[name],
                sessions=sessions,
                storage_for=lambda uri: storage,
                colorizer=colorizer,
                worker="cpu0@test",
                read_ahead=read_ahead,
            )
            for name in ("a.png", "b.png")
        ]
    finally:
        model_began.set()
        read_ahead.close()

    # a's claim started the read of b; b was decoded after a's model, and b used it.
    assert Watching.decoded_meanwhile == [False]
    assert [outcome.status for outcome in outcomes] == [ProcessStatus.DONE] * 2
    assert [outcome.read_ahead for outcome in outcomes] == [False, True]
