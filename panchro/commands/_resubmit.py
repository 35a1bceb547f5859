"""Submitting a collection again from ``panchro submit`` and ``panchro run``.

Which settings the command line gave (the others keep the collection's stored values),
the ``--redo-changed`` option, and the summary lines that say what changed, old -> new,
and what became of the images already done.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import click
from click.core import ParameterSource

if TYPE_CHECKING:
    from panchro.settings import Settings
    from scheduler import CollectionSettings, SettingChange, SubmitSummary

__all__ = [
    "check_same_checkpoint",
    "given_settings",
    "kept_for_run",
    "redo_changed_option",
    "resubmission_lines",
    "stored_settings",
]

#: The options that give each group of ``scheduler.SETTING_GROUPS``.
GROUP_OPTIONS: Final[Mapping[str, tuple[str, ...]]] = {
    "size": ("preset", "size"),
    "model": ("weights", "model", "untrained"),
    "precision": ("precision",),
    "upsample": ("upsample",),
    "output_format": ("output_format", "format_alias"),
    "not_before": ("not_before",),
    "priority": ("priority",),
}
#: Settings also given by the environment (``PANCHRO_*``), by group.
GROUP_SETTINGS: Final[Mapping[str, str]] = {"model": "weights", "precision": "precision"}
#: How the summary names each setting.
LABELS: Final[Mapping[str, str]] = {
    "input_size": "input size",
    "model_name": "model",
    "checkpoint_sha256": "checkpoint sha256",
    "untrained": "untrained weights",
    "not_before": "not before",
    "output_format": "output format",
    "model": "model",
}
#: How the summary names a setting that is not set.
UNSET: Final[Mapping[str, str]] = {
    "input_size": "the preset's or the workers' default",
    "model_name": "any",
    "precision": "auto",
    "output_format": "the original's format",
    "upsample": "the workers' default",
}
#: Hex digits of a checkpoint's SHA-256 shown in a summary.
SHA_DIGITS: Final = 12

#: ``--redo-changed``: colorize again the done images made with other settings.
redo_changed_option = click.option(
    "--redo-changed",
    is_flag=True,
    help="Colorize again the done images that were made with other settings than the "
    "collection's now (input size, checkpoint, --upsample, output format); each new copy "
    "replaces the image's own earlier one. Without it, changed settings apply only to "
    "images not done yet.",
)


def given_settings(
    ctx: click.Context, settings: Settings, *, always: Iterable[str] = ()
) -> frozenset[str]:
    """The setting groups a command was given, on its command line or in the environment.

    Args:
        ctx: The running command's context.
        settings: Its validated settings (``PANCHRO_WEIGHTS`` and ``PANCHRO_PRECISION``
            count as given).
        always: Groups the command always gives.

    Returns:
        Names of ``scheduler.SETTING_GROUPS``.
    """
    given = set(always)
    for group, options in GROUP_OPTIONS.items():
        sources = (ctx.get_parameter_source(name) for name in options)
        if any(source not in (None, ParameterSource.DEFAULT) for source in sources):
            given.add(group)
    for group, field in GROUP_SETTINGS.items():
        if field in settings.model_fields_set:
            given.add(group)
    return frozenset(given)


def stored_settings(database_url: str, name: str) -> CollectionSettings | None:
    """Read a collection's settings from an SQLite catalog that exists, creating nothing.

    Args:
        database_url: The catalog (an embedded run's).
        name: The collection.

    Returns:
        Its settings; None when the catalog file or the collection does not exist, or
        the catalog cannot be read as it is.
    """
    from sqlalchemy.engine import make_url

    from catalog import CatalogError, get_collection, make_sessionmaker, transaction
    from scheduler import CollectionSettings

    path = make_url(database_url).database
    if not path or not Path(path).is_file():
        return None
    sessions = make_sessionmaker(database_url)
    try:
        with transaction(sessions) as db:
            return CollectionSettings.stored(get_collection(db, name))
    except CatalogError:
        return None
    finally:
        bind: Any = sessions.kw["bind"]
        bind.dispose()


def kept_for_run(
    stored: CollectionSettings,
    given: frozenset[str],
    *,
    model: str | None,
    untrained: bool,
    size: int | None,
    upsample: str,
) -> tuple[str | None, bool, int | None, str]:
    """The model, input size and upsampling an embedded run loads, its collection's if not given.

    Args:
        stored: The collection's settings.
        given: The setting groups given (:func:`given_settings`).
        model: ``--model``.
        untrained: ``--untrained``.
        size: The size of ``--size`` or ``--preset``.
        upsample: ``--upsample``.

    Returns:
        ``(model, untrained, size, upsample)``.
    """
    if "model" not in given:
        model, untrained = stored.model_name, stored.untrained
    if "size" not in given:
        size = stored.input_size
    if "upsample" not in given and stored.upsample is not None:
        upsample = stored.upsample
    return model, untrained, size, upsample


def check_same_checkpoint(stored: CollectionSettings, loaded: str | None) -> None:
    """Refuse to go on with another checkpoint than the collection's, unless one was given.

    Args:
        stored: The collection's settings.
        loaded: The SHA-256 of the checkpoint found for its model; None for random weights.

    Raises:
        click.ClickException: If the collection names another checkpoint.
    """
    expected = stored.checkpoint_sha256
    if expected is None or stored.untrained or loaded == expected:
        return
    raise click.ClickException(
        f"the collection was colorized with {stored.model_name or 'a checkpoint'} sha256 "
        f"{expected[:SHA_DIGITS]}, but the weights found for it are sha256 "
        f"{(loaded or 'none')[:SHA_DIGITS]}: give that checkpoint with --weights to go on, "
        "or another one with --weights (or --model) to change it"
    )


def describe_value(name: str, value: Any) -> str:
    """A setting's value as the summary shows it.

    Args:
        name: The setting.
        value: Its value.

    Returns:
        The text.
    """
    if value is None:
        return UNSET.get(name, "none")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if name == "checkpoint_sha256":
        return str(value)[:SHA_DIGITS]
    return str(value)


def _change_line(change: SettingChange) -> str:
    label = LABELS.get(change.name, change.name.replace("_", " "))
    old, new = describe_value(change.name, change.old), describe_value(change.name, change.new)
    return f"{label}: {old} -> {new}"


def resubmission_lines(summary: SubmitSummary, *, redo: bool) -> list[str]:
    """Describe what submitting a known collection again changed, for a summary.

    Args:
        summary: What ``scheduler.submit()`` returned.
        redo: Whether ``--redo-changed`` was given.

    Returns:
        Lines without newlines, indented like the rest of the summary; none for a new
        collection.
    """
    if summary.created:
        return []
    lines = [f"  changed   {_change_line(change)}" for change in summary.setting_changes]
    if not lines:
        lines.append("  settings  unchanged (settings not given keep their stored values)")
    done = summary.reprocessing
    by_setting = ", ".join(
        f"{LABELS.get(name, name.replace('_', ' '))} {count}"
        for name, count in sorted(done.by_setting.items())
    )
    if done.redone:
        lines.append(
            f"  redo      {done.redone} done images made with other settings ({by_setting}) "
            "are pending again; each new copy replaces the image's own earlier one"
        )
        if done.by_setting.get("output_format"):
            lines.append(
                "            (a new output format gives new names: the earlier copies stay)"
            )
    kept = done.different - done.redone
    if kept:
        advice = "" if redo else "; --redo-changed colorizes them again"
        lines.append(
            f"  done      {kept} done images were made with other settings ({by_setting}) "
            f"and keep their outputs{advice}"
        )
    if done.renamed:
        lines.append(
            f"  outputs   {done.renamed} images not done yet get the new output format's names"
        )
    if done.same_content:
        lines.append(
            f"  touched   {done.same_content} done images' sources changed time or ETag but "
            "not content (same sha256): they stay done"
        )
    return lines
