"""Tests of the model options' one home (ddcolor.registry) and of the package's import graph."""

from __future__ import annotations

import ast
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import numpy as np
import pytest

from ddcolor.errors import InvalidSize
from ddcolor.modeling.ddcolor import SIZE_MULTIPLE
from ddcolor.registry import (
    DEFAULT_UPSAMPLE,
    MODELS,
    OFFICIAL_MODELS,
    OOM_LADDER,
    PRESETS,
    SIZE_STEP,
    UPSAMPLE_METHODS,
    size_ladder,
    validate_size,
    validate_upsample,
)

#: The ddcolor package's folder.
PACKAGE = Path(__file__).resolve().parents[2] / "ddcolor"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any level (functions and TYPE_CHECKING included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def _graph() -> dict[str, set[str]]:
    """ddcolor module -> the ddcolor modules it imports (the lazy package facade left out)."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {
        name: {target for target in _imports(path) if target in modules and target != name}
        for name, path in modules.items()
        if name != "ddcolor"
    }


def test_ddcolor_modules_import_each_other_without_a_circle() -> None:
    graph = _graph()
    assert "ddcolor.checkpoints" in graph and "ddcolor.build" in graph
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        pytest.fail(f"import circle: {' -> '.join(exc.args[1])}")
    assert order.index("ddcolor.registry") < order.index("ddcolor.build")
    # Reading checkpoints never needs the network (segment-anything's build_sam shape).
    assert not graph["ddcolor.checkpoints"] & {"ddcolor.build", "ddcolor.modeling.ddcolor"}


def test_modeling_imports_nothing_outside_itself() -> None:
    outside = {
        (name, target)
        for name, targets in _graph().items()
        if name.startswith("ddcolor.modeling")
        for target in targets
        if not target.startswith("ddcolor.modeling")
    }
    assert outside == set()


def test_registry_and_checkpoint_checks_import_neither_torch_nor_numpy() -> None:
    code = (
        "import sys\n"
        "import ddcolor, ddcolor.registry, ddcolor.checkpoints\n"
        "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"


def test_the_size_rule_and_ladder() -> None:
    assert PRESETS == {"portrait": 512, "landscape": 1024}
    assert OOM_LADDER == (1024, 768, 512, 384, 256)
    assert SIZE_STEP == SIZE_MULTIPLE  # the encoder's total stride
    assert size_ladder(2048) == (2048, 1024, 768, 512, 384, 256)
    assert size_ladder(256) == (256,)
    assert validate_size(np.int64(512)) == 512  # type: ignore[arg-type]
    with pytest.raises(InvalidSize, match="not a multiple of 32 from 256 to 2048"):
        validate_size(500)


def test_names_of_models_and_upsampling() -> None:
    assert OFFICIAL_MODELS == tuple(MODELS)
    assert OFFICIAL_MODELS[0] == "ddcolor_modelscope"  # the upstream project's default
    assert UPSAMPLE_METHODS[0] == DEFAULT_UPSAMPLE
    assert [validate_upsample(name) for name in UPSAMPLE_METHODS] == list(UPSAMPLE_METHODS)
    with pytest.raises(ValueError, match="lanczos"):
        validate_upsample("lanczos")
