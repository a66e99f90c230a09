"""The README's Ray Jobs path: ``ray job submit -- videogen generate ...`` against a head started
with ``ray start --head``. The head gets a temp folder of its own, so other Rays on this machine
neither see it nor are stopped with it (``ray stop`` would stop them all: the head's process group
is killed instead), and free ports for every agent, since another Ray may hold the defaults."""

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

from videogen.encode import read_mp4

from test_service import free_port

# The `ray` and `videogen` commands of this interpreter's environment, activated or not (make test is not).
os.environ["PATH"] = f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}"


def test_ray_job_submit_runs_videogen_generate_on_a_started_head(tmp_path):
    temp_dir = tempfile.mkdtemp(prefix="vgrj", dir="/tmp")  # short: Ray's socket paths live under it
    dashboard = free_port()
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    head = subprocess.Popen(
        ["ray", "start", "--head", "--block", f"--port={free_port()}", f"--dashboard-port={dashboard}",
         "--dashboard-host=127.0.0.1", f"--dashboard-agent-listen-port={free_port()}",
         f"--dashboard-agent-grpc-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
         f"--metrics-export-port={free_port()}", "--num-cpus=2", "--num-gpus=0", f"--temp-dir={temp_dir}", "--disable-usage-stats"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        address = f"http://127.0.0.1:{dashboard}"
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{address}/api/version", timeout=2):
                    break
            except OSError:
                assert head.poll() is None and time.time() < deadline, "the Ray head did not start"
                time.sleep(0.5)
        out = tmp_path / "job.mp4"
        while True:  # the head's job agent comes up a little after its dashboard
            job = subprocess.run(
                ["ray", "job", "submit", "--address", address, "--", "videogen", "generate", "a red circle moving right",
                 "-o", str(out), "--frames", "9", "--width", "32", "--height", "32", "--steps", "1"],
                capture_output=True, text=True, env=env, timeout=300)
            if "No available agent" not in job.stderr or time.time() > deadline:
                break
            time.sleep(2)
        assert job.returncode == 0, job.stdout[-2000:] + job.stderr[-2000:]
        assert "succeeded" in job.stdout and f"wrote {out}" in job.stdout
        frames, _ = read_mp4(out)
        assert frames.shape == (9, 32, 32, 3)
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
