"""The producer side of the job queue: scan, register, dispatch.

Plain functions over the catalog and the stores; Celery appears only behind the ``send``
callable and in the periodic top-up::

    app = create_app(broker_url=broker_url)            # workers.app
    sessions = make_sessionmaker(database_url)          # catalog
    summary = submit(sessions, name="1920s", source="s3://scans/1920s",
                     output="s3://colour/1920s", storage=open_storage("s3://scans/1920s"),
                     send=celery_sender(app), max_in_flight=200)
    run_scheduler(app, database_url=database_url, max_in_flight=200)   # panchro scheduler

The task is known only by its name (``workers.names.COLORIZE``); nothing here imports the
worker's code, torch or the model.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
        SCHEDULER_QUEUE,
        install_dispatcher,
        run_scheduler,
        scheduler_argv,
    )
    from scheduler.reaping import REAP_AFTER_S, ReapReport, StaleRelease, reap, release_stale
    from scheduler.scanning import PROGRESS_EVERY, ProgressCallback, ScanProgress, scan_source
    from scheduler.sending import celery_sender
    from scheduler.submission import (
        SUBMIT_CHUNK_ROWS,
        CollectionSettings,
        SubmitProgress,
        SubmitProgressCallback,
        SubmitSummary,
        submit,
    )
    from scheduler.windows import is_window_open, parse_not_before, window_opens_at

#: The module of each public name: importing ``scheduler.errors`` (as the CLI does for its
#: error handling) must not import the rest, so the package imports on first use.
_SOURCES = {
    "CollectionDispatch": "dispatching",
    "DISPATCH_BATCH_SIZE": "dispatching",
    "DispatchReport": "dispatching",
    "Send": "dispatching",
    "TaskRequest": "dispatching",
    "dispatch": "dispatching",
    "BrokerUnavailable": "errors",
    "InvalidDestination": "errors",
    "OutputCollision": "errors",
    "OverlappingOutput": "errors",
    "SchedulerError": "errors",
    "Location": "outputs",
    "check_destination": "outputs",
    "check_locations": "outputs",
    "check_output_root": "outputs",
    "is_case_insensitive": "outputs",
    "output_relative": "outputs",
    "plan_outputs": "outputs",
    "DISPATCH_INTERVAL_S": "periodic",
    "SCHEDULER_QUEUE": "periodic",
    "install_dispatcher": "periodic",
    "run_scheduler": "periodic",
    "scheduler_argv": "periodic",
    "REAP_AFTER_S": "reaping",
    "ReapReport": "reaping",
    "StaleRelease": "reaping",
    "reap": "reaping",
    "release_stale": "reaping",
    "PROGRESS_EVERY": "scanning",
    "ProgressCallback": "scanning",
    "ScanProgress": "scanning",
    "scan_source": "scanning",
    "celery_sender": "sending",
    "CollectionSettings": "submission",
    "SUBMIT_CHUNK_ROWS": "submission",
    "SubmitProgress": "submission",
    "SubmitProgressCallback": "submission",
    "SubmitSummary": "submission",
    "submit": "submission",
    "is_window_open": "windows",
    "parse_not_before": "windows",
    "window_opens_at": "windows",
}


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access (PEP 562)."""
    module = _SOURCES.get(name)
    if module is None:
        raise AttributeError(f"module 'scheduler' has no attribute {name!r}")
    return getattr(import_module(f"scheduler.{module}"), name)


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
    "is_window_open",
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
