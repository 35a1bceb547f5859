"""Tests of the DDColor network: official parameter names and the build registry."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest
import torch
from torch import nn

from ddcolor.build import build_ddcolor, create_model
from ddcolor.modeling import DDColor, MultiScaleColorDecoder
from ddcolor.registry import ARCHITECTURES, MODELS, ModelConfig, get_config

KeyRows = Callable[[str], list[tuple[str, tuple[int, ...], str]]]


def _entries(model: nn.Module) -> dict[str, tuple[tuple[int, ...], str]]:
    return {
        key: (tuple(value.shape), str(value.dtype).removeprefix("torch."))
        for key, value in model.state_dict().items()
    }


# --------------------------------------------------------------------------- parameter names


@pytest.mark.parametrize("arch", ["tiny", "large"])
def test_state_dict_has_exactly_the_official_keys_shapes_and_dtypes(
    arch: str, official_keys: KeyRows
) -> None:
    rows = official_keys(arch)
    expected = {key: (shape, dtype) for key, shape, dtype in rows}
    with torch.device("meta"):
        model = create_model(ARCHITECTURES[arch])
    actual = _entries(model)

    assert len(expected) == len(rows)
    assert sorted(set(expected) - set(actual)) == []
    assert sorted(set(actual) - set(expected)) == []
    wrong = {key: (actual[key], expected[key]) for key in expected if actual[key] != expected[key]}
    assert wrong == {}


def test_tiny_model_built_on_cpu_has_the_official_entries(
    tiny_model: DDColor, official_keys: KeyRows
) -> None:
    expected = {key: (shape, dtype) for key, shape, dtype in official_keys("tiny")}

    assert _entries(tiny_model) == expected


def test_strict_load_of_an_official_keyed_state_dict_needs_no_renaming(
    official_keys: KeyRows,
) -> None:
    with torch.device("meta"):
        model = create_model(ARCHITECTURES["large"])
        state = {
            key: torch.empty(shape, dtype=getattr(torch, dtype))
            for key, shape, dtype in official_keys("large")
        }

    result = model.load_state_dict(state, strict=True, assign=True)

    assert (result.missing_keys, result.unexpected_keys) == ([], [])


# --------------------------------------------------------------------------- build


def test_models_registry_holds_the_four_official_checkpoints() -> None:
    arches = {name: config.arch for name, config in MODELS.items()}

    assert arches == {
        "ddcolor_paper": "large",
        "ddcolor_modelscope": "large",
        "ddcolor_artistic": "large",
        "ddcolor_paper_tiny": "tiny",
    }
    assert MODELS["ddcolor_paper"].encoder_dims == (192, 384, 768, 1536)
    assert MODELS["ddcolor_paper"].encoder_depths == (3, 3, 27, 3)
    assert MODELS["ddcolor_paper_tiny"].encoder_dims == (96, 192, 384, 768)
    assert MODELS["ddcolor_paper_tiny"].encoder_depths == (3, 3, 9, 3)


def test_released_decoder_settings_are_the_defaults() -> None:
    config = MODELS["ddcolor_modelscope"]

    assert (config.nf, config.num_queries, config.num_scales, config.dec_layers) == (
        512,
        100,
        3,
        9,
    )
    assert config.num_output_channels == 2


def test_get_config_rejects_an_unknown_name() -> None:
    with pytest.raises(ValueError, match="ddcolor_nonexistent"):
        get_config("ddcolor_nonexistent")


def test_model_config_rejects_a_number_of_scales_other_than_three() -> None:
    with pytest.raises(ValueError, match="num_scales"):
        ModelConfig(
            name="x",
            arch="tiny",
            encoder_depths=(1, 1, 1, 1),
            encoder_dims=(8, 8, 8, 8),
            num_scales=4,
        )


def test_build_ddcolor_returns_an_eval_model_of_the_named_configuration() -> None:
    with torch.device("meta"):
        model = build_ddcolor("ddcolor_paper_tiny", device="meta")

    assert not model.training
    assert all(not module.training for module in model.modules())
    assert model.encoder.arch.dims == (96, 192, 384, 768)


# --------------------------------------------------------------------------- meta builds


def test_a_meta_build_does_not_import_torch_dynamo() -> None:
    # Initialising an embedding on the meta device imports torch._dynamo (about 1.5 s);
    # every command that only needs shapes (panchro submit, checkpoint checks) paid it.
    code = (
        "import sys, torch\n"
        "from ddcolor.build import create_model\n"
        "from ddcolor.registry import ARCHITECTURES\n"
        "with torch.device('meta'):\n"
        "    for config in ARCHITECTURES.values():\n"
        "        create_model(config)\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "False"


def test_colour_query_embeddings_are_initialised_like_torch_embeddings() -> None:
    torch.manual_seed(0)
    decoder = MultiScaleColorDecoder([8, 8, 8], hidden_dim=64, num_queries=400, dec_layers=1)
    for embedding in (decoder.query_feat, decoder.query_embed, decoder.level_embed):
        assert isinstance(embedding, nn.Embedding)
        assert embedding.weight.requires_grad
    weights = decoder.query_feat.weight.detach()
    assert weights.shape == (400, 64)
    assert abs(float(weights.mean())) < 0.05
    assert abs(float(weights.std()) - 1.0) < 0.05
    with torch.device("meta"):
        meta = MultiScaleColorDecoder([8, 8, 8], hidden_dim=64, num_queries=400, dec_layers=1)
    assert meta.query_feat.weight.is_meta
    assert meta.level_embed.weight.shape == (3, 64)
