"""The log of one image's processing: every line names the collection and the image.

``process_image()`` logs through an :class:`ImageLog` made on the ``workers.process``
logger, so log records keep that logger's name; the class lives here to keep
``process.py`` about the flow of an image.
"""

from __future__ import annotations

import logging
import time
from collections.abc import MutableMapping
from typing import Any

__all__ = ["ImageLog"]


class ImageLog(logging.LoggerAdapter[logging.Logger]):
    """Prefixes every line with the collection and the image, and passes them as fields.

    The fields (``collection``, ``collection_id``, ``image_id``, ``device``, and the
    ``status`` and ``duration_s`` of a state change) are what ``--log-format json`` shows.

    Args:
        logger: The logger the lines go to.
        image_id: The image.
        device: The device that processes it.
    """

    def __init__(self, logger: logging.Logger, image_id: int, device: str) -> None:
        super().__init__(logger, {"image_id": image_id, "device": device})
        self.image_id = image_id
        self.collection: str | None = None

    def claimed(self, collection: str, collection_id: int) -> None:
        """Name the collection in every later line.

        Args:
            collection: The collection's name.
            collection_id: Its id.
        """
        self.collection = collection
        self.extra = {
            **(self.extra or {}),
            "collection": collection,
            "collection_id": collection_id,
        }

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        """Prefix the message with the collection and the image; merge the fields."""
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        where = f"image {self.image_id}"
        if self.collection is not None:
            where = f"collection {self.collection} {where}"
        return f"{where}: {msg}", kwargs

    def changed(
        self, level: int, status: str, msg: str, *args: Any, began: float | None = None
    ) -> None:
        """Log a change of the image's status, with its duration when known.

        Args:
            level: The logging level.
            status: The new status (``running``, ``done``, ``failed``...).
            msg: The message, %-style.
            *args: Its arguments.
            began: ``time.perf_counter()`` when the change began, for ``duration_s``.
        """
        extra: dict[str, Any] = {"status": status}
        if began is not None:
            extra["duration_s"] = round(time.perf_counter() - began, 3)
        self.log(level, msg, *args, extra=extra)
