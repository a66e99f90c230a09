"""Requests are validated where they enter: every error names the field and the value."""

import math

import pytest

from videogen.errors import RequestError
from videogen.request import ClipRequest, resolve


def test_defaults_come_from_the_model_and_quality_presets():
    spec = resolve({"prompt": "a red circle"})
    assert (spec.width, spec.height, spec.fps, spec.frames) == (64, 64, 8, 33)
    assert (spec.steps, spec.window, spec.overlap, spec.keyframe_every) == (4, 17, 4, 16)
    assert spec.latent_frames == 9 and spec.latent_window == 5 and spec.latent_overlap == 1


def test_seconds_times_fps_gives_frames():
    assert resolve({"prompt": "x", "seconds": 4, "fps": 8}).frames == 32


def test_frames_not_4k_plus_1_are_kept_not_rounded():
    spec = resolve({"prompt": "x", "frames": 30})
    assert spec.frames == 30
    assert spec.latent_frames == 9  # decodes to 33 pixel frames, trimmed to 30


@pytest.mark.parametrize(
    "fields,field,fragment",
    [
        ({"prompt": ""}, "prompt", "must not be empty"),
        ({"prompt": "   "}, "prompt", "must not be empty"),
        ({"prompt": "x", "frames": 0}, "frames", "greater than or equal to 1"),
        ({"prompt": "x", "frames": -3}, "frames", "greater than or equal to 1"),
        ({"prompt": "x", "frames": 5000}, "frames", "exceeds the limit of 1025"),
        ({"prompt": "x", "width": 40}, "width", "multiple of 16"),
        ({"prompt": "x", "height": 0}, "height", "greater than or equal to 1"),
        ({"prompt": "x", "width": 1024, "height": 1024}, "width", "exceeds 262144"),
        ({"prompt": "x", "window": 17, "overlap": 20}, "overlap", "smaller than window=17"),
        ({"prompt": "x", "window": 9, "overlap": 12}, "overlap", "smaller than window=9"),
        ({"prompt": "x", "window": 16}, "window", "4k+1"),
        ({"prompt": "x", "overlap": 3}, "overlap", "multiple of 4"),
        ({"prompt": "x", "keyframe_every": 6}, "keyframe_every", "multiple of 4"),
        ({"prompt": "x", "guidance": math.nan}, "guidance", "finite"),
        ({"prompt": "x", "guidance": 100}, "guidance", "less than or equal to 50"),
        ({"prompt": "x", "guidance": -1}, "guidance", "greater than or equal to 0"),
        ({"prompt": "x", "steps": 0}, "steps", "greater than or equal to 1"),
        ({"prompt": "x", "steps": 5000}, "steps", "less than or equal to 1000"),
        ({"prompt": "x", "model": "no-such-model"}, "model", "not a preset"),
        ({"prompt": "x", "quality": "ultra"}, "quality", "unknown quality preset"),
        ({"prompt": "x", "blend": "sharp"}, "blend", "'linear', 'cosine'"),
        ({"prompt": "x", "colour": "red"}, "colour", "unknown field"),
        ({"prompt": "x", "seconds": 1.01, "fps": 8}, "seconds", "whole number of frames"),
        ({"prompt": "x", "seconds": 1, "frames": 8}, "seconds", "frames or seconds, not both"),
    ],
)
def test_bad_input_names_field_and_value(fields, field, fragment):
    with pytest.raises(RequestError) as info:
        resolve(fields)
    err = info.value
    assert err.field == field
    assert str(err).startswith(f"{field}=")
    assert fragment in str(err)
    assert "\n" not in str(err)


def test_a_folder_that_is_not_a_model(tmp_path):
    with pytest.raises(RequestError, match=r"model='.*': not a diffusers model folder"):
        resolve({"prompt": "x", "model": str(tmp_path)})


def test_request_round_trips_as_json():
    r = ClipRequest.parse({"prompt": "a cat", "frames": 9, "seed": 3})
    assert ClipRequest.model_validate_json(r.model_dump_json()) == r
