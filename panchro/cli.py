"""The ``panchro`` command line: one click group; the commands live in ``panchro.commands``."""

from __future__ import annotations

import importlib
import logging

import click

from panchro.context import SETTING_OPTIONS
from panchro.logs import configure_logging, log_format_option

#: Every command, by name: the module that defines it and the name of its object there. A
#: command's module (and what it imports) loads only when that command runs or shows its
#: help, so ``panchro submit`` does not pay for ``export``'s XML libraries or ``colorize``'s
#: progress bars.
COMMANDS: dict[str, tuple[str, str]] = {
    "cancel": ("panchro.commands.jobs", "cancel_command"),
    "colorize": ("panchro.commands.colorize", "colorize"),
    "db": ("panchro.commands.database", "db"),
    "doctor": ("panchro.commands.doctor", "doctor"),
    "export": ("panchro.commands.exports", "export_command"),
    "flower": ("panchro.commands.workers", "flower_command"),
    "list": ("panchro.commands.listing", "list_command"),
    "metrics": ("panchro.commands.metrics", "metrics_command"),
    "report": ("panchro.commands.report", "report_command"),
    "retry": ("panchro.commands.jobs", "retry_command"),
    "run": ("panchro.commands.run", "run"),
    "scheduler": ("panchro.commands.jobs", "scheduler_command"),
    "status": ("panchro.commands.status", "status_command"),
    "submit": ("panchro.commands.submit", "submit_command"),
    "verify": ("panchro.commands.exports", "verify_command"),
    "weights": ("panchro.commands.weights", "weights"),
    "worker-child": ("panchro.commands.workers", "worker_child_command"),
    "workers": ("panchro.commands.workers", "workers_command"),
}


#: Commands that end without Python's teardown of their modules (``panchro.quick_exit``):
#: short ones that keep no file open outside a ``with`` block and start no processes.
QUICK_EXIT_COMMANDS = frozenset({"cancel", "list", "retry", "status", "submit"})
#: Whether the command being run is one of them (set by the group before it runs).
_ending = {"quick": False}


class LazyGroup(click.Group):
    """A click group that imports a command's module only when the command is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command name, sorted (hidden ones included; help leaves those out)."""
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command called ``cmd_name``, its module imported on first use."""
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module_name, attribute = COMMANDS[cmd_name]
            command = getattr(importlib.import_module(module_name), attribute)
            if not isinstance(command, click.Command) or command.name != cmd_name:
                raise RuntimeError(f"{module_name}.{attribute} is not the command {cmd_name!r}")
            self.add_command(command)
        return self.commands.get(cmd_name)


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--database-url",
    metavar="URL",
    help="Catalog database (SQLAlchemy URL). Env: PANCHRO_DATABASE_URL. "
    "Default: a SQLite file panchro.sqlite3 in the working directory.",
)
@click.option(
    "--broker-url",
    metavar="URL",
    help="Celery broker (Redis URL). Env: PANCHRO_BROKER_URL. Default: redis://127.0.0.1:6379/0.",
)
@click.option(
    "--s3-endpoint-url",
    metavar="URL",
    help="S3 endpoint for S3-compatible stores (MinIO, Ceph...). Env: PANCHRO_S3_ENDPOINT_URL.",
)
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@log_format_option
@click.version_option(package_name="panchro")
@click.pass_context
def cli(ctx: click.Context, /, verbose: int, **options: str | None) -> None:
    """panchro colorizes collections of black-and-white scans with DDColor.

    \b
    On one machine, no servers:   panchro colorize SCANS/ COLOR/
    A collection on a cluster:    panchro submit s3://bucket/scans --collection NAME --output ...
    What is installed and found:  panchro doctor
    """
    configure_logging(level=logging.WARNING - 10 * min(verbose, 2))
    ctx.obj = {"overrides": {k: v for k, v in options.items() if k in SETTING_OPTIONS and v}}
    _ending["quick"] = ctx.invoked_subcommand in QUICK_EXIT_COMMANDS


def main() -> None:
    """Console-script entry point."""
    try:
        cli(prog_name="panchro")
    except SystemExit as done:
        if _ending["quick"]:
            from panchro.quick_exit import exit_now

            exit_now(done.code)
        raise


if __name__ == "__main__":
    main()
