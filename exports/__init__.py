"""Exports of a collection's record for archives: PREMIS, BagIt, fixity checks, reports.

Each export is a module of its own that reads the catalog (``catalog``) and the stored bytes
(``storage``), and nothing else of panchro.
"""

from __future__ import annotations
