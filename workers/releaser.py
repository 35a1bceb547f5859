"""Handing back, in the catalog, the images of a worker process that has exited."""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["NodeReleaser"]

logger = logging.getLogger(__name__)


class NodeReleaser:
    """Gives up, in the catalog, the tries of a worker that has exited.

    Node names are unique and a worker runs one task at a time, so once worker N has
    exited and its whole process group is killed, every image still ``running`` under N
    is certainly dead: its try is closed as ``lost`` and the image goes back to
    ``pending`` (``catalog.release_lost``), for the scheduler's next pass to send it
    again, before N is restarted. Its old message, if Redis still holds it, finds the
    image no longer running under its task id and does nothing. Tries left by an earlier
    launcher (a host that crashed) are not released at start: a worker of that name
    might still be finishing them; the scheduler's reaper asks the live workers and
    hands them back. The catalog's sessions are made on first use; nothing here touches
    a device.

    Args:
        database_url: The catalog database.
    """

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._sessions: Any = None

    def __call__(self, node: str) -> int:
        """Release the tries of worker ``node``.

        Args:
            node: The worker's node name (``images.worker_host``).

        Returns:
            How many images were released (to pending or, at the lost-try cap, failed).

        Raises:
            CatalogError: If the catalog cannot be reached or used.
        """
        from catalog import make_sessionmaker, release_lost, transaction

        if self._sessions is None:
            self._sessions = make_sessionmaker(self.database_url)
        with transaction(self._sessions) as db:
            released = release_lost(db, worker=node)
        count = released.requeued + released.failed
        if count:
            logger.warning(
                "worker %s: released %d image(s) it held (%d back to pending, %d failed "
                "after too many lost tries)",
                node,
                count,
                released.requeued,
                released.failed,
            )
        return count

    def close(self) -> None:
        """Release the catalog's connections."""
        if self._sessions is not None:
            self._sessions.kw["bind"].dispose()
            self._sessions = None
