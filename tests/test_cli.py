"""The CLI as a user runs it: bad input is one line naming the field and the value, exit code 2,
and nothing at the output path; a good run writes the MP4 and prints its JSON summary."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from videogen.encode import read_mp4


def videogen(*args, cwd=None):
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "videogen.cli", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


@pytest.mark.parametrize(
    "args,expected",
    [
        (["", ], "prompt=''"),
        (["x", "--frames", "0"], "frames=0"),
        (["x", "--frames", "-4"], "frames=-4"),
        (["x", "--frames", "100000"], "frames=100000"),
        (["x", "--width", "50"], "width=50"),
        (["x", "--height", "24"], "height=24"),
        (["x", "--window", "17", "--overlap", "20"], "overlap=20"),
        (["x", "--model", "no-such-model"], "model='no-such-model'"),
        (["x", "--guidance", "nan"], "guidance=nan"),
        (["x", "--guidance", "-2"], "guidance=-2.0"),
        (["x", "--steps", "0"], "steps=0"),
        (["x", "--steps", "100000"], "steps=100000"),
        (["x", "--keyframe-release", "1.5"], "keyframe_release=1.5"),
        (["x", "--workers", "0"], "workers=0"),
        (["x", "--threads", "0"], "threads=0"),
        (["x", "--gpu-fraction", "1.5"], "gpu_fraction=1.5"),
        (["x", "--strip", "frames.jpg"], "strip='frames.jpg': must end in .png"),
        (["x", "--strip", "no/frames.png"], "strip='no/frames.png': its folder does not exist"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(tmp_path, args, expected):
    out = tmp_path / "out.mp4"
    r = videogen("generate", *args, "-o", str(out))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"videogen: error: {expected}"), r.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args,fragment", [(["--steps", "nan"], "--steps: invalid int value: 'nan'"),
                                           (["--frames", "9", "--seconds", "1"], "--seconds: not allowed with argument --frames")])
def test_malformed_flags_are_one_line_too(tmp_path, args, fragment):
    r = videogen("generate", "x", *args, "-o", str(tmp_path / "out.mp4"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and fragment in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "notamodel").mkdir()
    r = videogen("generate", "x", "--model", str(tmp_path / "notamodel"), "-o", str(tmp_path / "out.mp4"))
    assert r.returncode == 2 and "not a diffusers model folder" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notamodel"]


@pytest.mark.parametrize("target", ["missing/out.mp4", "out.txt"])
def test_an_output_that_cannot_be_written(tmp_path, target):
    r = videogen("generate", "x", "-o", str(tmp_path / target))
    assert r.returncode == 2 and r.stderr.startswith("videogen: error: output=")
    assert list(tmp_path.iterdir()) == []


def test_generate_writes_the_clip_and_prints_json(tmp_path):
    out = tmp_path / "out.mp4"
    r = videogen("generate", "a red circle moving right", "-o", str(out), "--frames", "21", "--fps", "7",
                 "--width", "48", "--height", "32", "--steps", "2", "--workers", "2", "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["output"] == str(out) and summary["frames"] == 21
    assert (summary["fps"], summary["width"], summary["height"]) == (7, 48, 32)
    assert summary["windows"] == 2 and summary["actor_seconds"] > 0
    assert set(summary["seconds"]) >= {"windows", "decode", "encode"}
    frames, info = read_mp4(out)
    assert frames.shape == (21, 32, 48, 3) and info["fps"] == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "out.mp4"]


def test_help_reads_well():
    r = videogen("generate", "--help")
    assert r.returncode == 0
    for flag in ("--frames", "--seconds", "--window", "--overlap", "--keyframe-every", "--blend", "--workers", "--address", "--json"):
        assert flag in r.stdout


def test_a_killed_driver_resumes_from_the_cache(tmp_path):
    """The driver's process is lost mid-clip; the same command again reads back the finished tasks."""
    import signal
    import time

    common = ["a red circle moving right", "--frames", "81", "--width", "32", "--height", "32",
              "--steps", "60", "--workers", "2", "--json"]
    reference = videogen("generate", *common, "-o", str(tmp_path / "reference.mp4"))
    assert reference.returncode == 0, reference.stderr

    cache = tmp_path / "cache"
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    first = subprocess.Popen([sys.executable, "-m", "videogen.cli", "generate", *common, "--cache", str(cache),
                              "-o", str(tmp_path / "out.mp4")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True)
    deadline = time.time() + 240
    while len(list(cache.rglob("*.npz"))) < 3 and time.time() < deadline and first.poll() is None:
        time.sleep(0.1)
    os.killpg(first.pid, signal.SIGKILL)  # the driver and the Ray it started
    first.wait()
    finished = len(list(cache.rglob("*.npz")))
    assert 3 <= finished < 2 + 1 + 5 + 5, "killed mid-clip"
    assert not (tmp_path / "out.mp4").exists()

    again = videogen("generate", *common, "--cache", str(cache), "-o", str(tmp_path / "out.mp4"))
    assert again.returncode == 0, again.stderr
    # Not every file the killed run wrote is read back: a clip's decode chunks come from the cache all
    # together or not at all (they share the VAE's causal cache), and keyframes are read only while
    # a window still to be made needs them. The frames must still equal the reference's.
    assert json.loads(again.stdout)["cached_tasks"] >= 3
    ours, _ = read_mp4(tmp_path / "out.mp4")
    theirs, _ = read_mp4(tmp_path / "reference.mp4")
    assert np.array_equal(ours, theirs)
