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

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scheduler.collection_settings import SETTING_GROUPS, CollectionSettings
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
    from scheduler.flight import shared_max_in_flight
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
    from scheduler.resubmission import SettingChange, setting_changes
    from scheduler.scanning import PROGRESS_EVERY, ProgressCallback, ScanProgress, scan_source
    from scheduler.sending import celery_sender
    from scheduler.submission import SUBMIT_CHUNK_ROWS, submit
    from scheduler.submit_summary import SubmitProgress, SubmitProgressCallback, SubmitSummary
    from scheduler.windows import parse_not_before, window_opens_at
    from workers.broker import SCHEDULER_QUEUE

#: The module of each public name: importing one module (``scheduler.errors``, as the CLI
#: does for its error handling) must not import the rest, so names load on first use.
_SOURCES = {
    "CollectionSettings": "scheduler.collection_settings",
    "SETTING_GROUPS": "scheduler.collection_settings",
    "DISPATCH_BATCH_SIZE": "scheduler.dispatching",
    "CollectionDispatch": "scheduler.dispatching",
    "DispatchReport": "scheduler.dispatching",
    "Send": "scheduler.dispatching",
    "TaskRequest": "scheduler.dispatching",
    "dispatch": "scheduler.dispatching",
    "BrokerUnavailable": "scheduler.errors",
    "InvalidDestination": "scheduler.errors",
    "OutputCollision": "scheduler.errors",
    "OverlappingOutput": "scheduler.errors",
    "SchedulerError": "scheduler.errors",
    "shared_max_in_flight": "scheduler.flight",
    "Location": "scheduler.outputs",
    "check_destination": "scheduler.outputs",
    "check_locations": "scheduler.outputs",
    "check_output_root": "scheduler.outputs",
    "is_case_insensitive": "scheduler.outputs",
    "output_relative": "scheduler.outputs",
    "plan_outputs": "scheduler.outputs",
    "DISPATCH_INTERVAL_S": "scheduler.periodic",
    "install_dispatcher": "scheduler.periodic",
    "run_scheduler": "scheduler.periodic",
    "scheduler_argv": "scheduler.periodic",
    "REAP_AFTER_S": "scheduler.reaping",
    "ReapReport": "scheduler.reaping",
    "StaleRelease": "scheduler.reaping",
    "reap": "scheduler.reaping",
    "release_stale": "scheduler.reaping",
    "SettingChange": "scheduler.resubmission",
    "setting_changes": "scheduler.resubmission",
    "PROGRESS_EVERY": "scheduler.scanning",
    "ProgressCallback": "scheduler.scanning",
    "ScanProgress": "scheduler.scanning",
    "scan_source": "scheduler.scanning",
    "celery_sender": "scheduler.sending",
    "SUBMIT_CHUNK_ROWS": "scheduler.submission",
    "submit": "scheduler.submission",
    "SubmitProgress": "scheduler.submit_summary",
    "SubmitProgressCallback": "scheduler.submit_summary",
    "SubmitSummary": "scheduler.submit_summary",
    "parse_not_before": "scheduler.windows",
    "window_opens_at": "scheduler.windows",
    "SCHEDULER_QUEUE": "workers.broker",
}


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access (PEP 562)."""
    module = _SOURCES.get(name)
    if module is None:
        raise AttributeError(f"module 'scheduler' has no attribute {name!r}")
    return getattr(import_module(module), name)


__all__ = [
    "DISPATCH_BATCH_SIZE",
    "DISPATCH_INTERVAL_S",
    "PROGRESS_EVERY",
    "REAP_AFTER_S",
    "SCHEDULER_QUEUE",
    "SETTING_GROUPS",
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
    "SettingChange",
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
    "setting_changes",
    "shared_max_in_flight",
    "submit",
    "window_opens_at",
]
