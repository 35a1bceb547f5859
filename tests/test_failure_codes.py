"""One vocabulary of failure codes: every room's errors and skips name a code of it.

``catalog.reasons`` is the vocabulary; ``storage`` and ``ddcolor`` may not import it, so
their error classes name codes as plain strings, checked here. ``docs/failures.md`` holds
the generated table of the codes, checked here too.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from types import ModuleType

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from kombu.exceptions import OperationalError

import catalog.errors
import ddcolor.errors
import storage.errors
import workers.errors
from catalog.reasons import REASONS, FailureCode, describe_reason, reasons_table
from catalog.states import ImageStatus
from storage.skips import IGNORED_REASONS, SKIP_CODES, SKIP_MESSAGES
from workers.errors import failure_code
from workers.source_checks import SKIP_COLOUR_CODE

#: The documentation page of the codes.
FAILURES_DOC = Path(__file__).resolve().parents[1] / "docs" / "failures.md"


def _error_classes(module: ModuleType) -> list[type[BaseException]]:
    return [
        cls
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, Exception) and cls.__module__ == module.__name__
    ]


@pytest.mark.parametrize(
    "module",
    [storage.errors, ddcolor.errors, catalog.errors, workers.errors],
    ids=lambda module: module.__name__,
)
def test_every_error_class_names_a_code_of_the_vocabulary(module: ModuleType) -> None:
    classes = _error_classes(module)

    assert classes
    unknown = {cls.__name__: getattr(cls, "code", None) for cls in classes}
    unknown = {name: code for name, code in unknown.items() if code not in set(FailureCode)}
    assert not unknown, f"codes outside catalog.reasons: {unknown}"


def test_every_recorded_skip_reason_has_a_skip_code_and_every_skip_code_a_reason() -> None:
    assert set(SKIP_CODES) == set(SKIP_MESSAGES)
    assert not set(SKIP_CODES) & IGNORED_REASONS
    skip_codes = {code for code in FailureCode if REASONS[code].statuses == (ImageStatus.SKIPPED,)}
    # Skipped by a scan, or by a worker that read the original (--skip-colour).
    written = {*SKIP_CODES.values(), SKIP_COLOUR_CODE}
    assert written == {code.value for code in skip_codes}
    assert all(code.startswith("skip.") for code in written)


def test_every_code_has_a_reason_and_fits_the_column() -> None:
    assert list(REASONS) == list(FailureCode)
    for code, reason in REASONS.items():
        assert re.fullmatch(r"[a-z_]+(\.[a-z_]+)?", code) and len(code) <= 48
        assert reason.code is code and reason.meaning.endswith(".")
        assert reason.action.endswith(".")
    assert describe_reason(None).code is FailureCode.UNKNOWN
    assert describe_reason("no.such-code").code is FailureCode.UNKNOWN
    assert describe_reason("oom.floor").code is FailureCode.OOM_FLOOR


def test_the_documentation_holds_the_table_of_every_code() -> None:
    text = FAILURES_DOC.read_text()

    assert reasons_table() in text, "regenerate docs/failures.md from reasons_table()"
    assert all(f"| `{code.value}` |" in text for code in FailureCode)


@pytest.mark.parametrize(
    ("error", "encoding", "code"),
    [
        (storage.errors.TruncatedImage("x"), False, "decode.truncated"),
        (storage.errors.StorageFull("x"), False, "storage.full"),
        (ddcolor.errors.OutOfMemoryAtMinimumSize("x"), True, "oom.floor"),
        (catalog.errors.DatabaseUnavailable("x"), False, "catalog.unavailable"),
        (workers.errors.ForeignOutput("x"), False, "output.conflict"),
        (SoftTimeLimitExceeded(), True, "time_limit"),
        (OperationalError("x"), False, "broker.unavailable"),
        (ValueError("JPEG cannot store alpha"), True, "encode.failed"),
        (ValueError("x"), False, "unknown"),
        (RuntimeError("a bug"), True, "unknown"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else None,
)
def test_failure_code_of_an_error(error: BaseException, encoding: bool, code: str) -> None:
    assert failure_code(error, encoding=encoding) == code
