"""Tests of storage.registry: one options value, backends looked up by URI scheme."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage import registry
from storage.errors import InvalidURI
from storage.local import LocalStorage
from storage.options import StorageOptions
from storage.registry import open_storage, register_backend, registered_schemes
from storage.uri import S3


@pytest.fixture
def restore_s3_backend() -> Iterator[None]:
    saved = dict(registry._backends)
    yield
    registry._backends.clear()
    registry._backends.update(saved)


def test_the_built_in_schemes_are_registered() -> None:
    assert registered_schemes() == ("file", "s3")


def test_open_storage_passes_the_options_to_the_registered_factory(
    restore_s3_backend: None, tmp_path: Path
) -> None:
    given: list[StorageOptions] = []

    def factory(options: StorageOptions) -> LocalStorage:
        given.append(options)
        return LocalStorage(options)

    register_backend(S3, factory)
    options = StorageOptions(endpoint_url="http://127.0.0.1:9000", region="eu-west-1")

    assert isinstance(open_storage("s3://bucket/scans", options), LocalStorage)
    assert given == [options]


def test_a_backend_named_by_its_import_path_is_imported_on_first_use(
    restore_s3_backend: None,
) -> None:
    register_backend(S3, "storage.local:LocalStorage")

    assert isinstance(open_storage("s3://bucket/scans"), LocalStorage)


def test_a_scheme_without_a_backend_is_refused(restore_s3_backend: None) -> None:
    del registry._backends[S3]

    with pytest.raises(InvalidURI, match="no storage backend for s3://"):
        open_storage("s3://bucket/scans")


def test_opening_local_storage_imports_no_boto3(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from storage import open_storage\n"
        f"open_storage({str(tmp_path)!r}).exists({str(tmp_path / 'x')!r})\n"
        "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_settings_build_one_storage_options_value(monkeypatch: pytest.MonkeyPatch) -> None:
    from panchro.settings import Settings

    monkeypatch.setenv("PANCHRO_S3_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("PANCHRO_S3_REGION", "eu-west-1")
    monkeypatch.setenv("PANCHRO_S3_ADDRESSING_STYLE", "path")

    assert Settings().storage_options() == StorageOptions(
        endpoint_url="http://127.0.0.1:9000", region="eu-west-1", addressing_style="path"
    )
