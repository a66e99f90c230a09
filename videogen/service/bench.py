"""The job service's own overhead, for ``videogen bench`` (section 5) or ``python -m videogen.service.bench``.

Two numbers, over HTTP on 127.0.0.1 against the service's FastAPI app (served by uvicorn in this
process, so the engine's first task launch can be timed on the same clock; under Ray Serve the
proxy adds one local hop):

1. Submit-to-first-task latency with a free actor: from the client sending ``POST /v1/jobs`` to the
   engine launching the job's first task on an actor (target <= 100 ms).
2. Actor busy share draining a queue of 50 jobs: the actors' task seconds over actors x the wall
   time from the first submit to the last job's end (target >= 90%).
"""

from __future__ import annotations

import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import uvicorn

from .app import Service, ServiceConfig, create_app
from .client import JobClient
from .runner import RunnerConfig

TOKEN = "bench-token"


def _serve(service: Service) -> tuple[uvicorn.Server, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, name="videogen-bench-http", daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return server, f"http://127.0.0.1:{port}"


def measure_service(request: dict, workers: int = 2, jobs: int = 50, latency_runs: int = 5, say=print) -> dict:
    """Time the service's overhead on the Ray this process is connected to.

    Args:
        request: the clip every job asks for (seeds differ per job, so nothing is read from the cache).
        workers: actors in the service's pool.
        jobs: length of the queue that is drained.
        latency_runs: single submits to a free actor; the median is reported.
        say: where to print progress lines.
    Returns:
        ``{"submit_to_first_task_ms": ..., "busy_share": ..., ...}``.
    """
    data = Path(tempfile.mkdtemp(prefix="videogen-bench-service-"))
    (data / "tokens.txt").write_text(f"{TOKEN} bench\n")
    service = Service(ServiceConfig(data_dir=data, tokens_file=data / "tokens.txt", max_queued=jobs + latency_runs + 10,
                                    runner=RunnerConfig(workers=workers, per_client=jobs)))
    engine = service.runner.engine
    first_launch: dict[str, float] = {}  # engine job id -> perf_counter of its first task launch
    launch = engine._launch

    def timed_launch(item, actor):
        first_launch.setdefault(item.job.id, time.perf_counter())
        launch(item, actor)

    engine._launch = timed_launch  # instrumentation: the launch itself is unchanged
    server, url = _serve(service)
    client = JobClient(url, TOKEN)
    seed = iter(range(10**6))
    try:
        client.wait(client.submit(dict(request, seed=next(seed)))["id"], poll=0.05)  # load the model

        latencies = []
        for _ in range(latency_runs):
            before = set(first_launch)
            sent = time.perf_counter()
            job = client.submit(dict(request, seed=next(seed)))
            while not set(first_launch) - before:
                time.sleep(0.001)
            (new,) = set(first_launch) - before
            latencies.append(first_launch[new] - sent)
            client.wait(job["id"], poll=0.05)
        latency_ms = 1000 * statistics.median(latencies)
        say(f"   submit to first task, free actor: {latency_ms:.1f} ms median of {latency_runs} "
            f"(min {1000 * min(latencies):.1f}, max {1000 * max(latencies):.1f}; target <= 100 ms)")

        start = time.perf_counter()
        ids = [client.submit(dict(request, seed=next(seed)))["id"] for _ in range(jobs)]
        ended = [client.wait(i, poll=0.1) for i in ids]
        wall = time.perf_counter() - start
        actor_seconds = sum(j["actor_seconds"] for j in ended)
        busy = actor_seconds / (workers * wall)
        failed = [j["id"] for j in ended if j["status"] != "succeeded"]
        say(f"   {jobs} queued jobs on {workers} actors: drained in {wall:.1f} s, actors busy {100 * busy:.1f}% "
            f"of the time (target >= 90%){f'; {len(failed)} failed' if failed else ''}")
    finally:
        server.should_exit = True
        service.stop()
    return {
        "submit_to_first_task_ms": round(latency_ms, 2),
        "submit_to_first_task_runs_ms": [round(1000 * x, 2) for x in latencies],
        "latency_target_ms": 100,
        "queue_jobs": jobs,
        "workers": workers,
        "drain_seconds": round(wall, 2),
        "actor_seconds": round(actor_seconds, 2),
        "busy_share": round(busy, 4),
        "busy_target": 0.9,
        "failed": len(failed),
    }


if __name__ == "__main__":
    import json
    import os
    import sys

    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
    model = sys.argv[1] if len(sys.argv) > 1 else "bench-cpu"
    clip = dict(prompt="a red circle moving right", model=model, frames=33, width=64, height=64, steps=4)
    print(f"videogen service overhead: {model}, {clip['frames']} frames, {clip['width']}x{clip['height']}, {clip['steps']} steps")
    print(json.dumps(measure_service(clip), indent=2))
    ray.shutdown()
