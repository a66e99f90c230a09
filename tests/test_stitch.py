"""Blend weights: they sum to 1 at every frame, and windows that agree blend to themselves."""

import numpy as np
import pytest

from videogen.plan import make_plan
from videogen.stitch import BLEND_METHODS, blend, blend_range, window_weights


@pytest.mark.parametrize("method", BLEND_METHODS)
@pytest.mark.parametrize("frames,window,overlap", [(22, 5, 1), (30, 8, 3), (12, 6, 4), (5, 5, 2)])
def test_weights_sum_to_one(method, frames, window, overlap):
    plan = make_plan(frames, window, overlap, 0)
    total = np.zeros(frames)
    for w, weights in zip(plan.windows, window_weights(plan, method)):
        assert weights.shape == (w.length,)
        assert (weights > 0).all()
        total[w.start : w.stop] += weights
    np.testing.assert_allclose(total, 1.0, atol=1e-12)


@pytest.mark.parametrize("method", BLEND_METHODS)
def test_agreeing_windows_blend_to_themselves(method):
    plan = make_plan(22, 5, 2, 0)
    clip = np.random.default_rng(0).standard_normal((4, 22, 3, 3)).astype(np.float32)
    windows = [clip[:, w.start : w.stop] for w in plan.windows]
    np.testing.assert_allclose(blend(plan, windows, method), clip, atol=1e-6)


def test_crossfades_ramp_across_the_overlap():
    plan = make_plan(8, 5, 2, 0)  # windows [0, 5) and [3, 8): 2 shared frames
    a, b = window_weights(plan, "linear")
    n = plan.windows[0].stop - plan.windows[1].start
    ramp_in = b[:n]
    assert np.all(np.diff(ramp_in) > 0), "the incoming window's weight rises across the overlap"
    np.testing.assert_allclose(ramp_in, np.arange(1, n + 1) / (n + 1))
    c = window_weights(plan, "cosine")[1][:n]
    np.testing.assert_allclose(c, 0.5 - 0.5 * np.cos(np.pi * np.arange(1, n + 1) / (n + 1)))
    assert a[0] == 1.0 and b[-1] == 1.0  # outside overlaps a window has the frame to itself


def test_blend_of_different_windows_lies_between_them():
    plan = make_plan(9, 5, 1, 0)
    ones = [np.ones((1, w.length, 1, 1), np.float32) for w in plan.windows]
    twos = [o * (i + 1) for i, o in enumerate(ones)]
    out = blend(plan, twos, "linear")[0, :, 0, 0]
    assert out[0] == 1.0 and out[-1] == 2.0
    assert np.all((out >= 1.0) & (out <= 2.0))


def test_unknown_method_names_the_value():
    with pytest.raises(ValueError, match="blend='sharp'"):
        window_weights(make_plan(9, 5, 1, 0), "sharp")


@pytest.mark.parametrize("frames,window,overlap", [(22, 5, 2), (9, 5, 1), (4, 5, 1), (30, 8, 3)])
def test_decode_chunks_cover_the_clip_in_order_and_blend_piecewise_like_whole(frames, window, overlap):
    plan = make_plan(frames, window, overlap, 0)
    chunks = plan.decode_chunks
    assert len(chunks) == len(plan.windows) and chunks[0][0] == 0 and chunks[-1][1] == frames
    assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(chunks, chunks[1:]))
    for c, (start, stop) in enumerate(chunks):
        # Chunk c is final once windows 0..c are done.
        assert max(plan.windows_touching(start, stop)) == c
    rng = np.random.default_rng(1)
    windows = [rng.standard_normal((2, w.length, 2, 2)).astype(np.float32) for w in plan.windows]
    whole = blend(plan, windows, "cosine")
    pieces = np.concatenate([blend_range(plan, dict(enumerate(windows)), "cosine", a, b) for a, b in chunks], axis=1)
    np.testing.assert_array_equal(pieces, whole)
