"""The command line starts without importing the heavy libraries: help stays cheap."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import click
import pytest
from PIL import Image

from catalog.errors import CollectionNotFound
from migrations.runner import upgrade
from panchro.cli_support import fail_on

#: Libraries that take 0.05 to 1 s to import each; help needs none of them.
HEAVY = ("torch", "sqlalchemy", "celery", "kombu", "numpy", "PIL", "boto3", "pydantic")

#: Imports the CLI, renders the help of the group and of every command, prints what loaded.
_PROBE = """
import sys
import click
from panchro.cli import cli

context = click.Context(cli, info_name="panchro")
cli.get_help(context)
for name in cli.list_commands(context):
    command = cli.get_command(context, name)
    command.get_help(click.Context(command, info_name=name, parent=context))
print(" ".join(name for name in {heavy!r} if name in sys.modules))
"""


def test_cli_help_imports_none_of_the_heavy_libraries() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=HEAVY)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.split() == []


def test_user_errors_still_become_one_line_cli_errors_once_their_module_is_loaded() -> None:
    with pytest.raises(click.ClickException, match="listing: no collection\\s*x"):
        with fail_on("listing"):
            raise CollectionNotFound("no collection\n x")
    with pytest.raises(KeyError):
        with fail_on("listing"):
            raise KeyError("not a user error")


@pytest.mark.parametrize("package", ["catalog", "storage", "scheduler", "ddcolor", "migrations"])
def test_every_public_name_of_a_lazy_package_resolves(package: str) -> None:
    module = importlib.import_module(package)

    missing = [name for name in module.__all__ if getattr(module, name, None) is None]

    assert missing == []
    with pytest.raises(AttributeError):
        module.no_such_name  # noqa: B018


def test_the_summary_has_words_for_every_reason_a_scan_ignores() -> None:
    from panchro.commands._skipped import IGNORED_WORDS
    from storage.skips import IGNORED_REASONS

    assert set(IGNORED_WORDS) == set(IGNORED_REASONS)


#: Submits a folder through the CLI in this process, then prints what loaded.
_SUBMIT_PROBE = """
import sys
from panchro.cli import cli

arguments = ["--database-url", {database!r}, "submit", {source!r}, "--collection", "probe",
             "--output", {output!r}, "--untrained", "--no-dispatch"]
cli.main(arguments, standalone_mode=False)
print("commands:", " ".join(sorted(n for n in sys.modules if n.startswith("panchro.commands."))))
print("loaded:", " ".join(n for n in ("torch", "numpy", "PIL", "alembic") if n in sys.modules))
"""


def test_submit_queues_a_folder_without_the_image_libraries_nor_alembic(tmp_path: Path) -> None:
    # Submitting finds images by their first bytes: it needs neither torch nor numpy nor
    # Pillow, which would add a third of a second before the first image is queued; the
    # catalog's revision (made before, as `panchro db upgrade` makes it) is checked
    # without Alembic.
    source = tmp_path / "scans"
    source.mkdir()
    for name in ("a.png", "b.png"):
        Image.new("L", (8, 8)).save(source / name)
    database = f"sqlite:///{tmp_path / 'catalog.sqlite3'}"
    upgrade(database)
    probe = _SUBMIT_PROBE.format(
        database=database,
        source=str(source),
        output=str(tmp_path / "colour"),
    )

    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False
    )

    assert done.returncode == 0, done.stderr
    assert "2 new" in done.stdout
    assert done.stdout.splitlines()[-1].split() == ["loaded:"]
    # The other commands' modules (export's XML libraries, colorize's...) stay unloaded.
    (commands,) = [line for line in done.stdout.splitlines() if line.startswith("commands:")]
    assert {name for name in commands.split()[1:] if not name.split(".")[-1].startswith("_")} == {
        "panchro.commands.submit"
    }


def test_every_command_of_the_table_is_the_command_of_that_name() -> None:
    # The group imports a command's module only when it is asked for; a wrong entry would
    # only show when someone types that command.
    context = click.Context(cli_group(), info_name="panchro")
    group = cli_group()
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        assert command is not None and command.name == name
    assert group.get_command(context, "no-such-command") is None


def cli_group() -> click.Group:
    from panchro.cli import cli

    return cli
