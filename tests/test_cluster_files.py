"""The files in cluster/ parse, and name commands, images and settings that exist in the project."""

import importlib
import re
import shlex
from importlib.metadata import distribution
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.serve import Application

import videogen
from videogen.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
KUBERAY = CLUSTER / "kuberay"
DOCKERFILE = (CLUSTER / "Dockerfile").read_text()
README = (CLUSTER / "README.md").read_text()


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def manifest(name: str, kind: str) -> dict:
    (doc,) = [d for d in docs(KUBERAY / name) if d["kind"] == kind]
    return doc


def cluster_specs() -> dict[str, dict]:
    """The RayCluster spec inside each manifest that makes a Ray cluster."""
    return {
        "raycluster": manifest("raycluster.yaml", "RayCluster")["spec"],
        "rayjob": manifest("rayjob.yaml", "RayJob")["spec"]["rayClusterSpec"],
        "rayservice": manifest("rayservice.yaml", "RayService")["spec"]["rayClusterConfig"],
    }


def pod_specs() -> list[dict]:
    out = [manifest("storage.yaml", "Job")["spec"]["template"]["spec"]]
    for spec in cluster_specs().values():
        out.append(spec["headGroupSpec"]["template"]["spec"])
        out += [g["template"]["spec"] for g in spec["workerGroupSpecs"]]
    return out


def arg(name: str) -> str:
    """An ``ARG NAME=value`` default of the Dockerfile."""
    return re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE, re.M).group(1)


def parses(command: str) -> str:
    """Parse a ``videogen ...`` command line with the real CLI parser; returns the subcommand."""
    argv = shlex.split(command)
    assert argv[0] == "videogen", command
    return build_parser().parse_args(argv[1:]).command


IMAGE = f"videogen:{videogen.__version__}"


def test_every_yaml_parses_into_the_kinds_expected():
    kinds = {p.name: [d["kind"] for d in docs(p)] for p in sorted(KUBERAY.glob("*.yaml"))}
    assert kinds == {
        "raycluster.yaml": ["RayCluster"],
        "rayjob.yaml": ["RayJob"],
        "rayservice.yaml": ["RayService"],
        "storage.yaml": ["PersistentVolumeClaim", "PersistentVolumeClaim", "Job"],
    }
    for path in KUBERAY.glob("*.yaml"):
        assert all(d["apiVersion"] in ("ray.io/v1", "v1", "batch/v1") for d in docs(path))
    assert len(docs(CLUSTER / "aws.yaml")) == 1


def test_the_image_named_everywhere_is_the_one_the_dockerfile_builds():
    assert f"docker build -f cluster/Dockerfile -t {IMAGE} ." in README
    assert f"docker build -f cluster/Dockerfile -t {IMAGE} ." in DOCKERFILE
    images = [c["image"] for spec in pod_specs() for c in spec["containers"]]
    assert len(images) == 7 and set(images) == {IMAGE}


def test_the_dockerfile_installs_the_project_on_a_cuda_pytorch_base():
    base = arg("BASE_IMAGE")
    assert base.startswith("pytorch/pytorch:") and "-cuda" in base
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", DOCKERFILE, re.M)
    for path in ("pyproject.toml", "README.md", "videogen", "configs", "examples"):
        assert re.search(rf"^COPY .*\b{re.escape(path)}\b", DOCKERFILE, re.M), path
        assert (ROOT / path).exists()
    assert re.search(r"pip install .*\$\{RAY_VERSION\}.* \.", DOCKERFILE)


def test_ray_releases_agree():
    ray_version = arg("RAY_VERSION")
    assert {spec["rayVersion"] for spec in cluster_specs().values()} == {ray_version}
    aws = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    assert f'"ray[default,serve]=={ray_version}"' in aws["setup_commands"][0]
    assert f"ray[default]=={ray_version}" in README


def test_heads_declare_no_gpu_and_gpu_workers_request_one():
    for name, spec in cluster_specs().items():
        assert spec["headGroupSpec"]["rayStartParams"]["num-gpus"] == "0", name
        head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]
        assert "nvidia.com/gpu" not in head["limits"], name
        (group,) = spec["workerGroupSpecs"]
        for key in ("requests", "limits"):
            assert group["template"]["spec"]["containers"][0]["resources"][key]["nvidia.com/gpu"] == 1, name
        assert 1 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], name
        assert spec["enableInTreeAutoscaling"] is True, name


def test_every_volume_claim_is_defined_and_mounted_where_the_image_looks():
    claims = {d["metadata"]["name"] for d in docs(KUBERAY / "storage.yaml") if d["kind"] == "PersistentVolumeClaim"}
    for spec in pod_specs():
        used = {v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v}
        assert used <= claims
        mounts = {m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
        assert "/models" in mounts
    assert "HF_HOME=/models/huggingface" in DOCKERFILE


def test_the_rayjob_runs_a_registered_batch_command_on_a_spec_in_the_image():
    entrypoint = manifest("rayjob.yaml", "RayJob")["spec"]["entrypoint"]
    assert parses(entrypoint) == "batch"
    spec = shlex.split(entrypoint)[2]
    assert spec.startswith("/app/") and (ROOT / spec.removeprefix("/app/")).is_file()
    assert "WORKDIR /app" in DOCKERFILE


def test_the_rayservice_import_path_builds_the_serve_application():
    serve_config = yaml.safe_load(manifest("rayservice.yaml", "RayService")["spec"]["serveConfigV2"])
    (application,) = serve_config["applications"]
    module, attribute = application["import_path"].split(":")
    app = getattr(importlib.import_module(module), attribute)(application["args"])
    assert isinstance(app, Application)
    (config,) = app._bound_deployment.init_args
    assert str(config.tokens_file) == "/etc/videogen/tokens" and config.runner.workers == 2
    head = manifest("rayservice.yaml", "RayService")["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    assert {"name": "tokens", "mountPath": "/etc/videogen", "readOnly": True} in head["containers"][0]["volumeMounts"]


def test_a_service_setting_that_does_not_exist_is_refused():
    from videogen.service.builder import build_app

    with pytest.raises(ValueError, match="^wrkers=2: not a service setting"):
        build_app({"data_dir": "/data", "tokens_file": "/tokens", "wrkers": 2})
    with pytest.raises(ValueError, match="^runner.wrkers=2: not a service setting"):
        build_app({"data_dir": "/data", "tokens_file": "/tokens", "runner": {"wrkers": 2}})


def test_the_weights_job_calls_a_command_the_image_has():
    command = manifest("storage.yaml", "Job")["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:2] == ["hf", "download"]
    scripts = {e.name for e in distribution("huggingface_hub").entry_points if e.group == "console_scripts"}
    assert "hf" in scripts


def test_the_launcher_config_is_valid_for_ray_and_keeps_gpus_off_the_head():
    config = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    validate_config(prepare_config(config))
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"]["GPU"] == 0 and "--num-gpus=0" in " ".join(config["head_start_ray_commands"])
    (worker,) = [t for name, t in config["available_node_types"].items() if name != config["head_node_type"]]
    assert worker["resources"]["GPU"] == 1 and worker["node_config"]["InstanceType"].startswith("g5.")
    assert 1 <= worker["min_workers"] <= worker["max_workers"] <= config["max_workers"]
    # The container is the Dockerfile's base, and setup installs videogen from the copied repository.
    assert config["docker"]["image"] == arg("BASE_IMAGE")
    assert config["file_mounts"] == {"~/videogen": "."}
    assert config["setup_commands"][0].endswith(" ~/videogen")


def test_every_videogen_command_in_the_cluster_readme_parses():
    blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
    lines = " ".join(blocks).replace("\\\n", " ").splitlines()
    commands = [re.search(r"videogen \w.*", line).group(0).rstrip("'") for line in lines
                if re.search(r"(^|--\s+|')videogen \w", line.strip())]
    assert {parses(c) for c in commands} == {"generate", "submit"} and len(commands) == 4
