"""Static checks of the deployment files in ``deploy/``.

Nothing here builds an image or starts a container: the files are parsed, every
``panchro`` (and ``celery``) command line in them is parsed by the real click command
without running it, every ``PANCHRO_*`` variable is matched against ``Settings``, and the
shutdown times are compared with the task time limits of ``workers.app``. Where the tools
are installed, the compose file is checked against the Compose specification
(check-jsonschema), the manifests against the Kubernetes API schema (kubernetes-validate),
the kustomization is built (kubectl) and the units are verified (systemd-analyze).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from celery.bin.celery import celery as celery_cli
from celery.worker.control import Panel
from packaging.requirements import Requirement
from packaging.version import Version

from panchro.cli import cli as panchro_cli
from panchro.settings import Settings
from workers.app import SOFT_TIME_LIMIT_S, TIME_LIMIT_S

#: The repository's root folder.
ROOT = Path(__file__).resolve().parents[2]
#: The folder under test.
DEPLOY = ROOT / "deploy"
#: The Compose file.
COMPOSE = DEPLOY / "compose.yaml"
#: The systemd units.
SYSTEMD = DEPLOY / "systemd"
#: The worker's template unit: one instance per GPU.
WORKER_UNIT = SYSTEMD / "panchro-worker@.service"
#: Every systemd unit.
UNITS = (
    WORKER_UNIT,
    SYSTEMD / "panchro-scheduler.service",
    SYSTEMD / "panchro-flower.service",
    SYSTEMD / "panchro-metrics.service",
)
#: The Kubernetes manifests.
KUBERNETES = DEPLOY / "kubernetes"
#: Manifests that are deliberately left out of kustomization.yaml.
NOT_KUSTOMIZED = ("secret.example.yaml", "worker-rocm.yaml")
#: Each Dockerfile, by the flavour of torch it installs.
DOCKERFILES = {
    "cuda": DEPLOY / "docker" / "Dockerfile.cuda",
    "rocm": DEPLOY / "docker" / "Dockerfile.rocm",
    "cpu": DEPLOY / "docker" / "Dockerfile.cpu",
}
#: The wheel index of each flavour of torch: PyTorch's own, with the flavour's folder.
TORCH_INDEX_PATTERNS = {
    "cuda": r"https://download\.pytorch\.org/whl/cu\d+",
    "rocm": r"https://download\.pytorch\.org/whl/rocm\d+(\.\d+)*",
    "cpu": r"https://download\.pytorch\.org/whl/cpu",
}
#: Kubernetes images built from deploy/docker, as the manifests name them.
PANCHRO_IMAGES = ("panchro-cpu", "panchro-cuda", "panchro-rocm")
#: Kubernetes release whose API the manifests must fit, besides the newest one known.
OLDEST_KUBERNETES = "1.29.0"
#: What a committed password may be instead of a value.
PLACEHOLDER = "CHANGE-ME"
#: Names of variables and keys whose values are secret.
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|ACCESS_KEY|API_KEY", re.IGNORECASE)
#: A Compose interpolation, ``${NAME}``, ``${NAME:-default}`` or ``${NAME:?message}``.
INTERPOLATION = re.compile(r"(?<!\$)\$\{(?P<name>\w+)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}")
#: A panchro command in a shell line: the program at the start of the line (after variable
#: assignments), an installed ``.../bin/panchro``, or Compose's ``run --rm cli``.
README_COMMAND = re.compile(
    r"(?:^\s*(?:[A-Z_]+=\S+\s+)*panchro|bin/panchro|run --rm cli)(?P<args>(?:[ \t]+[^\s;&|'#]+)+)"
)
#: Seconds per unit of a systemd time span or a Compose duration.
TIME_UNITS = {
    "": 1,
    "s": 1,
    "sec": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hr": 3600,
    "hour": 3600,
    "hours": 3600,
}


# --- readers -------------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def _panchro_services() -> dict[str, dict[str, Any]]:
    """Return the Compose services that run an image built from deploy/docker."""
    return {
        name: service
        for name, service in _compose()["services"].items()
        if str(service.get("build", {}).get("dockerfile", "")).startswith("deploy/docker/")
    }


def _manifests() -> dict[str, list[dict[str, Any]]]:
    """Return every Kubernetes object, by the name of the file it is in."""
    return {
        path.name: [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
        for path in sorted(KUBERNETES.glob("*.yaml"))
        if path.name != "kustomization.yaml"
    }


def _pod_specs() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Yield (file name, workload object, pod spec) for every workload of the manifests."""
    for name, docs in _manifests().items():
        for doc in docs:
            if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
                yield name, doc, doc["spec"]["template"]["spec"]


def _workload(file_name: str) -> dict[str, Any]:
    (doc,) = [doc for name, doc, _ in _pod_specs() if name == file_name]
    return doc


def _unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Parse a systemd unit into its sections' (key, value) lines, repeated keys kept."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"{path.name}: {line!r} is outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: {line!r} is not key=value"
        current.append((key.strip(), value.strip()))
    return sections


def _unit_value(path: Path, section: str, key: str) -> str | None:
    values = [value for name, value in _unit(path).get(section, []) if name == key]
    return values[-1] if values else None


def _dockerfile(path: Path) -> list[tuple[str, str]]:
    """Return a Dockerfile's instructions as (KEYWORD, arguments), continuations joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append((keyword.upper(), " ".join(arguments.split())))
        pending = ""
    assert not pending, f"{path.name} ends inside a continued line"
    return instructions


def _seconds(span: str) -> float:
    """Return the seconds of a systemd time span (``35min``) or Compose duration (``35m``)."""
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", span.strip().lower())
    assert parts, f"not a duration: {span!r}"
    return sum(float(number) * TIME_UNITS[unit] for number, unit in parts)


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


# --- command lines ---------------------------------------------------------------------------


def _recorder(reached: list[str], path: str) -> Callable[..., None]:
    def record(*_: Any, **__: Any) -> None:
        reached.append(path)

    return record


def _dry_run(group: click.Group, args: Sequence[str], prog: str) -> str:
    """Parse ``args`` as ``prog`` would, every command's body swapped out; nothing runs.

    Args:
        group: The program's click group.
        args: The arguments after the program's name.
        prog: The program's name, for messages.

    Returns:
        The path of the command that would run (``"db upgrade"``), or ``""`` when only
        the group's help was asked for.

    Raises:
        click.ClickException: An unknown command or option, a bad or missing value.
    """
    reached: list[str] = []
    saved: list[tuple[click.Command, Callable[..., Any] | None]] = []

    def swap(command: click.Command, path: str) -> None:
        saved.append((command, command.callback))
        command.callback = _recorder(reached, path)
        if isinstance(command, click.Group):
            # Through get_command: panchro's group loads its commands only when asked.
            context = click.Context(command)
            for name in command.list_commands(context):
                sub = command.get_command(context, name)
                assert sub is not None, f"{path} {name} is listed but cannot be loaded"
                swap(sub, f"{path} {name}".strip())

    swap(group, "")
    try:
        group.main(list(args), prog_name=prog, standalone_mode=False)
    finally:
        for command, callback in saved:
            command.callback = callback
    return reached[-1] if reached else ""


def _panchro_command_lines() -> Iterator[tuple[str, list[str]]]:
    """Yield (where, arguments after ``panchro``) for every panchro command line."""
    for name, service in _panchro_services().items():
        if "command" in service:
            yield f"compose.yaml:{name}", [str(arg) for arg in service["command"]]
    for flavour, path in DOCKERFILES.items():
        for keyword, arguments in _dockerfile(path):
            if keyword == "CMD":
                yield f"Dockerfile.{flavour}:CMD", json.loads(arguments)
    for path in UNITS:
        exec_start = _unit_value(path, "Service", "ExecStart")
        assert exec_start is not None, f"{path.name} has no ExecStart"
        program, *args = shlex.split(exec_start.replace("%i", "0"))
        assert Path(program).name == "panchro", f"{path.name} runs {program}"
        yield path.name, args
    for file_name, _, pod in _pod_specs():
        for container in pod["containers"]:
            if container["image"] in PANCHRO_IMAGES:
                assert "command" not in container, "the image's entry point is panchro"
                yield f"{file_name}:{container['name']}", [str(arg) for arg in container["args"]]
    yield from _readme_command_lines()


def _readme_command_lines() -> Iterator[tuple[str, list[str]]]:
    """Yield the panchro command lines of the shell examples in deploy/README.md."""
    blocks = re.findall(r"```bash\n(.*?)```", (DEPLOY / "README.md").read_text(), re.DOTALL)
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            for match in re.finditer(README_COMMAND, line):
                args = shlex.split(match.group("args"))
                yield f"README.md:{' '.join(args[:2])}", args


def _celery_command_lines() -> Iterator[tuple[str, list[str]]]:
    """Yield (where, arguments after ``celery``) for the health checks that call Celery."""
    for flavour in ("cuda", "rocm"):
        (check,) = [args for key, args in _dockerfile(DOCKERFILES[flavour]) if key == "HEALTHCHECK"]
        yield f"Dockerfile.{flavour}:HEALTHCHECK", _celery_args(check.split(" CMD ", 1)[1])
    for name, service in _compose()["services"].items():
        test = service.get("healthcheck", {}).get("test", [])
        if test[:1] == ["CMD-SHELL"] and "celery" in test[1]:
            yield f"compose.yaml:{name}", _celery_args(test[1].replace("$$", "$"))


def _celery_args(shell: str) -> list[str]:
    command = re.split(r"\s*(?:>|\|\|)\s*", shell)[0]
    program, *args = shlex.split(command)
    assert program == "celery"
    return args


PANCHRO_COMMAND_LINES = list(_panchro_command_lines())
CELERY_COMMAND_LINES = list(_celery_command_lines())


@pytest.mark.parametrize(
    "args", [args for _, args in PANCHRO_COMMAND_LINES], ids=[w for w, _ in PANCHRO_COMMAND_LINES]
)
def test_every_panchro_command_line_names_a_real_command_and_options(args: list[str]) -> None:
    command = _dry_run(panchro_cli, args, "panchro")

    assert command or args == ["--help"], f"panchro {shlex.join(args)} runs no command"


def test_panchro_command_lines_are_found_in_every_kind_of_file() -> None:
    places = {where.split(":")[0] for where, _ in PANCHRO_COMMAND_LINES}

    assert {
        "compose.yaml",
        "Dockerfile.cuda",
        "Dockerfile.rocm",
        "Dockerfile.cpu",
        "panchro-worker@.service",
        "worker.yaml",
        "README.md",
    } <= places


def test_dry_run_rejects_an_option_the_command_does_not_have() -> None:
    with pytest.raises(click.NoSuchOption):
        _dry_run(panchro_cli, ["workers", "--gpus", "all"], "panchro")
    with pytest.raises(click.UsageError):
        _dry_run(panchro_cli, ["db"], "panchro")


@pytest.mark.parametrize(
    "args", [args for _, args in CELERY_COMMAND_LINES], ids=[w for w, _ in CELERY_COMMAND_LINES]
)
def test_health_checks_call_real_celery_commands(args: list[str]) -> None:
    assert _dry_run(celery_cli, args, "celery") == "inspect"
    action = [arg for arg in args[args.index("inspect") + 1 :] if not arg.startswith("-")]
    broker = next(arg for arg in args if arg.startswith("--broker="))

    assert action == ["ping"]
    assert Panel.meta[action[0]].type == "inspect"
    assert re.match(r"--broker=\$\{?PANCHRO_BROKER_URL\b", broker), broker


def test_gpu_health_checks_ping_the_first_worker_of_their_host() -> None:
    destinations = {
        where: next(arg for arg in args if arg.startswith("--destination="))
        for where, args in CELERY_COMMAND_LINES
    }

    assert destinations["Dockerfile.cuda:HEALTHCHECK"] == "--destination=gpu0@$(hostname)"
    assert destinations["Dockerfile.rocm:HEALTHCHECK"] == "--destination=gpu0@$(hostname)"


def test_scheduler_health_check_reads_the_heartbeat_file_the_scheduler_touches() -> None:
    scheduler = _compose()["services"]["scheduler"]
    command = scheduler["command"]
    heartbeat = command[command.index("--heartbeat-file") + 1]

    # panchro scheduler is no Celery worker: nothing answers a ping in its name.
    assert command[0] == "scheduler"
    assert scheduler["healthcheck"]["test"] == [
        "CMD-SHELL",
        f"find {heartbeat} -mmin -2 | grep -q .",
    ]


# --- settings and secrets ----------------------------------------------------------------------


def _deploy_files() -> list[Path]:
    return sorted(path for path in DEPLOY.rglob("*") if path.is_file())


def test_every_panchro_variable_is_a_settings_field() -> None:
    fields = {f"PANCHRO_{name.upper()}" for name in Settings.model_fields}
    used = {
        (path.relative_to(DEPLOY).as_posix(), variable)
        for path in _deploy_files()
        for variable in re.findall(r"\bPANCHRO_[A-Z0-9_]+", path.read_text())
    }

    assert used, "no PANCHRO_ variable found"
    assert sorted(item for item in used if item[1] not in fields) == []


def _is_unset_or_placeholder(value: str) -> bool:
    """Return whether a secret's committed value is empty, a placeholder or a reference."""
    value = value.strip().strip("'\"")
    for match in INTERPOLATION.finditer(value):
        if match.group("op") in (":-", "-") and match.group("arg"):
            return False
    literal = INTERPOLATION.sub("", value)
    return literal in ("", PLACEHOLDER)


def test_no_secret_values_are_committed() -> None:
    leaks = []
    for path in _deploy_files():
        for number, raw in enumerate(path.read_text().splitlines(), 1):
            line = INTERPOLATION.sub("${REF}", raw)
            for password in re.findall(r"://[^\s:/@]+:([^\s@]+)@", line):
                if password not in ("${REF}", PLACEHOLDER):
                    leaks.append(f"{path.name}:{number}: URL password {password!r}")
            pair = re.match(r"\s*(?:#\s*)?(?:export\s+)?(\w+)\s*[:=]\s*(.*?)\s*$", raw)
            # A ``*_file`` key (Prometheus' ``password_file``) names a file, not a secret.
            name = pair.group(1) if pair else ""
            if pair and SECRET_NAME.search(name) and not name.lower().endswith("_file"):
                if pair.group(2) and not _is_unset_or_placeholder(pair.group(2)):
                    leaks.append(f"{path.name}:{number}: {name}")

    assert leaks == []


def test_secret_check_recognises_a_committed_password() -> None:
    assert _is_unset_or_placeholder("${FLOWER_PASSWORD:?set it}")
    assert _is_unset_or_placeholder("CHANGE-ME")
    assert not _is_unset_or_placeholder("hunter2")
    assert not _is_unset_or_placeholder("${FLOWER_PASSWORD:-hunter2}")


def test_filled_in_environment_files_are_ignored_by_git() -> None:
    ignored = (DEPLOY / ".gitignore").read_text().split()

    assert {".env", "panchro.env"} <= set(ignored)


# --- compose ---------------------------------------------------------------------------------


def test_compose_file_parses_with_the_services_of_the_design() -> None:
    services = _compose()["services"]

    assert {"redis", "postgres", "migrate", "scheduler", "worker", "flower"} <= set(services)
    assert {"worker-rocm", "minio"} <= set(services)


@pytest.mark.skipif(
    importlib.util.find_spec("check_jsonschema") is None, reason="check-jsonschema not installed"
)
def test_compose_file_follows_the_compose_specification() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_panchro_services_wait_for_the_migration() -> None:
    services = _compose()["services"]
    panchro = _panchro_services()

    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert set(panchro) - {"migrate"} >= {"scheduler", "worker", "worker-rocm", "flower"}
    for name, service in panchro.items():
        if name != "migrate":
            condition = service["depends_on"]["migrate"]["condition"]
            assert condition == "service_completed_successfully", name


def test_compose_redis_keeps_queued_messages_in_an_append_only_file() -> None:
    redis = _compose()["services"]["redis"]
    command = [str(arg) for arg in redis["command"]]

    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert any(volume.endswith(":/data") for volume in redis["volumes"])
    assert "healthcheck" in redis


def test_compose_postgres_keeps_its_data_on_a_volume_and_reports_health() -> None:
    postgres = _compose()["services"]["postgres"]
    volume = next(v for v in postgres["volumes"] if v.endswith(":/var/lib/postgresql/data"))

    assert volume.split(":")[0] in _compose()["volumes"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])


def test_compose_workers_use_gpus_and_outlast_the_hard_time_limit() -> None:
    services = _compose()["services"]
    (nvidia,) = services["worker"]["deploy"]["resources"]["reservations"]["devices"]

    assert nvidia["driver"] == "nvidia"
    assert "gpu" in nvidia["capabilities"]
    assert {"/dev/kfd", "/dev/dri"} <= set(services["worker-rocm"]["devices"])
    assert "video" in services["worker-rocm"]["group_add"]
    for name in ("worker", "worker-rocm", "worker-cpu"):
        assert services[name]["command"][0] == "workers"
        assert _seconds(services[name]["stop_grace_period"]) > TIME_LIMIT_S, name


def test_compose_flower_serves_all_interfaces_with_a_required_password() -> None:
    flower = _compose()["services"]["flower"]
    command = flower["command"]

    assert command[:1] == ["flower"]
    assert command[command.index("--address") + 1] == "0.0.0.0"
    assert any(str(port).endswith(":5555") for port in flower["ports"])
    password = INTERPOLATION.fullmatch(flower["environment"]["PANCHRO_FLOWER_PASSWORD"])
    assert password is not None and password.group("op") == ":?"
    assert flower["environment"]["PANCHRO_FLOWER_USER"]


def test_compose_metrics_service_publishes_the_metrics_port_with_a_password() -> None:
    from panchro.commands.metrics import METRICS_PORT

    metrics = _compose()["services"]["metrics"]
    command = metrics["command"]

    assert metrics["profiles"] == ["metrics"]
    assert command[:1] == ["metrics"]
    assert int(command[command.index("--port") + 1]) == METRICS_PORT
    assert any(str(port).endswith(f":{METRICS_PORT}") for port in metrics["ports"])
    assert INTERPOLATION.fullmatch(metrics["environment"]["PANCHRO_METRICS_PASSWORD"])


def test_prometheus_scrapes_panchro_metrics_with_basic_auth() -> None:
    from panchro.commands.metrics import METRICS_PORT
    from panchro.metrics import METRICS_PATH

    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "panchro"]

    assert job["metrics_path"] == METRICS_PATH
    assert job["basic_auth"]["username"] == "prometheus"
    assert "password_file" in job["basic_auth"]
    targets = [target for group in job["static_configs"] for target in group["targets"]]
    assert targets and all(target.endswith(f":{METRICS_PORT}") for target in targets)


def test_compose_required_variables_are_all_needed_without_any_profile() -> None:
    # Compose checks ${VAR:?} in every service, active or not: a variable required only by
    # a profile's service would stop every other profile too.
    def required(service: dict[str, Any]) -> set[str]:
        return {
            match.group("name")
            for text in _strings(service)
            for match in INTERPOLATION.finditer(text)
            if match.group("op") == ":?"
        }

    services = _compose()["services"]
    always = set().union(*(required(s) for s in services.values() if "profiles" not in s))
    optional = set().union(*(required(s) for s in services.values() if "profiles" in s))

    assert {"POSTGRES_PASSWORD", "FLOWER_PASSWORD"} <= always
    assert optional <= always


def test_compose_mounts_weights_and_originals_read_only() -> None:
    for name, service in _panchro_services().items():
        if name == "migrate":
            continue
        mounts = {
            INTERPOLATION.sub("host", volume).split(":")[1]: volume for volume in service["volumes"]
        }
        assert mounts["/weights"].endswith(":ro"), name
        assert mounts["/scans"].endswith(":ro"), name
        assert service["environment"]["PANCHRO_WEIGHTS"].startswith("/weights/"), name


# --- Dockerfiles -----------------------------------------------------------------------------


def _torch_requirement() -> Requirement:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (torch,) = [r for r in map(Requirement, project["dependencies"]) if r.name == "torch"]
    return torch


def _arg_default(instructions: list[tuple[str, str]], name: str) -> str:
    (value,) = [
        a.split("=", 1)[1] for k, a in instructions if k == "ARG" and a.startswith(f"{name}=")
    ]
    return value


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_dockerfiles_pin_torch_within_the_pyproject_range(flavour: str) -> None:
    instructions = _dockerfile(DOCKERFILES[flavour])
    runs = [arguments for keyword, arguments in instructions if keyword == "RUN"]
    torch_run = next(i for i, run in enumerate(runs) if '"torch==${TORCH_VERSION}"' in run)
    project_run = next(i for i, run in enumerate(runs) if re.search(r"pip install \.(\s|$)", run))

    assert Version(_arg_default(instructions, "TORCH_VERSION")) in _torch_requirement().specifier
    assert re.fullmatch(
        TORCH_INDEX_PATTERNS[flavour], _arg_default(instructions, "TORCH_INDEX_URL")
    )
    assert '--index-url "${TORCH_INDEX_URL}"' in runs[torch_run]
    # The GPU build must be in place before `pip install .` resolves torch from PyPI.
    assert torch_run < project_run


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_dockerfiles_build_in_stages_and_run_panchro_unprivileged(flavour: str) -> None:
    instructions = _dockerfile(DOCKERFILES[flavour])
    final = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    users = [arguments for keyword, arguments in instructions[final:] if keyword == "USER"]

    assert sum(keyword == "FROM" for keyword, _ in instructions) >= 2
    assert any(k == "COPY" and a.startswith("--from=") for k, a in instructions[final:])
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert [a for k, a in instructions if k == "ENTRYPOINT"] == ['["panchro"]']


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_dockerfiles_copy_every_package_that_pyproject_installs(flavour: str) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    copied = {
        source
        for keyword, arguments in _dockerfile(DOCKERFILES[flavour])
        if keyword == "COPY" and not arguments.startswith("--")
        for source in arguments.split()[:-1]
    }

    assert packages <= copied
    assert {"pyproject.toml", pyproject["project"]["readme"]} <= copied


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_dockerfiles_never_bake_in_model_weights(flavour: str) -> None:
    instructions = _dockerfile(DOCKERFILES[flavour])
    added = " ".join(a for k, a in instructions if k in ("COPY", "ADD"))
    runs = " ".join(a for k, a in instructions if k == "RUN")

    assert not re.search(r"\.(pth|bin|safetensors|pt)\b|weights", added)
    assert "weights fetch" not in runs and "huggingface" not in runs
    assert not any(k == "VOLUME" for k, _ in instructions)
    assert "PANCHRO_WEIGHTS_DIR=/weights" in " ".join(a for k, a in instructions if k == "ENV")


@pytest.mark.parametrize("flavour", ["cuda", "rocm"])
def test_gpu_images_check_their_health_and_stop_with_sigterm(flavour: str) -> None:
    instructions = _dockerfile(DOCKERFILES[flavour])
    (check,) = [a for k, a in instructions if k == "HEALTHCHECK"]
    start_period = re.search(r"--start-period=(\S+)", check)

    assert start_period is not None and _seconds(start_period.group(1)) >= 60
    assert [a for k, a in instructions if k == "STOPSIGNAL"] == ["SIGTERM"]
    assert json.loads([a for k, a in instructions if k == "CMD"][0])[0] == "workers"


# --- systemd ---------------------------------------------------------------------------------


def test_worker_unit_is_a_template_with_one_gpu_per_instance() -> None:
    exec_start = _unit_value(WORKER_UNIT, "Service", "ExecStart")

    assert WORKER_UNIT.name.endswith("@.service")
    assert exec_start is not None
    assert shlex.split(exec_start)[1:] == ["workers", "--devices", "%i"]
    assert "%i" in (_unit_value(WORKER_UNIT, "Unit", "Description") or "")


def test_worker_unit_stops_warmly_within_a_timeout_longer_than_a_task() -> None:
    timeout = _unit_value(WORKER_UNIT, "Service", "TimeoutStopSec")

    assert timeout is not None
    assert _seconds(timeout) > TIME_LIMIT_S > SOFT_TIME_LIMIT_S
    assert _unit_value(WORKER_UNIT, "Service", "KillSignal") == "SIGTERM"
    # SIGTERM to the launcher alone; the pool processes must not get it directly.
    assert _unit_value(WORKER_UNIT, "Service", "KillMode") == "mixed"


@pytest.mark.parametrize("unit", UNITS, ids=[unit.name for unit in UNITS])
def test_units_restart_on_failure_read_the_environment_file_and_are_hardened(unit: Path) -> None:
    def value(key: str) -> str | None:
        return _unit_value(unit, "Service", key)

    assert value("Restart") == "on-failure"
    assert value("EnvironmentFile") == "/etc/panchro/panchro.env"
    assert value("User") == "panchro"
    assert value("NoNewPrivileges") == "yes"
    assert value("ProtectSystem") == "strict"
    assert value("ProtectHome") == "yes"
    assert value("CapabilityBoundingSet") == ""
    assert _unit_value(unit, "Install", "WantedBy") == "multi-user.target"


def test_worker_unit_leaves_the_gpu_devices_reachable() -> None:
    service = dict(_unit(WORKER_UNIT)["Service"])

    # Each of these confines the unit to a fixed list of devices, without the GPUs.
    assert service.get("PrivateDevices", "no") == "no"
    assert service.get("ProtectClock", "no") == "no"
    assert "DeviceAllow" not in service
    assert service.get("DevicePolicy", "auto") == "auto"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not found")
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    installed = shutil.which("panchro", path=str(Path(sys.executable).parent))
    assert installed is not None
    names = []
    for unit in UNITS:
        program = shlex.split(_unit_value(unit, "Service", "ExecStart") or "")[0]
        # The units' install location does not exist here; verify them against this one.
        (tmp_path / unit.name).write_text(unit.read_text().replace(program, installed))
        names.append(str(tmp_path / unit.name.replace("@.", "@0.")))

    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *names],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert "Unknown" not in result.stderr and "ignoring" not in result.stderr, result.stderr


# --- Kubernetes ------------------------------------------------------------------------------


def test_kubernetes_manifests_parse_into_named_objects() -> None:
    manifests = _manifests()

    assert set(manifests) >= {
        "namespace.yaml",
        "configmap.yaml",
        "secret.example.yaml",
        "redis.yaml",
        "migrate-job.yaml",
        "scheduler.yaml",
        "worker.yaml",
        "worker-rocm.yaml",
        "flower.yaml",
    }
    for docs in manifests.values():
        for doc in docs:
            assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"]


@pytest.mark.parametrize("version", ["latest", OLDEST_KUBERNETES])
def test_kubernetes_manifests_follow_the_api_schema(version: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    if version == "latest":
        version = kubernetes_validate.latest_version()
    problems = []
    for name, docs in _manifests().items():
        for doc in docs:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                problems.append(f"{name}: {doc['kind']} {doc['metadata']['name']}: {exc.message}")

    assert problems == []


def test_kustomization_lists_every_manifest_but_the_documented_exceptions() -> None:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])

    assert listed == set(_manifests()) - set(NOT_KUSTOMIZED)
    assert kustomization["namespace"] == "panchro"
    assert {image["name"] for image in kustomization["images"]} == set(PANCHRO_IMAGES)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not found")
def test_kustomization_builds_into_the_panchro_namespace() -> None:
    result = subprocess.run(
        ["kubectl", "kustomize", str(KUBERNETES)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    migrate = [
        doc
        for doc in docs
        if doc["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "migrate"
    ]

    assert all(
        doc["metadata"].get("namespace") == "panchro" for doc in docs if doc["kind"] != "Namespace"
    )
    images = [
        c["image"]
        for doc in docs
        if "template" in doc.get("spec", {})
        for c in doc["spec"]["template"]["spec"]["containers"]
    ]
    assert not set(images) & set(PANCHRO_IMAGES), "kustomize left an image name unset"
    # deploy/README.md applies the migration alone with this label selector.
    assert [doc["kind"] for doc in migrate] == ["Job"]


@pytest.mark.parametrize(
    ("file_name", "gpu"), [("worker.yaml", "nvidia.com/gpu"), ("worker-rocm.yaml", "amd.com/gpu")]
)
def test_kubernetes_workers_take_one_gpu_and_outlast_the_hard_time_limit(
    file_name: str, gpu: str
) -> None:
    pod = _workload(file_name)["spec"]["template"]["spec"]
    (container,) = pod["containers"]

    assert container["args"][0] == "workers"
    assert container["resources"]["limits"][gpu] == 1
    assert pod["terminationGracePeriodSeconds"] > TIME_LIMIT_S
    assert any(
        m["mountPath"] == "/weights" and m.get("readOnly") for m in container["volumeMounts"]
    )


def test_kubernetes_selectors_match_their_pods() -> None:
    templates = []
    for _, workload, _ in _pod_specs():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        templates.append(labels)
        selector = workload["spec"].get("selector", {}).get("matchLabels", {})
        assert selector.items() <= labels.items(), workload["metadata"]["name"]
    services = [doc for docs in _manifests().values() for doc in docs if doc["kind"] == "Service"]

    assert services
    for service in services:
        selector = service["spec"]["selector"].items()
        assert any(selector <= labels.items() for labels in templates), service["metadata"]["name"]


def test_kubernetes_pods_refer_to_the_config_and_secret_that_exist() -> None:
    manifests = _manifests()
    (config,) = manifests["configmap.yaml"]
    (secret,) = manifests["secret.example.yaml"]
    names = {("ConfigMap", config["metadata"]["name"]), ("Secret", secret["metadata"]["name"])}
    for _, _, pod in _pod_specs():
        for container in pod["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert ("ConfigMap", source["configMapRef"]["name"]) in names
                if "secretRef" in source:
                    assert ("Secret", source["secretRef"]["name"]) in names
            for variable in container.get("env", []):
                reference = variable.get("valueFrom", {}).get("secretKeyRef")
                if reference:
                    assert reference["name"] == secret["metadata"]["name"]
                    assert reference["key"] in secret["stringData"]


def test_kubernetes_pods_with_a_read_only_root_write_temporary_files_to_a_volume() -> None:
    for file_name, _, pod in _pod_specs():
        for container in pod["containers"]:
            if not container.get("securityContext", {}).get("readOnlyRootFilesystem"):
                continue
            env = {v["name"]: v.get("value") for v in container.get("env", [])}
            mounts = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
            assert env.get("TMPDIR") in mounts, f"{file_name}: {container['name']}"


def test_kubernetes_secret_template_holds_placeholders_only() -> None:
    (secret,) = _manifests()["secret.example.yaml"]

    assert "data" not in secret
    for key, value in secret["stringData"].items():
        if SECRET_NAME.search(key):
            assert value == PLACEHOLDER, key
    assert f":{PLACEHOLDER}@" in secret["stringData"]["PANCHRO_DATABASE_URL"]


def test_kubernetes_flower_is_served_on_port_5555_with_basic_auth() -> None:
    (deployment, service) = _manifests()["flower.yaml"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    variables = {variable["name"] for variable in container["env"]}

    assert container["args"][container["args"].index("--address") + 1] == "0.0.0.0"
    assert {"PANCHRO_FLOWER_USER", "PANCHRO_FLOWER_PASSWORD"} <= variables
    assert [port["port"] for port in service["spec"]["ports"]] == [5555]


def test_kubernetes_migration_job_runs_db_upgrade_under_its_own_label() -> None:
    job = _workload("migrate-job.yaml")
    pod = job["spec"]["template"]["spec"]

    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "migrate"
    assert pod["containers"][0]["args"] == ["db", "upgrade"]
    assert pod["restartPolicy"] == "Never"
