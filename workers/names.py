"""Task names shared by the producer and the workers.

The scheduler imports only this module and :mod:`workers.broker` (kombu's Redis internals)
from ``workers``, so that dispatching a task never imports torch or the model.
"""

#: Celery task that colorizes one catalog image; its only argument is the image id.
COLORIZE = "panchro.colorize"

#: Celery task that runs one dispatch pass (pending -> queued, then send); no arguments.
DISPATCH = "panchro.dispatch"
