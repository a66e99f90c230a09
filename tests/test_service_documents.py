"""Storyboard and batch jobs through the job API, over a real socket with a real runner and Ray.

A storyboard job's folder fetched over HTTP equals the folder a local run makes (same shots, same
animatic frames); a batch job (submitted with the CLI, its logo sent inline) writes its manifest and
MP4s; a document that does not read gets 400 naming its line and leaves no job; a spec cannot make the
service read its own files; cancel stops a storyboard and leaves no folder; file paths outside a
job's folder answer 404; a database from before job kinds opens with its jobs as clip jobs.
"""

import csv
import io
import json
import sqlite3
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_service import Served
from videogen.encode import read_mp4
from videogen.service.app import Service, ServiceConfig
from videogen.service.runner import RunnerConfig
from videogen.service.store import JobStore

TOKENS = "alice-token alice\nbob-token bob\n"
CLIP = dict(model="tiny-random", width=32, height=32, steps=2, fps=8)
# Two scenes, one shot each; every shot 1 s = 8 pixel frames (timing below).
SCRIPT = """\
Title: Harbour Test

INT. KITCHEN - NIGHT

Anna pours tea.

EXT. GARDEN - DAY

Rain on the roses.
"""
TIMING = {"min_seconds": 1, "max_seconds": 1}
STORYBOARD = dict(kind="storyboard", script=SCRIPT, timing=TIMING, clip=CLIP)
SPEC = """\
name: svc
template: "a {color} ball"
variables:
  color: [red]
formats: [square]
candidates: 1
keep: 1
pixels: 1024
clip: {model: tiny-random, frames: 9, fps: 8, steps: 1}
overlay:
  headline: {text: "The {color} one"}
  logo: {path: logo.png}
"""


@pytest.fixture(scope="module")
def served(ray_local, tmp_path_factory):
    data = tmp_path_factory.mktemp("service")
    (data / "tokens.txt").write_text(TOKENS)
    s = Served(Service(ServiceConfig(data_dir=data, tokens_file=data / "tokens.txt",
                                     runner=RunnerConfig(workers=2, per_client=4))))
    yield s
    s.stop()


@pytest.fixture
def api_only(tmp_path):
    """The API with no runner: jobs are checked and queued, never run."""
    (tmp_path / "tokens.txt").write_text(TOKENS)
    s = Served(Service(ServiceConfig(data_dir=tmp_path, tokens_file=tmp_path / "tokens.txt", start_runner=False)))
    yield s
    s.stop()


def test_a_storyboard_job_fetched_over_http_equals_a_local_run(served, tmp_path):
    from videogen import Engine
    from videogen.storyboard.build import load_script, make_storyboard, plan_shots

    client = served.client()
    job = client.submit(STORYBOARD)
    assert job["kind"] == "storyboard" and job["title"] == "Harbour Test: 2 shots"
    seen = []
    done = client.wait(job["id"], poll=0.1, on_update=lambda j: seen.append((j["stage"], j["progress"])))
    assert done["status"] == "succeeded" and done["progress"] == 1.0, done
    assert [p for _, p in seen] == sorted(p for _, p in seen), "progress never goes back"
    assert {"shots", "writing"} & {stage for stage, _ in seen}, seen

    names = [f["path"] for f in client.files(job["id"])]
    assert {"shots.csv", "shots.yaml", "boards.png", "boards/1A.png", "boards/2A.png", "shots/1A.mp4", "shots/2A.mp4",
            "animatic.mp4", "animatic.srt", "storyboard.html"} <= set(names)
    fetched = client.fetch_files(job["id"], tmp_path / "fetched")
    assert sorted(str(p.relative_to(fetched)) for p in fetched.rglob("*") if p.is_file()) == sorted(names)

    # The same script run locally, on the service's task cache: same shots, same animatic frames.
    (tmp_path / "local.fountain").write_text(SCRIPT)
    script = load_script(tmp_path / "local.fountain", TIMING)
    shots, requests = plan_shots(script, dict(CLIP))
    with Engine(workers=1, cache_dir=Path(served.service.config.data_dir) / "cache") as engine:
        local = make_storyboard(script, shots, requests, tmp_path / "local", engine)
    assert local.made == [], "every task came from the service's cache"
    rows = list(csv.DictReader(open(fetched / "shots.csv")))
    assert [r["shot"] for r in rows] == [s.id for s in shots] == ["1A", "2A"]
    assert [int(r["frames"]) for r in rows] == [s.frames for s in shots] == [8, 8]
    frames, info = read_mp4(fetched / "animatic.mp4")
    local_frames, _ = read_mp4(tmp_path / "local" / "animatic.mp4")
    assert frames.shape[0] == local_frames.shape[0] == 16 and info["fps"] == 8
    assert np.array_equal(frames, local_frames)
    assert Image.open(fetched / "boards.png").size == Image.open(tmp_path / "local" / "boards.png").size

    # video is the animatic, preview the boards sheet.
    status, headers, mp4 = served.call("GET", done["video_url"])
    assert status == 200 and headers["content-type"] == "video/mp4" and mp4 == (fetched / "animatic.mp4").read_bytes()
    done = client.status(job["id"])
    status, headers, png = served.call("GET", done["preview_url"])
    assert status == 200 and png == (fetched / "boards.png").read_bytes()
    assert np.asarray(Image.open(io.BytesIO(png))).ndim == 3

    # Nothing outside the job's folder, and none of its hidden files, is served.
    base = f"/v1/jobs/{job['id']}/files/"
    for path in ["../../jobs.db", "%2e%2e/%2e%2e/jobs.db", "..%2f..%2fjobs.db", "/etc/passwd", "shots/../../../jobs.db",
                 "nope.txt", ".cache"]:
        status, _, body = served.call("GET", base + path)
        assert status == 404, (path, status, body[:200])
    status, _, _ = served.call("GET", base + "shots.csv", token="bob-token")
    assert status == 404, "another client's job"
    assert not list((Path(served.service.config.data_dir) / "outputs").glob(".*")), "no staging left behind"


def test_a_batch_job_from_the_cli_writes_its_manifest_and_mp4s(served, tmp_path, capsys, monkeypatch):
    from videogen.cli import main

    monkeypatch.setenv("VIDEOGEN_SERVER", served.url)
    monkeypatch.setenv("VIDEOGEN_TOKEN", "alice-token")
    (tmp_path / "spec.yaml").write_text(SPEC)
    Image.new("RGBA", (120, 40), (255, 255, 255, 255)).save(tmp_path / "logo.png")
    out = tmp_path / "out"
    assert main(["submit", "--batch", str(tmp_path / "spec.yaml"), "--wait", "-o", str(out)]) == 0, capsys.readouterr().err
    job_id = capsys.readouterr().out.split()[0]
    job = served.client().status(job_id)
    assert job["kind"] == "batch" and job["status"] == "succeeded" and job["video_url"] is None
    assert job["request"]["spec"] == SPEC and set(job["request"]["files"]) == {"logo.png"}, "the document as sent"
    rows = list(csv.DictReader(open(out / "manifest.csv")))
    assert [(r["format"], r["seed"]) for r in rows] == [("square", "0")]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["clips_generated"] == 1 and len(manifest["rows"]) == 1
    frames, info = read_mp4(out / rows[0]["path"])
    assert frames.shape == (9, 1080, 1080, 3) and info["fps"] == 8
    assert Image.open(out / "contact_sheet.png").size[0] > 0
    assert not [p for p in out.rglob("*") if p.name.startswith(".")], "records and thumbnails stay on the server"
    status, _, _ = served.call("GET", f"/v1/jobs/{job_id}/video")
    assert status == 409
    assert main(["jobs"]) == 0 and "[batch] svc: 1 variants, 1 clips" in capsys.readouterr().out
    again = tmp_path / "again"
    assert main(["fetch", job_id, "-o", str(again)]) == 0
    assert (again / rows[0]["path"]).read_bytes() == (out / rows[0]["path"]).read_bytes()
    assert main(["fetch", job_id, "-o", str(again)]) == 2, "a folder with files in it is not overwritten"
    assert "not an empty folder" in capsys.readouterr().err


def _scratch_folders() -> set:
    return set(Path(tempfile.gettempdir()).glob("videogen-document-*"))


@pytest.mark.parametrize("body, line, message", [
    (dict(kind="storyboard", script=SCRIPT.replace("pours tea.", "pours [[tea.")), 5, "note '[[' is never closed"),
    (dict(kind="storyboard", format="yaml", script="scenes:\n  - heading: A\n    shots:\n      - descripton: tea\n"), 4,
     "scenes.0.shots.0.description: Field required"),
    (dict(kind="storyboard", format="yaml", script="scenes: [\n"), 2, "not valid YAML"),
    (dict(kind="batch", spec=SPEC.replace("[square]", "[squar]"), files={"logo.png": ""}), 5, "formats.0='squar': unknown format"),
    (dict(kind="batch", spec=SPEC), 12, "overlay.logo.path='logo.png': names no file sent with the job"),
    (dict(kind="batch", spec=SPEC.replace("logo.png", "../../jobs.db")), 12, "overlay.logo.path='../../jobs.db': names no file"),
    (dict(kind="batch", spec=SPEC.replace("variables:\n  color: [red]", "feed: /etc/passwd")), 3, "feed='/etc/passwd': names no file"),
])
def test_a_document_that_does_not_read_gets_400_with_its_line_and_no_job(api_only, body, line, message):
    scratch = _scratch_folders()
    status, _, raw = api_only.call("POST", "/v1/jobs", body=body)
    error = json.loads(raw)
    assert status == 400, error
    name = "spec.yaml" if body["kind"] == "batch" else f"script.{body.get('format', 'fountain')}"
    assert error["error"].startswith(f"{name}:{line}: ") and message in error["error"], error
    assert error["field"] == ("spec" if body["kind"] == "batch" else "script")
    assert api_only.client().jobs()["jobs"] == []
    assert _scratch_folders() == scratch, "the scratch folder is gone"
    assert not any((Path(api_only.service.config.data_dir) / "inputs").iterdir())


def test_document_fields_the_policy_and_the_queueing_rules(api_only):
    client = api_only.client()
    for body, field, status in [
        (dict(STORYBOARD, clip=dict(CLIP, frames=40)), "clip.frames", 422),  # lengths come from the script
        (dict(STORYBOARD, clip=dict(CLIP, width=50)), "clip.width", 422),
        (dict(STORYBOARD, timing={"min_seconds": 0}), "timing.min_seconds", 422),
        (dict(STORYBOARD, format="pdf"), "format", 422),
        (dict(STORYBOARD, script=SCRIPT.replace("Rain", "Gore")), "script", 422),  # the prompt policy, as on the CLI
        (dict(kind="batch", spec=SPEC, files={"../logo.png": ""}), "files", 422),
        (dict(kind="batch", spec=SPEC, files={"logo.png": "not base64!"}), "files", 422),
        (dict(kind="film", script=SCRIPT), "kind", 422),
    ]:
        status_got, _, raw = api_only.call("POST", "/v1/jobs", body=body)
        assert (status_got, json.loads(raw)["field"]) == (status, field), raw
    assert client.jobs()["jobs"] == []

    a = client.submit(STORYBOARD, priority=5, idempotency_key="board-1")
    b = client.submit(dict(STORYBOARD, style="charcoal"), idempotency_key="board-1")
    c = client.submit(dict(STORYBOARD, boards_only=True), idempotency_key="board-2")
    assert a["id"] == b["id"] != c["id"] and a["priority"] == 5
    assert c["title"] == "Harbour Test: 2 shots, boards only"
    assert a["request"] == {"script": SCRIPT, "timing": TIMING, "clip": CLIP}, "kept as sent, nothing added"
    assert [j["kind"] for j in client.jobs()["jobs"]] == ["storyboard", "storyboard"]
    status, _, raw = api_only.call("GET", f"/v1/jobs/{a['id']}/files")
    assert status == 409 and "queued" in json.loads(raw)["error"]


def test_cancel_stops_a_storyboard_and_leaves_no_folder(served):
    client = served.client("bob-token")
    long_shots = dict(STORYBOARD, timing={"min_seconds": 4, "max_seconds": 4}, clip=dict(CLIP, steps=6, seed=77))
    job = client.submit(long_shots)
    while client.status(job["id"])["status"] == "queued":
        time.sleep(0.05)
    canceled = client.cancel(job["id"])
    assert canceled["status"] == "canceled"
    runner = served.service.runner
    deadline = time.time() + 60
    while job["id"] in runner._active and time.time() < deadline:  # the builder stops when its clips do
        time.sleep(0.1)
    assert job["id"] not in runner._active
    after = client.status(job["id"])
    assert after["status"] == "canceled" and after["files_url"] is None
    outputs = Path(served.service.config.data_dir) / "outputs"
    assert not (outputs / job["id"]).exists() and not list(outputs.glob(f".{job['id']}*"))
    status, _, _ = served.call("GET", f"/v1/jobs/{job['id']}/files", token="bob-token")
    assert status == 409
    assert client.wait(client.submit(dict(prompt="a dot", frames=1, **CLIP))["id"], poll=0.1)["status"] == "succeeded", \
        "the engine goes on after a canceled storyboard"
    while runner.engine._jobs and time.time() < deadline:
        time.sleep(0.1)
    assert not runner.engine._jobs, "the storyboard's clips left the engine"


def test_a_storyboard_running_when_the_service_stops_resumes_from_the_task_cache(ray_local, tmp_path):
    (tmp_path / "tokens.txt").write_text(TOKENS)
    config = ServiceConfig(data_dir=tmp_path, tokens_file=tmp_path / "tokens.txt", runner=RunnerConfig(workers=1))
    first = Served(Service(config))
    try:
        # Slow enough shots (64x64, 40 steps) that the stop lands while the job still has clips to make:
        # a job that ends while the service stops is recorded as ended, and there is nothing to resume.
        slow = dict(CLIP, width=64, height=64, steps=40)
        job = first.client().submit(dict(STORYBOARD, timing={"min_seconds": 2, "max_seconds": 2}, clip=slow))
        while (now := first.client().status(job["id"]))["progress"] < 0.2:
            assert now["status"] in ("queued", "running"), now
            time.sleep(0.05)
    finally:
        first.stop()
    assert JobStore(tmp_path / "jobs.db").get(job["id"]).status == "running", "a stopped service records no end"
    second = Served(Service(config))
    try:
        done = second.client().wait(job["id"], poll=0.1)
        assert done["status"] == "succeeded" and done["cached_tasks"] >= 1, done
        frames, _ = read_mp4(tmp_path / "outputs" / job["id"] / "animatic.mp4")
        assert frames.shape[0] == 2 * 16
        assert not list((tmp_path / "outputs").glob(".*")), "the stopped run's staging is gone"
    finally:
        second.stop()


def test_a_database_from_before_job_kinds_opens_with_clip_jobs(tmp_path):
    db = sqlite3.connect(tmp_path / "jobs.db")
    db.executescript(textwrap.dedent("""\
        CREATE TABLE jobs (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, client TEXT NOT NULL, request TEXT NOT NULL,
            priority INTEGER NOT NULL DEFAULT 0, webhook_url TEXT, idempotency_key TEXT, status TEXT NOT NULL, stage TEXT,
            progress REAL NOT NULL DEFAULT 0, created REAL NOT NULL, started REAL, finished REAL,
            actor_seconds REAL NOT NULL DEFAULT 0, cached_tasks INTEGER NOT NULL DEFAULT 0, error TEXT, output TEXT,
            preview TEXT, UNIQUE (client, idempotency_key));
        INSERT INTO jobs (id, client, request, status, created) VALUES ('old', 'a', '{"prompt": "x"}', 'queued', 1.0);
    """))
    db.close()
    store = JobStore(tmp_path / "jobs.db")
    old = store.get("old")
    assert (old.kind, old.title, old.request) == ("clip", None, {"prompt": "x"})
    new, _ = store.add("a", {"script": SCRIPT}, kind="storyboard", title="Harbour Test: 2 shots")
    assert [(j.id, j.kind) for j in store.with_status("queued")] == [("old", "clip"), (new.id, "storyboard")]
    store.close()
    assert JobStore(tmp_path / "jobs.db").get(new.id).kind == "storyboard", "opening again adds nothing twice"
    with pytest.raises(ValueError, match="kind='film'"):
        store = JobStore(tmp_path / "jobs.db")
        store.add("a", {}, kind="film")


def test_cli_submits_a_storyboard_and_refuses_mixed_or_bad_input(api_only, tmp_path, capsys, monkeypatch):
    from videogen.cli import main

    monkeypatch.setenv("VIDEOGEN_SERVER", api_only.url)
    monkeypatch.setenv("VIDEOGEN_TOKEN", "alice-token")
    (tmp_path / "reel.fountain").write_text(SCRIPT)
    assert main(["submit", "--storyboard", str(tmp_path / "reel.fountain"), "--style", "charcoal", "--boards-only",
                 "--model", "tiny-random", "--width", "32", "--height", "32", "--steps", "2", "--json"]) == 0
    job = json.loads(capsys.readouterr().out)
    assert (job["kind"], job["title"]) == ("storyboard", "Harbour Test: 2 shots, boards only")
    assert job["request"] == dict(script=SCRIPT, format="fountain", style="charcoal", boards_only=True,
                                  clip=dict(model="tiny-random", width=32, height=32, steps=2))
    (tmp_path / "bad.yaml").write_text(SPEC.replace("[square]", "[squar]"))
    Image.new("RGBA", (120, 40), (255, 255, 255, 255)).save(tmp_path / "logo.png")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "spec.yaml").write_text(SPEC)
    for argv, message in [
        (["a cat", "--storyboard", str(tmp_path / "reel.fountain")], "give a prompt, or --storyboard SCRIPT, or --batch SPEC"),
        (["a cat", "--boards-only"], "boards_only=True: applies to --storyboard only"),
        (["--batch", str(tmp_path / "bad.yaml"), "--steps", "2"], "the spec sets the clip; leave out --steps"),
        (["--batch", str(tmp_path / "bad.yaml")], "HTTP 400: spec.yaml:5: formats.0='squar': unknown format"),
        (["--batch", str(tmp_path / "elsewhere" / "spec.yaml")], "overlay.logo.path='logo.png': no such file beside the spec"),
        (["--storyboard", str(tmp_path / "missing.fountain")], "cannot be read"),
    ]:
        assert main(["submit", *argv]) == 2, argv
        assert message in capsys.readouterr().err
    assert len(api_only.client().jobs()["jobs"]) == 1
