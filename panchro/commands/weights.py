"""``panchro weights``: fetch an official DDColor checkpoint and list the fetched ones."""

from __future__ import annotations

import click

from ddcolor.registry import OFFICIAL_MODELS
from panchro.weights import DEFAULT_BASE_URL, WeightsError


@click.group("weights")
def weights() -> None:
    """Official DDColor checkpoints: fetch one, list what is here."""


@weights.command("fetch")
@click.argument("name", type=click.Choice(OFFICIAL_MODELS), default=OFFICIAL_MODELS[0])
@click.option(
    "--base-url",
    default=DEFAULT_BASE_URL,
    show_default=True,
    help="Where the checkpoints are published (a mirror may be given).",
)
@click.pass_context
def fetch(ctx: click.Context, name: str, base_url: str) -> None:
    """Download the official checkpoint NAME (default ddcolor_modelscope) and verify it.

    The file is checked to be a DDColor checkpoint of that model before it is kept, and
    its sha256 is recorded beside it. Commands given no --weights use it from then on.
    """
    from tqdm import tqdm

    from panchro.context import load_settings
    from panchro.weights import fetch_weights

    settings = load_settings(ctx)
    with tqdm(unit="B", unit_scale=True, unit_divisor=1024, desc=name, leave=False) as bar:

        def progress(received: int, total: int | None) -> None:
            bar.total = total
            bar.update(received - bar.n)

        try:
            fetched = fetch_weights(
                name, settings.weights_dir, base_url=base_url, on_progress=progress
            )
        except WeightsError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(f"{fetched.name}: {fetched.path}\nsha256 {fetched.sha256}")


@weights.command("list")
@click.pass_context
def list_weights(ctx: click.Context) -> None:
    """List the checkpoints fetched into the weights folder (PANCHRO_WEIGHTS_DIR)."""
    from panchro.context import load_settings
    from panchro.weights import find_fetched

    settings = load_settings(ctx)
    found = [find_fetched(settings.weights_dir, name) for name in OFFICIAL_MODELS]
    if not any(found):
        click.echo(f"none fetched into {settings.weights_dir}; try `panchro weights fetch`")
    for item in found:
        if item is not None:
            click.echo(f"{item.name}  {item.path}  sha256 {item.sha256}")
