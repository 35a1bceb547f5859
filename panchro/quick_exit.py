"""Ending a short command without Python's teardown of every module it imported.

A command such as ``panchro submit`` or ``panchro status`` imports some 900 modules
(SQLAlchemy, Celery, Redis, Pydantic, psycopg). When it returns, Python frees them one by
one: 0.25-0.35 s of CPU on a 2-core machine, measured, more than many of these commands
take to do their work, and on a worker node taken from the model's threads.
:func:`exit_now` does what an exit must (waits for the threads that are not daemons, runs
the ``atexit`` handlers, which close the log handlers and remove temporary folders, and
flushes standard output and error), then ends the process with the same status at once.
Only commands that keep no file open outside a ``with`` block use it
(:data:`QUICK_EXIT_COMMANDS` in ``panchro.cli``).
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn

__all__ = ["exit_now", "exit_status"]


def exit_status(code: object) -> int:
    """The process status ``sys.exit(code)`` gives, as Python computes it.

    None is 0, an int is itself; anything else is printed to standard error and is 1.

    Args:
        code: A ``SystemExit``'s code.

    Returns:
        The status.
    """
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def exit_now(code: object) -> NoReturn:
    """End the process as ``sys.exit(code)`` would, without freeing every module first.

    Args:
        code: A ``SystemExit``'s code.
    """
    status = exit_status(code)
    # What Python does first on its way out: thread pools' exit hooks, then a wait for
    # the threads that are not daemons.
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        shutdown()
    else:
        current = threading.current_thread()
        for thread in threading.enumerate():
            if thread is not current and not thread.daemon:
                thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            # A closed pipe (``panchro list | head``): Python reports it with status 120.
            status = status or 120
    os._exit(status)
