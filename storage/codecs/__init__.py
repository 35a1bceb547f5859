"""Image codecs behind ``storage.imaging``: one module per concern.

``formats`` (sniffing, output naming), ``decode`` (validation and decoding), ``pillow``
(Pillow modes to arrays, metadata), ``encode`` (writing), ``samples`` (array operations),
``deep`` (16-bit colour through Pillow), ``tiff`` (wide TIFFs with tifffile), ``png`` (the
PNG writer) and ``jpeg`` (quality estimation).
Import the public API from ``storage.imaging``.
"""

from __future__ import annotations
