"""``videogen serve`` on Ray Serve, as a process of its own: killed mid-job and started again on the
same database and cache, it finishes the running job with its finished tasks read back (output
equal to an uninterrupted run's) and runs the job that was still queued."""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

from videogen import Engine
from videogen.encode import read_mp4
from videogen.service.client import JobClient

from test_service import free_port

# 81 pixel frames = 21 latent frames: 6 keyframes in 2 chunks, 5 windows; long enough to stop mid-way.
LONG = dict(prompt="a lighthouse at dusk", frames=81, width=64, height=64, steps=6, fps=8, seed=5)
SHORT = dict(prompt="a dot", frames=9, width=32, height=32, steps=1, fps=8)


class ServeProcess:
    """``videogen serve`` in its own process group (so a kill takes its Ray with it)."""

    def __init__(self, data, port):
        self.port = port
        self.log = open(data / f"serve-{port}.log", "w")
        env = dict(os.environ, RAY_AUTH_MODE="disabled")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "videogen.cli", "serve", "--port", str(port), "--tokens", str(data / "tokens.txt"),
             "--data", str(data), "--workers", "1", "--per-client", "1"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert self.proc.poll() is None, (data / f"serve-{port}.log").read_text()[-3000:]
            assert time.time() < deadline, "the service did not come up in 180 s"
            time.sleep(0.5)
        self.client = JobClient(f"http://127.0.0.1:{port}", "t0k3n")

    def kill(self):
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout=90) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise


def test_killed_service_resumes_running_job_with_identical_output_and_runs_queued_one(ray_local, tmp_path):
    (tmp_path / "tokens.txt").write_text("t0k3n team\n")
    first = ServeProcess(tmp_path, free_port())
    try:
        long_job = first.client.submit(LONG)
        short_job = first.client.submit(SHORT)  # --per-client 1: waits behind the long one
        while True:
            job = first.client.status(long_job["id"])
            assert job["status"] == "running" or job["status"] == "queued", job
            if job["stage"] == "windows" and job["progress"] >= 0.4:
                break
            time.sleep(0.05)
        assert first.client.status(short_job["id"])["status"] == "queued"
    finally:
        first.kill()
    finished_tasks = len(list((tmp_path / "cache").rglob("*.npz")))
    assert finished_tasks >= 3, "keyframes and a window were done before the kill"

    second = ServeProcess(tmp_path, free_port())
    try:
        done = second.client.wait(long_job["id"], poll=0.2)
        assert done["status"] == "succeeded", done
        # The engine reads back only the finished tasks it still needs (a cached window's keyframes are not).
        assert done["cached_tasks"] >= 3, "finished keyframes and windows are read back, not recomputed"
        assert second.client.wait(short_job["id"], poll=0.2)["status"] == "succeeded"
        second.client.fetch(long_job["id"], tmp_path / "resumed.mp4")
        with urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{second.port}{done['video_url']}",
                headers={"Authorization": "Bearer t0k3n", "Range": "bytes=0-9"})) as r:
            assert r.status == 206 and len(r.read()) == 10, "Range works through Serve's proxy"
    finally:
        assert second.stop() == 0

    with Engine(workers=1, cache_dir=tmp_path / "reference-cache") as engine:
        reference = engine.generate(LONG, output=tmp_path / "reference.mp4")
    resumed, info = read_mp4(tmp_path / "resumed.mp4")
    expected, _ = read_mp4(tmp_path / "reference.mp4")
    assert resumed.shape == (81, 64, 64, 3) and info["fps"] == 8
    differ = np.abs(resumed.astype(int) - expected).reshape(len(expected), -1).max(axis=1)
    assert not differ.any(), (f"frames {np.flatnonzero(differ).tolist()} differ by up to {differ.max()} levels; "
                              f"task results that differ: {differing_results(tmp_path / 'cache', tmp_path / 'reference-cache')}")
    assert reference.cached_tasks == 0


def differing_results(cache, reference_cache) -> list[str]:
    """The cached task results of one run that differ from another's (same key), named by their arrays."""
    from videogen.cache import load_payload

    found = []
    for path in sorted(Path(cache).rglob("*.npz")):
        twin = Path(reference_cache) / path.relative_to(cache)
        if not twin.exists():
            found.append(f"{path.stem[:8]}: not in the reference run")
            continue
        a, b = load_payload(path), load_payload(twin)
        a, b = (a, b) if isinstance(a, dict) else ({"array": a}, {"array": b})
        for k in a:
            x, y = a[k].astype(np.float64), b[k].astype(np.float64)
            difference = np.abs(x - y).max() if x.shape == y.shape else "shape"
            if difference != 0:
                found.append(f"{path.stem[:8]} {k} {a[k].dtype}{list(a[k].shape)}: max difference {difference}")
    return found
