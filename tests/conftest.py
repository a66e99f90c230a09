import os

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local test cluster needs no token
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Engine, service and workflow tests run the random-weight `tiny-random` unless they name a model;
# tests/test_miniature.py checks the real default (the built-in trained model) with this unset.
os.environ["VIDEOGEN_MODEL"] = "tiny-random"


@pytest.fixture(scope="module")
def ray_local():
    """One small local Ray per test module. Logical CPUs are only for scheduling: 8 lets a module hold
    engines of 1, 2 and 3 one-CPU actors at once on a 2-core machine."""
    import ray

    ray.init(address="local", num_cpus=8, num_gpus=0, object_store_memory=200 * 1024**2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


SMALL = dict(width=32, height=32, steps=2, fps=8)
