"""Every YAML in configs/ loads into its schema; unknown keys are errors."""

from pathlib import Path

import pytest

from videogen.ads.formats import FormatPreset, NegativePreset
from videogen.policy import Blocklist
from videogen.presets import ModelPreset, QualityPreset, configs_dir, load_yaml, model_presets, quality_presets

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
SCHEMAS = {"models": ModelPreset, "quality": QualityPreset, "policy": Blocklist, "formats": FormatPreset, "negatives": NegativePreset}


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_yaml_loads(path):
    schema = SCHEMAS[path.parent.name]
    preset = load_yaml(path, schema)
    assert preset.name == path.stem


def test_presets_the_engine_needs_exist():
    assert configs_dir().resolve() == CONFIGS
    assert {"tiny-random", "wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "wan2.1-flf2v-14b"} <= set(model_presets())
    assert {"draft", "standard", "high"} <= set(quality_presets())
    assert model_presets()["wan2.1-flf2v-14b"].conditioning == "channels"
    assert model_presets()["wan2.1-t2v-1.3b"].conditioning == "replace"


def test_quality_windows_fit_a_4x_temporal_vae():
    for q in quality_presets().values():
        assert (q.window - 1) % 4 == 0 and q.overlap % 4 == 0 and q.keyframe_every % 4 == 0 and q.overlap < q.window


def test_unknown_key_is_an_error(tmp_path):
    bad = tmp_path / "draft.yaml"
    bad.write_text("name: draft\nsteps: 4\nguidance: 5\nwindow: 17\noverlap: 4\nkeyframe_every: 16\nstepz: 3\n")
    with pytest.raises(ValueError, match=r"draft.yaml: stepz=3: Extra inputs are not permitted"):
        load_yaml(bad, QualityPreset)
