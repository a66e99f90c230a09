"""The job API as a Ray Serve application, and ``videogen serve``.

One replica holds the store, the runner and the engine: the engine's actor pool is the cluster's
shared capacity, and SQLite wants one writer. The replica asks for no CPU of its own; the actors do.
"""

from __future__ import annotations

import os
import signal
import threading

from ray import serve

from .app import Service, ServiceConfig, create_app

APP_NAME = "videogen"


@serve.deployment(num_replicas=1, max_ongoing_requests=256, ray_actor_options={"num_cpus": 0})
@serve.ingress()
class JobService:
    """The Serve deployment: builds the `Service` in the replica, then its FastAPI app."""

    def __init__(self, config: ServiceConfig):
        self.service = Service(config)

    def __serve_build_asgi_app__(self):
        return create_app(self.service)

    def __del__(self):
        self.service.stop()


def run_service(config: ServiceConfig, host: str, port: int) -> None:
    """Start Ray (or join ``config.runner.address``), deploy the app on ``host:port`` and serve until SIGINT or SIGTERM.

    Args:
        config: the service's settings; paths should be absolute (the replica is another process).
        host: the address the HTTP proxy listens on.
        port: its TCP port.
    """
    import ray

    if not ray.is_initialized():
        if config.runner.address or os.environ.get("RAY_ADDRESS"):
            ray.init(address=config.runner.address, log_to_driver=False)
        else:
            # "local": a Ray of its own, even where another Ray runs on this machine.
            ray.init(address="local", num_cpus=max(os.cpu_count() or 1, config.runner.workers), include_dashboard=False,
                     log_to_driver=False)
    serve.start(http_options={"host": host, "port": port})
    serve.run(JobService.bind(config), name=APP_NAME, route_prefix="/", blocking=False)
    print(f"videogen service at http://{host}:{port}/ (API under /v1, OpenAPI at /openapi.json)", flush=True)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    serve.delete(APP_NAME)
    serve.shutdown()
