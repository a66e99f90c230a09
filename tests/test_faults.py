"""A simulated multi-node cluster (`ray.cluster_utils.Cluster`): a CPU head and two worker nodes
declaring one GPU each. Denoisers land only on GPU nodes; losing a node mid-clip redoes only what
that node held, and the clip is unchanged."""

import threading

import numpy as np
import pytest
import ray
from ray.cluster_utils import Cluster

from videogen import Engine
from videogen.encode import read_mp4

# 81 frames = 21 latent frames: 5 windows, 6 keyframes in 2 chunks.
CLIP = dict(prompt="a red circle moving right", frames=81, width=32, height=32, steps=2, seed=5)


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(initialize_head=True, head_node_args=dict(num_cpus=2, num_gpus=0))
    for _ in range(2):
        c.add_node(num_cpus=2, num_gpus=1)
    ray.init(address=c.address, log_to_driver=False)
    yield c
    ray.shutdown()
    c.shutdown()


def gpu_node_ids():
    return {n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU", 0) > 0}


def test_denoisers_only_on_gpu_nodes_and_decoders_anywhere(cluster, tmp_path):
    with Engine(workers=2, threads_per_worker=1, decode_on="cpu", encode_on="cluster") as engine:
        result = engine.generate(CLIP, output=tmp_path / "clip.mp4")
        info = engine.actor_info()
    denoisers = [i for i in info if i["role"] == "denoiser"]
    decoders = [i for i in info if i["role"] == "decoder"]
    assert len(denoisers) == 2 and len(decoders) == 1
    assert {i["node"] for i in denoisers} == gpu_node_ids(), "one denoiser per GPU node, none on the head"
    assert all(len(i["gpu_ids"]) == 1 for i in denoisers) and decoders[0]["gpu_ids"] == []
    assert result.frames.shape == (81, 32, 32, 3) and result.bytes_moved > 0
    frames, _ = read_mp4(tmp_path / "clip.mp4")  # encoded in a Ray task, not in the driver
    assert frames.shape == (81, 32, 32, 3) and (tmp_path / "clip.json").exists()


def test_losing_a_node_mid_clip_redoes_only_its_tasks(cluster):
    with Engine(workers=2, threads_per_worker=1) as engine:
        reference = engine.generate(CLIP)
        nodes = {i["pid"]: i["node"] for i in engine.actor_info()}
        halfway = threading.Event()

        def on_progress(p):
            if p.stage == "windows" and p.done >= 4:
                halfway.set()

        job = engine.submit(CLIP, on_progress=on_progress)
        assert halfway.wait(timeout=120)
        victim = next(n for n in cluster.worker_nodes if n.node_id in set(nodes.values()))
        cluster.remove_node(victim)
        cluster.add_node(num_cpus=2, num_gpus=1)  # the autoscaler's replacement
        result = job.result(timeout=300)
    assert np.array_equal(result.frames, reference.frames)
    total = 2 + 1 + 5 + 5  # 2 keyframe chunks, preview, 5 windows, 5 decode chunks
    assert 1 <= result.redone_tasks < total, result.redone_tasks
    assert reference.redone_tasks == 0
