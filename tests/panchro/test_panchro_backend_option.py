"""``--backend`` and ``PANCHRO_BACKEND`` reach the Settings and the workers; nonsense is refused."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from panchro.commands.workers import settings_environment, worker_config
from panchro.context import load_settings
from panchro.options import model_options
from panchro.settings import Settings


@click.command()
@model_options
@click.pass_context
def _show(ctx: click.Context, **_: object) -> None:
    click.echo(load_settings(ctx).backend)


@pytest.mark.parametrize(
    ("args", "env", "shown"),
    [([], None, "torch"), (["--backend", "onnx"], None, "onnx"), ([], "onnx", "onnx")],
)
def test_backend_option_and_variable_reach_the_settings(
    monkeypatch: pytest.MonkeyPatch, args: list[str], env: str | None, shown: str
) -> None:
    """The option overrides the variable, which overrides the default."""
    monkeypatch.delenv("PANCHRO_BACKEND", raising=False)
    if env is not None:
        monkeypatch.setenv("PANCHRO_BACKEND", env)
    result = CliRunner().invoke(_show, args)
    assert (result.exit_code, result.output.strip()) == (0, shown)


def test_bad_backend_is_refused_and_workers_inherit_the_chosen_one() -> None:
    """An unknown backend fails validation; a worker child gets the parent's backend."""
    result = CliRunner().invoke(_show, ["--backend", "tensorrt"])
    assert result.exit_code == 2 and "'tensorrt' is not one of 'torch', 'onnx'" in result.output
    with pytest.raises(ValueError, match="backend must be one of torch, onnx"):
        Settings(backend="tensorrt")
    settings = Settings(backend="onnx")
    assert settings_environment(settings, {})["PANCHRO_BACKEND"] == "onnx"
    config = worker_config(settings, untrained=True, node="cpu0@here", cpu_threads=1)
    assert config.backend == "onnx"
