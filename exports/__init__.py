"""Exports of a collection for people and other systems: reports, packages, checks.

Imports only ``catalog`` and ``storage``; each export is its own module.
"""
