"""The planner: windows cover every frame, the last ends on the last frame, dependencies are minimal."""

import pytest

from videogen.plan import keyframe_positions, make_plan, window_spans


def covered(plan):
    frames = set()
    for w in plan.windows:
        frames.update(range(w.start, w.stop))
    return frames


@pytest.mark.parametrize("frames,window,overlap", [(1, 5, 1), (5, 5, 1), (6, 5, 1), (21, 5, 1), (22, 5, 2), (100, 21, 4), (9, 3, 2), (7, 1, 0)])
def test_windows_cover_every_frame_and_end_on_the_last(frames, window, overlap):
    plan = make_plan(frames, window, overlap, keyframe_every=4)
    assert covered(plan) == set(range(frames))
    assert plan.windows[-1].stop == frames
    assert plan.windows[0].start == 0
    assert all(w.length == min(window, frames) for w in plan.windows)
    for a, b in zip(plan.windows, plan.windows[1:]):
        assert b.start - a.start <= window - overlap  # never a gap, never more than the stride
        assert a.stop - b.start >= overlap  # neighbours share at least the overlap


def test_a_clip_shorter_than_a_window_is_one_window_with_no_keyframes():
    plan = make_plan(3, 5, 1, keyframe_every=2)
    assert [(w.start, w.stop) for w in plan.windows] == [(0, 3)]
    assert plan.keyframe_tasks == ()
    assert plan.windows[0].depends_on == ()


def test_last_window_is_shifted_back_not_dropped():
    # (N - window) % stride != 0: the tail must still be covered (Gen-L-Video's dropped-tail bug).
    assert window_spans(22, 5, 1) == [(0, 5), (4, 9), (8, 13), (12, 17), (16, 21), (17, 22)]
    assert window_spans(21, 5, 1) == [(0, 5), (4, 9), (8, 13), (12, 17), (16, 21)]


def test_keyframes_include_first_and_last():
    assert keyframe_positions(20, 4) == [0, 4, 8, 12, 16, 19]
    assert keyframe_positions(17, 4) == [0, 4, 8, 12, 16]
    assert keyframe_positions(17, 0) == []


def test_each_window_depends_only_on_the_keyframe_tasks_it_touches():
    plan = make_plan(40, 5, 1, keyframe_every=4)  # 11 keyframes: chunks of at most 5
    assert [t.positions for t in plan.keyframe_tasks] == [(0, 4, 8, 12, 16), (16, 20, 24, 28, 32), (32, 36, 39)]
    assert [t.known for t in plan.keyframe_tasks] == [(), (16,), (32,)]
    assert [t.depends_on for t in plan.keyframe_tasks] == [(), (0,), (1,)]
    owner = {0: 0, 4: 0, 8: 0, 12: 0, 16: 0, 20: 1, 24: 1, 28: 1, 32: 1, 36: 2, 39: 2}
    for w in plan.windows:
        assert w.keyframes == tuple(p for p in owner if w.start <= p < w.stop)
        assert w.depends_on == tuple(sorted({owner[p] for p in w.keyframes}))
    assert plan.windows[0].depends_on == (0,)
    assert plan.windows[-1].depends_on == (2,)


def test_no_keyframes_means_no_dependencies():
    plan = make_plan(20, 5, 1, keyframe_every=0)
    assert plan.keyframe_tasks == ()
    assert all(w.depends_on == () for w in plan.windows)


@pytest.mark.parametrize("args", [(0, 5, 1, 4), (10, 0, 0, 4), (10, 5, 5, 4), (10, 5, -1, 4), (10, 5, 1, -1)])
def test_bad_geometry_is_rejected(args):
    with pytest.raises(ValueError, match="bad plan geometry"):
        make_plan(*args)
