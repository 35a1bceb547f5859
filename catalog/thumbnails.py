"""Recording the thumbnail pair of a done image (``images.source_thumb_uri`` and friends).

A worker writes a small JPEG of the original and one of its copy when an image is done,
so that a report never reads the masters again; this module records where they went.
"""

from __future__ import annotations

import logging

from sqlalchemy import update
from sqlalchemy.orm import Session

from catalog.engine import database_errors
from catalog.models import Image, ImageStatus

__all__ = ["record_thumbnails"]

logger = logging.getLogger(__name__)


@database_errors()
def record_thumbnails(
    db: Session,
    image_id: int,
    *,
    output_sha256: str,
    source_thumb_uri: str,
    output_thumb_uri: str,
) -> bool:
    """Record the thumbnail pair of a done image, if that output is still the image's.

    The update is conditional on the image being ``done`` with the output the thumbnails
    were made from, so a slow try never records its thumbnails over a later try's.

    Args:
        db: The caller's session.
        image_id: The image.
        output_sha256: SHA-256 of the output the thumbnails show.
        source_thumb_uri: Where the original's thumbnail was written.
        output_thumb_uri: Where the copy's thumbnail was written.

    Returns:
        True if recorded; False if the image is no longer done with that output.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    result = db.execute(
        update(Image)
        .where(
            Image.id == image_id,
            Image.status == ImageStatus.DONE,
            Image.output_sha256 == output_sha256,
        )
        .values(source_thumb_uri=source_thumb_uri, output_thumb_uri=output_thumb_uri)
        .execution_options(synchronize_session=False)
    )
    recorded = bool(getattr(result, "rowcount", 0))
    if not recorded:
        logger.debug("image %s: thumbnails not recorded, the output changed", image_id)
    return recorded
