"""Actors ask Ray for GPUs only when the cluster has them (num_gpus is scheduling only, so a
CPU machine can declare GPUs); without CUDA they still run, on the CPU in float32."""

import pytest
import ray

from videogen import Engine

CLIP = dict(prompt="a red circle moving right", frames=9, width=32, height=32, steps=2)


@pytest.fixture(scope="module")
def gpu_cluster():
    ray.init(address="local", num_cpus=4, num_gpus=2, object_store_memory=200 * 1024**2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_each_actor_takes_its_share_of_a_declared_gpu(gpu_cluster):
    with Engine(workers=2, gpu_fraction=0.5, threads_per_worker=1) as engine:
        frames = engine.generate(CLIP).frames
        info = engine.actor_info()
        assert ray.available_resources().get("GPU", 0) == pytest.approx(1.0)  # 2 x 0.5 of 2 GPUs held
    assert [len(i["gpu_ids"]) for i in info] == [1, 1]
    assert {i["device"] for i in info} == {"cpu"} and {i["dtype"] for i in info} == {"torch.float32"}
    assert frames.shape == (9, 32, 32, 3) and frames.std() > 0
