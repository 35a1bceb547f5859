"""A Celery worker for the scheduler tests: the real dispatcher and a stand-in colorize task.

Run as a script by ``test_worker.py``. It builds the project's app, installs the dispatch
pass of ``panchro scheduler`` as a periodic task with beat, and registers, under the real
task name, a task that only claims the image (``queued -> running``) and records the id
it received in Redis. Configuration comes from the environment:

- ``STANDIN_BROKER_URL``: the Redis broker (the records go to the same database).
- ``STANDIN_DATABASE_URL``: the catalog.
- ``STANDIN_MAX_IN_FLIGHT``, ``STANDIN_INTERVAL`` and ``STANDIN_REAP_AFTER``: the
  dispatcher's settings.
"""

from __future__ import annotations

import os
from typing import Any

import redis
from scheduler_testing import ARGSREPR_KEY, CLAIMED_KEY, IN_FLIGHT_KEY, RECEIVED_KEY
from sqlalchemy.orm import Session, sessionmaker

from catalog import claim_image, count_in_flight, make_sessionmaker, transaction
from scheduler import SCHEDULER_QUEUE, install_dispatcher, scheduler_argv
from workers.app import create_app
from workers.broker import COLORIZE_QUEUE
from workers.names import COLORIZE

BROKER_URL = os.environ["STANDIN_BROKER_URL"]
DATABASE_URL = os.environ["STANDIN_DATABASE_URL"]

app = create_app(broker_url=BROKER_URL)
install_dispatcher(
    app,
    database_url=DATABASE_URL,
    max_in_flight=int(os.environ["STANDIN_MAX_IN_FLIGHT"]),
    interval=float(os.environ["STANDIN_INTERVAL"]),
    reap_after=float(os.environ["STANDIN_REAP_AFTER"]),
)
_cache: dict[str, Any] = {}


def _sessions() -> sessionmaker[Session]:
    if "sessions" not in _cache:
        _cache["sessions"] = make_sessionmaker(DATABASE_URL)
    sessions: sessionmaker[Session] = _cache["sessions"]
    return sessions


def _redis() -> redis.Redis:
    if "redis" not in _cache:
        _cache["redis"] = redis.Redis.from_url(BROKER_URL)
    client: redis.Redis = _cache["redis"]
    return client


@app.task(name=COLORIZE, bind=True, shared=False)  # type: ignore[untyped-decorator]
def colorize(self: Any, image_id: int) -> None:
    """Record the delivery and the images in flight, claim the image; no model, no output."""
    _redis().rpush(RECEIVED_KEY, image_id)
    _redis().hset(ARGSREPR_KEY, str(image_id), str(getattr(self.request, "argsrepr", None)))
    with transaction(_sessions()) as db:
        _redis().rpush(IN_FLIGHT_KEY, count_in_flight(db))
        claim = claim_image(db, image_id, worker="standin", task_id=self.request.id)
    if claim is not None:
        _redis().rpush(CLAIMED_KEY, image_id)


if __name__ == "__main__":
    app.worker_main(argv=scheduler_argv(loglevel="INFO", queues=(SCHEDULER_QUEUE, COLORIZE_QUEUE)))
