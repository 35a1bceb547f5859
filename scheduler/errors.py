"""Errors raised by ``scheduler``.

::

    SchedulerError                base class of everything below
    ├── InvalidDestination        the output location is the source or lies inside it
    │   └── OverlappingOutput     the output overlaps a source or another collection's output
    ├── OutputCollision           two sources would be written to one output
    └── BrokerUnavailable         sending tasks failed; the images went back to pending

Only ``BrokerUnavailable`` is worth retrying (the next dispatch pass does so by itself);
the others need a person to change the submission. Errors of the catalog
(``catalog.errors``) and of the stores (``storage.errors``) propagate unchanged.
"""

from __future__ import annotations


class SchedulerError(Exception):
    """Base class of every error raised by ``scheduler``."""


class InvalidDestination(SchedulerError):
    """The output location equals the source or lies inside it.

    Outputs written there would be found by the next scan of the source and colorized
    again, and the originals could be overwritten.
    """


class OverlappingOutput(InvalidDestination):
    """The output location contains or lies in a source or another collection's output.

    Copies would be written among originals, or two collections would write over each
    other's copies. ``--force`` accepts it; the workers still replace no file that is not
    their own output of the same image.
    """


class OutputCollision(SchedulerError):
    """Two sources of one submission would be written to the same output location."""


class BrokerUnavailable(SchedulerError):
    """Tasks could not be handed to the broker; retry later.

    Attributes:
        sent: How many messages of the failed batch the broker had accepted before the
            failure (0 when unknown). ``dispatch()`` returns the others to ``pending``.
    """

    def __init__(self, message: str, *, sent: int = 0) -> None:
        """Create the error.

        Args:
            message: What failed, for a person.
            sent: Messages of the batch that were sent before the failure.
        """
        super().__init__(message)
        self.sent = sent
