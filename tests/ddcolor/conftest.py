"""Fixtures for the DDColor model tests: official key lists and randomised models.

The key lists in ``ddcolor/layouts`` were taken from the upstream implementation
(github.com/piddnad/DDColor, Apache-2.0 weights); see the README there.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ddcolor.build import create_model
from ddcolor.modeling.ddcolor import DDColor
from ddcolor.registry import ARCHITECTURES

#: Folder of the official state-dict key lists.
OFFICIAL_KEYS_DIR = Path(__file__).resolve().parents[2] / "ddcolor" / "layouts"
#: Power-iteration steps (count) used to give random spectral-norm weights their vectors.
POWER_ITERATIONS = 30
#: Values (count) in the random pool that large synthetic state dicts are cut from.
POOL_SIZE = 10_000_000

#: One row of an official key list: name, shape, dtype name.
KeyRow = tuple[str, tuple[int, ...], str]


def _read_official_keys(arch: str) -> list[KeyRow]:
    rows = json.loads((OFFICIAL_KEYS_DIR / f"ddcolor_{arch}.json").read_text())
    return [(key, tuple(shape), dtype) for key, shape, dtype in rows]


@pytest.fixture(scope="session")
def official_keys() -> Callable[[str], list[KeyRow]]:
    """Return the official ``(key, shape, dtype)`` rows of an architecture (large, tiny)."""
    return _read_official_keys


def _singular_vectors(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    matrix = weight.flatten(1).double()
    u = F.normalize(torch.ones(matrix.shape[0], dtype=torch.float64), dim=0)
    v = torch.empty(0, dtype=torch.float64)
    for _ in range(POWER_ITERATIONS):
        v = F.normalize(matrix.t() @ u, dim=0)
        u = F.normalize(matrix @ v, dim=0)
    return u.float(), v.float()


def _with_consistent_spectral_vectors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for key in [key for key in state if key.endswith(".weight_orig")]:
        prefix = key[: -len("weight_orig")]
        state[prefix + "weight_u"], state[prefix + "weight_v"] = _singular_vectors(state[key])
    return state


def randomise_state_dict(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Perturb every float entry of a state dict so that no layer is an identity.

    Layer-scale factors, norm affines, biases and batch-norm statistics all move away from
    their initial values (which would hide wiring mistakes); spectral-norm vectors are then
    recomputed from the new weights so that the model stays numerically sane.

    Args:
        state: A DDColor state dict; not modified.
        seed: Seed of the perturbation.

    Returns:
        A new state dict with the same keys, shapes and dtypes.
    """
    generator = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not value.is_floating_point() or key in ("mean", "std"):
            out[key] = value.clone()
            continue
        noise = torch.randn(value.shape, generator=generator)
        if key.endswith("running_var"):
            out[key] = torch.rand(value.shape, generator=generator) + 0.5
        elif key.endswith("gamma"):
            out[key] = 0.5 * noise
        else:
            spread = value.std().item() if value.numel() > 1 else 0.0
            out[key] = value + noise * (0.5 * spread if spread > 0 else 0.1)
    return _with_consistent_spectral_vectors(out)


def synthetic_state_dict(rows: list[KeyRow], seed: int) -> dict[str, torch.Tensor]:
    """Build a state dict with random values from an official key list.

    Values are cut from one random pool (fast even for the 228M-value large model).

    Args:
        rows: Official ``(key, shape, dtype)`` rows.
        seed: Seed of the pool and the cut offsets.

    Returns:
        A state dict with exactly those keys, shapes and dtypes.
    """
    generator = torch.Generator().manual_seed(seed)
    pool = torch.randn(POOL_SIZE, generator=generator) * 0.05
    state: dict[str, torch.Tensor] = {}
    for key, shape, dtype in rows:
        count = 1
        for size in shape:
            count *= size
        if dtype != "float32":
            state[key] = torch.zeros(shape, dtype=getattr(torch, dtype))
            continue
        start = int(torch.randint(0, POOL_SIZE - count + 1, (1,), generator=generator))
        value = pool[start : start + count].clone().reshape(shape)
        if key.endswith("running_var"):
            value = value.abs() + 0.5
        elif key == "mean":
            value = torch.tensor([0.485, 0.456, 0.406]).view(shape)
        elif key == "std":
            value = torch.tensor([0.229, 0.224, 0.225]).view(shape)
        state[key] = value
    return _with_consistent_spectral_vectors(state)


@pytest.fixture(scope="session")
def tiny_model() -> DDColor:
    """A tiny DDColor in eval mode with randomised weights; tests must not modify it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = create_model(ARCHITECTURES["tiny"])
    model.load_state_dict(randomise_state_dict(model.state_dict(), seed=1), strict=True)
    return model.eval()


@pytest.fixture
def tiny_model_copy(tiny_model: DDColor) -> DDColor:
    """A private copy of :func:`tiny_model` that a test may change."""
    return copy.deepcopy(tiny_model)


@pytest.fixture(scope="session")
def large_state_dict(official_keys: Callable[[str], list[KeyRow]]) -> dict[str, torch.Tensor]:
    """A synthetic state dict of the large architecture, built from the official key list."""
    return synthetic_state_dict(official_keys("large"), seed=2)


@pytest.fixture(scope="session")
def large_model(large_state_dict: dict[str, torch.Tensor]) -> DDColor:
    """A large DDColor in eval mode holding :func:`large_state_dict`; do not modify it."""
    with torch.device("meta"):
        model = create_model(ARCHITECTURES["large"])
    model.load_state_dict(large_state_dict, strict=True, assign=True)
    return model.eval()
