"""The producer side of the job queue: scan, register, dispatch.

Plain functions over the catalog and the stores; Celery appears only behind the ``send``
callable and in the periodic top-up::

    app = create_app(broker_url=broker_url)            # workers.app
    sessions = make_sessionmaker(database_url)          # catalog
    summary = submit(sessions, name="1920s", source="s3://scans/1920s",
                     output="s3://colour/1920s", storage=open_storage("s3://scans/1920s"),
                     send=celery_sender(app), max_in_flight=200)
    run_scheduler(app, database_url=database_url, max_in_flight=200)   # panchro scheduler

The task is known only by its name (``workers.names.COLORIZE``) and the broker through
``workers.broker``; nothing here imports the worker's code, torch or the model.
"""

from __future__ import annotations

from scheduler.collection_settings import CollectionSettings
from scheduler.dispatching import (
    DISPATCH_BATCH_SIZE,
    CollectionDispatch,
    DispatchReport,
    Send,
    TaskRequest,
    dispatch,
)
from scheduler.errors import (
    BrokerUnavailable,
    InvalidDestination,
    OutputCollision,
    OverlappingOutput,
    SchedulerError,
)
from scheduler.outputs import (
    Location,
    check_destination,
    check_locations,
    check_output_root,
    is_case_insensitive,
    output_relative,
    plan_outputs,
)
from scheduler.periodic import (
    DISPATCH_INTERVAL_S,
    install_dispatcher,
    run_scheduler,
    scheduler_argv,
)
from scheduler.reaping import REAP_AFTER_S, ReapReport, StaleRelease, reap, release_stale
from scheduler.scanning import PROGRESS_EVERY, ProgressCallback, ScanProgress, scan_source
from scheduler.sending import celery_sender
from scheduler.submission import SUBMIT_CHUNK_ROWS, submit
from scheduler.submit_summary import SubmitProgress, SubmitProgressCallback, SubmitSummary
from scheduler.windows import parse_not_before, window_opens_at
from workers.broker import SCHEDULER_QUEUE

__all__ = [
    "DISPATCH_BATCH_SIZE",
    "DISPATCH_INTERVAL_S",
    "PROGRESS_EVERY",
    "REAP_AFTER_S",
    "SCHEDULER_QUEUE",
    "SUBMIT_CHUNK_ROWS",
    "BrokerUnavailable",
    "CollectionDispatch",
    "CollectionSettings",
    "DispatchReport",
    "InvalidDestination",
    "Location",
    "OutputCollision",
    "OverlappingOutput",
    "ProgressCallback",
    "ReapReport",
    "ScanProgress",
    "SchedulerError",
    "Send",
    "StaleRelease",
    "SubmitProgress",
    "SubmitProgressCallback",
    "SubmitSummary",
    "TaskRequest",
    "celery_sender",
    "check_destination",
    "check_locations",
    "check_output_root",
    "dispatch",
    "install_dispatcher",
    "is_case_insensitive",
    "output_relative",
    "parse_not_before",
    "plan_outputs",
    "reap",
    "release_stale",
    "run_scheduler",
    "scan_source",
    "scheduler_argv",
    "submit",
    "window_opens_at",
]
