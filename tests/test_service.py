"""The job API over a real socket: the app served by uvicorn on 127.0.0.1 (the same FastAPI app
that Ray Serve hosts; `test_service_serve.py` runs it under Serve), one engine for the module.

Covers the happy path to an MP4 read back with PyAV, Range, the preview strip, 401 and 404,
malformed JSON, an oversized body, unknown fields, the engine's limits, the prompt policy with
near-misses, cancel, idempotency, the webhook, a full queue, the queue's order, 50 concurrent
submissions, and the web page in headless Chromium.
"""

import http.client
import io
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest
import uvicorn
from PIL import Image

from videogen.encode import read_mp4
from videogen.policy import Blocklist, PromptPolicy
from videogen.service.app import Service, ServiceConfig, create_app
from videogen.service.client import JobClient
from videogen.service.queue import next_jobs, queue_order
from videogen.service.runner import RunnerConfig
from videogen.service.store import JobRecord, JobStore

# 33 pixel frames = 9 latent frames: keyframes at latent 0, 4, 8 and two windows.
CLIP = dict(prompt="a red circle moving right", frames=33, width=32, height=32, steps=2, fps=8, seed=3)
TINY = dict(prompt="a dot", frames=1, width=32, height=32, steps=1)
TOKENS = "alice-token alice\nbob-token bob\n# a comment line\ncarol-token\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """An app on a free port of 127.0.0.1, served by uvicorn in a thread."""

    def __init__(self, service: Service):
        self.service = service
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)

    def call(self, method: str, path: str, body=None, token="alice-token", headers=None):
        """One raw HTTP call: (status, headers, body bytes). ``body`` may be bytes or a dict (sent as JSON)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = dict(headers or {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        if body is not None:
            headers.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
        conn.close()
        return r.status, dict(r.getheaders()), data

    def client(self, token="alice-token") -> JobClient:
        return JobClient(self.url, token)

    def stop(self):
        self.server.should_exit = True
        self.thread.join()
        self.service.stop()


@pytest.fixture(scope="module")
def served(ray_local, tmp_path_factory):
    data = tmp_path_factory.mktemp("service")
    (data / "tokens.txt").write_text(TOKENS)
    service = Service(ServiceConfig(data_dir=data, tokens_file=data / "tokens.txt", max_body=8192,
                                    runner=RunnerConfig(workers=2, per_client=4, webhook_backoff=0.05)))
    s = Served(service)
    yield s
    s.stop()


def test_healthz_and_openapi_answer_and_every_v1_endpoint_wants_a_token(served):
    status, _, body = served.call("GET", "/healthz", token=None)
    assert status == 200 and json.loads(body)["status"] == "ok"
    status, _, body = served.call("GET", "/openapi.json", token=None)
    schema = json.loads(body)
    assert status == 200 and "/v1/jobs" in schema["paths"] and "/v1/jobs/{job_id}/video" in schema["paths"]
    body_fields = schema["components"]["schemas"]["JobBody"]["properties"]
    assert {"prompt", "frames", "seconds", "keyframe_every", "blend", "priority", "webhook_url"} <= set(body_fields)
    for method, path in [("GET", "/v1/jobs"), ("POST", "/v1/jobs"), ("GET", "/v1/jobs/x"), ("GET", "/v1/jobs/x/video"),
                         ("GET", "/v1/jobs/x/preview"), ("POST", "/v1/jobs/x/cancel")]:
        for token in (None, "wrong-token"):
            status, headers, body = served.call(method, path, body=CLIP if method == "POST" else None, token=token)
            assert status == 401, (method, path, token)
            assert headers["www-authenticate"] == "Bearer" and "token" in json.loads(body)["error"]


def test_happy_path_to_an_mp4_with_range_and_a_preview_strip(served):
    client = served.client()
    job = client.submit(CLIP)
    assert job["status"] == "queued" and len(job["id"]) == 16
    seen = []
    done = client.wait(job["id"], poll=0.1, on_update=lambda j: seen.append((j["status"], j["progress"])))
    assert done["status"] == "succeeded" and done["progress"] == 1.0 and done["stage"] == "succeeded"
    assert done["actor_seconds"] > 0 and done["error"] is None
    assert done["created_at"] <= done["started_at"] <= done["finished_at"]
    assert [p for _, p in seen] == sorted(p for _, p in seen), "progress never goes back"

    status, headers, mp4 = served.call("GET", done["video_url"])
    assert status == 200 and headers["content-type"] == "video/mp4" and headers["accept-ranges"] == "bytes"
    path = Path(served.service.config.data_dir) / "fetched.mp4"
    path.write_bytes(mp4)
    frames, info = read_mp4(path)
    assert frames.shape == (33, 32, 32, 3) and info["fps"] == 8

    status, headers, part = served.call("GET", done["video_url"], headers={"Range": "bytes=100-299"})
    assert status == 206 and part == mp4[100:300]
    assert headers["content-range"] == f"bytes 100-299/{len(mp4)}"

    deadline = time.time() + 10
    while done["preview_url"] is None and time.time() < deadline:  # the preview task may end just after the clip
        time.sleep(0.1)
        done = client.status(done["id"])
    status, headers, png = served.call("GET", done["preview_url"])
    assert status == 200 and headers["content-type"] == "image/png", (status, png[:300])
    strip = np.asarray(Image.open(io.BytesIO(png)))
    assert strip.shape == (32, 3 * 32, 3), "three keyframes side by side"

    listed = client.jobs(status="succeeded")["jobs"]
    assert done["id"] in [j["id"] for j in listed]
    status, _, _ = served.call("GET", done["video_url"] + "?access_token=alice-token", token=None)
    assert status == 200, "a <video src> cannot send a header: the token may come as a query parameter"


def test_another_clients_job_is_404_and_an_unknown_one_too(served):
    job = served.client().submit(TINY)
    for method, path in [("GET", f"/v1/jobs/{job['id']}"), ("GET", f"/v1/jobs/{job['id']}/video"),
                         ("GET", f"/v1/jobs/{job['id']}/preview"), ("POST", f"/v1/jobs/{job['id']}/cancel")]:
        status, _, body = served.call(method, path, token="bob-token")
        assert status == 404 and job["id"] in json.loads(body)["error"]
    assert job["id"] not in [j["id"] for j in served.client("bob-token").jobs()["jobs"]]
    status, _, _ = served.call("GET", "/v1/jobs/0000000000000000")
    assert status == 404
    assert served.client("carol-token").jobs()["jobs"] == [], "a token without a name is a client of its own"
    served.client().wait(job["id"], poll=0.1)


def test_bad_bodies_get_400_413_and_422_naming_the_field(served):
    status, _, body = served.call("POST", "/v1/jobs", body=b'{"prompt": "a cat", "frames": ')
    assert status == 400 and "malformed JSON" in json.loads(body)["error"]
    status, _, body = served.call("POST", "/v1/jobs", body={"prompt": "x" * 9000})
    assert status == 413 and "8192 bytes" in json.loads(body)["error"]
    status, _, body = served.call("POST", "/v1/jobs", body={"prompt": "a cat", "speed": 3})
    assert (status, json.loads(body)) == (422, {"error": "speed=3: unknown field", "field": "speed"})
    status, _, body = served.call("POST", "/v1/jobs", body={"prompt": "a cat", "frames": 0})
    assert status == 422 and json.loads(body)["field"] == "frames"
    status, _, body = served.call("POST", "/v1/jobs", body={"prompt": "a cat", "window": 17, "overlap": 20})
    assert (status, json.loads(body)["error"]) == (422, "overlap=20: must be smaller than window=17")
    status, _, body = served.call("POST", "/v1/jobs", body={"prompt": "a cat", "frames": 5000})
    assert status == 422 and "exceeds the limit" in json.loads(body)["error"]
    status, _, body = served.call("POST", "/v1/jobs", body={"prompt": "a cat", "webhook_url": "ftp://x"})
    assert status == 422 and json.loads(body)["field"] == "webhook_url"
    status, _, body = served.call("POST", "/v1/jobs", body=b"[1, 2]")
    assert status == 422
    status, _, body = served.call("GET", "/v1/jobs?status=done")
    assert status == 422 and json.loads(body)["field"] == "status"
    assert all(j["request"]["prompt"] != "a cat" for j in served.client().jobs(limit=100)["jobs"])


POLICY = PromptPolicy(Blocklist(name="t", categories={"graphic_violence": ["gore", "decapitation"], "self_harm": ["self harm"]}))


@pytest.mark.parametrize("prompt, category", [
    ("a scene full of gore", "graphic_violence"),
    ("GORE on the floor", "graphic_violence"),
    ("une décapitation", "graphic_violence"),
    ("Décapitation!", "graphic_violence"),
    ("ideas of self-harm", "self_harm"),
    ("SELF   HARM", "self_harm"),
    ("a gorgeous sunset", None),        # contains "gore" inside a word
    ("gored by a bull", None),
    ("Al Goresby's garden", None),
    ("self-harmony in music", None),
    ("a self portrait, no harm done", None),
    ("decapitated statue", None),       # another word, not listed
])
def test_policy_is_whole_word_and_ignores_case_and_accents(prompt, category):
    assert POLICY.category(prompt) == category


def test_the_api_refuses_a_blocked_prompt_naming_the_category_and_takes_a_near_miss(served):
    status, _, body = served.call("POST", "/v1/jobs", body=dict(TINY, prompt="a Décapitation scene"))
    error = json.loads(body)
    assert status == 422 and error["field"] == "prompt" and error["category"] == "graphic_violence"
    near_miss = served.client().submit(dict(TINY, prompt="a gorgeous sunset over a gored hillside"))
    assert near_miss["status"] == "queued"
    served.client().wait(near_miss["id"], poll=0.1)


def test_cancel_stops_a_job_and_a_second_cancel_is_409(served):
    client = served.client("bob-token")
    job = client.submit(dict(CLIP, frames=81, steps=8, seed=99))
    client.cancel(job["id"])
    status, _, body = served.call("POST", f"/v1/jobs/{job['id']}/cancel", token="bob-token")
    assert status == 409 and "canceled" in json.loads(body)["error"]
    time.sleep(1.0)
    after = client.status(job["id"])
    assert after["status"] == "canceled" and after["finished_at"] is not None
    status, _, _ = served.call("GET", f"/v1/jobs/{job['id']}/video", token="bob-token")
    assert status == 409
    assert not (Path(served.service.config.data_dir) / "videos" / f"{job['id']}.mp4").exists()


def test_idempotency_key_returns_the_same_job(served):
    client = served.client()
    a = client.submit(TINY, idempotency_key="k-1")
    b = client.submit(TINY, idempotency_key="k-1")
    c = client.submit(TINY, idempotency_key="k-2")
    assert a["id"] == b["id"] != c["id"]
    d = served.client("bob-token").submit(TINY, idempotency_key="k-1")
    assert d["id"] != a["id"], "keys are per client"
    for job in (a, c):
        client.wait(job["id"], poll=0.1)
    served.client("bob-token").wait(d["id"], poll=0.1)


class _Hook(BaseHTTPRequestHandler):
    calls: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Hook.calls.append(body)
        self.send_response(500 if len(_Hook.calls) == 1 else 200)  # the first try fails: the second must come
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhook_is_called_on_completion_and_retried(served):
    hook = HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        job = served.client().submit(TINY, webhook_url=f"http://127.0.0.1:{hook.server_port}/done")
        served.client().wait(job["id"], poll=0.1)
        deadline = time.time() + 10
        while len(_Hook.calls) < 2 and time.time() < deadline:
            time.sleep(0.05)
        assert [c["id"] for c in _Hook.calls] == [job["id"], job["id"]]
        assert _Hook.calls[-1]["status"] == "succeeded"
    finally:
        hook.shutdown()


def test_fifty_concurrent_submissions_none_lost_or_duplicated(served):
    results, errors = [], []

    def submit(i):
        token = "alice-token" if i % 2 else "bob-token"
        try:
            results.append((token, served.client(token).submit(dict(TINY, seed=1000 + i))["id"]))
        except Exception as e:  # collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    ids = [job_id for _, job_id in results]
    assert len(ids) == 50 and len(set(ids)) == 50
    for token, job_id in results:
        assert served.client(token).wait(job_id, poll=0.2)["status"] == "succeeded"
    seeds = {}
    for token in ("alice-token", "bob-token"):
        for job in served.client(token).jobs(limit=100)["jobs"]:
            seeds.setdefault(job["request"]["seed"], []).append(job["id"])
    assert all(len(seeds[1000 + i]) == 1 for i in range(50)), "each submission stored exactly once"


def test_a_full_queue_answers_429_with_retry_after(tmp_path):
    (tmp_path / "tokens.txt").write_text("t1 one\n")
    s = Served(Service(ServiceConfig(data_dir=tmp_path, tokens_file=tmp_path / "tokens.txt", max_queued=3,
                                     retry_after=7, start_runner=False)))
    try:
        client = s.client("t1")
        queued = [client.submit(dict(TINY, seed=i), idempotency_key="first" if i == 0 else None) for i in range(3)]
        assert [j["queue_position"] for j in queued] == [1, 2, 3]
        status, headers, body = s.call("POST", "/v1/jobs", body=TINY, token="t1")
        assert status == 429 and headers["retry-after"] == "7" and "queue is full" in json.loads(body)["error"]
        retried = client.submit(TINY, idempotency_key="first")
        assert retried["id"] == queued[0]["id"], "a retried submit is not refused for a queue its job is already in"
    finally:
        s.stop()


def _record(seq, client, priority=0, status="queued"):
    return JobRecord(seq, f"j{seq}", client, {}, priority, None, None, status, None, 0.0, 0.0, None, None, 0.0, 0, None, None, None)


def test_queue_is_priority_first_then_fair_then_fifo_with_a_per_client_cap():
    queued = [_record(1, "a"), _record(2, "a"), _record(3, "a"), _record(4, "b"), _record(5, "c", priority=5)]
    assert [j.seq for j in queue_order(queued, running=[])] == [5, 1, 4, 2, 3]
    running = [_record(9, "a", status="running")]
    assert [j.seq for j in queue_order(queued, running)] == [5, 4, 1, 2, 3], "b has nothing running: b goes before a"
    assert [j.seq for j in next_jobs(queued, running, slots=10, per_client=2)] == [5, 4, 1]
    assert [j.seq for j in next_jobs(queued, running, slots=2, per_client=2)] == [5, 4]


def test_store_keeps_whole_records_across_reopening(tmp_path):
    store = JobStore(tmp_path / "jobs.db")
    job, created = store.add("a", {"prompt": "x"}, priority=2, idempotency_key="k")
    again, created_again = store.add("a", {"prompt": "y"}, idempotency_key="k")
    assert created and not created_again and again.id == job.id and again.request == {"prompt": "x"}
    assert store.start(job.id) and not store.start(job.id)
    store.progress(job.id, "windows", 0.5)
    store.close()
    reopened = JobStore(tmp_path / "jobs.db")
    assert reopened.get(job.id).status == "running" and reopened.get(job.id).progress == 0.5
    assert reopened.requeue_running() == 1 and reopened.get(job.id).status == "queued"
    assert reopened.cancel(job.id) and not reopened.finish(job.id, "succeeded")
    assert reopened.get(job.id).status == "canceled"
    with pytest.raises(ValueError, match="status='done'"):
        reopened.finish(job.id, "done")


def test_cli_talks_to_the_service(served, tmp_path, capsys, monkeypatch):
    from videogen.cli import main

    monkeypatch.setenv("VIDEOGEN_SERVER", served.url)
    monkeypatch.setenv("VIDEOGEN_TOKEN", "alice-token")
    out = tmp_path / "cli.mp4"
    assert main(["submit", "a blue square", "--frames", "9", "--width", "32", "--height", "32", "--steps", "1",
                 "--fps", "8", "--wait", "-o", str(out)]) == 0
    job_id = capsys.readouterr().out.split()[0]
    frames, _ = read_mp4(out)
    assert frames.shape == (9, 32, 32, 3)
    assert main(["status", job_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "succeeded"
    assert main(["jobs"]) == 0
    assert job_id in capsys.readouterr().out
    fetched = tmp_path / "again.mp4"
    assert main(["fetch", job_id, "-o", str(fetched)]) == 0
    assert fetched.read_bytes() == out.read_bytes()
    assert main(["cancel", job_id]) == 2
    assert "already succeeded" in capsys.readouterr().err
    assert main(["status", "nope"]) == 2
    assert main(["submit", "gore everywhere", "--frames", "9"]) == 2
    assert "category: graphic_violence" in capsys.readouterr().err
    assert main(["generate", "gore everywhere", "-o", str(tmp_path / "g.mp4")]) == 2
    assert "category: graphic_violence" in capsys.readouterr().err and not (tmp_path / "g.mp4").exists()


CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def test_web_page_submits_shows_progress_to_100_and_plays_the_clip(served):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(served.url + "/")
            page.fill("#token", "carol-token")
            page.click("#save-token")
            page.fill("#prompt", "a green triangle spinning")
            page.fill("input[name=frames]", "33")  # two windows, three keyframes
            page.fill("input[name=fps]", "8")
            page.click("#submit")
            row = page.locator("#jobs tr", has_text="a green triangle spinning")
            row.locator("text=100%").wait_for(timeout=120_000)
            assert row.locator("progress").evaluate("bar => bar.value") == 1
            page.wait_for_function("document.getElementById('player').readyState >= 1", timeout=30_000)
            duration = page.evaluate("document.getElementById('player').duration")
            assert duration == pytest.approx(33 / 8, abs=0.13)
            page.wait_for_function("document.querySelector('#preview img')?.naturalWidth > 0", timeout=30_000)
            assert page.locator("#preview img").evaluate("img => img.naturalWidth") == 3 * 32
            assert page.locator("#error").inner_text() == ""
        finally:
            browser.close()
