"""``videogen serve`` and the job commands: submit, status, jobs, cancel, fetch."""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from pathlib import Path, PurePosixPath

import yaml

from ..cli import REQUEST_FIELDS, add_cluster_flags, add_engine_flags, engine_kwargs, request_from_args
from ..errors import RequestError
from .client import ApiClientError, JobClient

EXIT_REFUSED = 2  # the server rejected the request (bad input, unknown job)
EXIT_FAILED = 1  # the server could not be reached, or the job failed


def cmd_serve(args: argparse.Namespace) -> int:
    from .app import ServiceConfig, read_tokens
    from .deploy import run_service
    from .runner import RunnerConfig

    tokens = args.tokens or os.environ.get("VIDEOGEN_TOKENS_FILE")
    if not tokens:
        print("videogen: error: tokens: give --tokens FILE or set VIDEOGEN_TOKENS_FILE", file=sys.stderr)
        return EXIT_REFUSED
    engine_kwargs(args)  # the cluster flags checked here, before any replica starts
    data = Path(args.data).resolve()
    config = ServiceConfig(
        data_dir=data,
        tokens_file=Path(tokens).resolve(),
        db=Path(args.db).resolve() if args.db else None,
        blocklist=Path(args.blocklist).resolve() if args.blocklist else None,
        max_queued=args.max_queued,
        runner=RunnerConfig(workers=args.workers, per_client=args.per_client, address=args.address,
                            gpu_fraction=args.gpu_fraction, threads=args.threads),
    )
    read_tokens(config.tokens_file)  # fail here, not in the replica, on an empty or missing file
    run_service(config, args.host, args.port)
    return 0


def _client(args: argparse.Namespace) -> JobClient:
    return JobClient(args.server, args.token)


def _line(job: dict) -> str:
    where = f" #{job['queue_position']} in queue" if job["status"] == "queued" and job["queue_position"] else ""
    error = f" ({job['error']})" if job.get("error") else ""
    kind = "" if job["kind"] == "clip" else f"[{job['kind']}] "
    return f"{job['id']}  {job['status']:<9} {job['stage'] or '':<9} {job['progress']:>4.0%}{where}{error}  {kind}{job['title']}"


def _read(path: Path, flag: str) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise RequestError(flag, str(path), f"cannot be read ({getattr(e, 'strerror', None) or e})") from None


def storyboard_body(args: argparse.Namespace) -> dict:
    """A storyboard job's body: the script's text, its format by suffix, the options and the shared clip flags."""
    from ..storyboard.build import FOUNTAIN_SUFFIXES, YAML_SUFFIXES

    path = Path(args.storyboard)
    suffix = path.suffix.lower()
    if suffix not in FOUNTAIN_SUFFIXES + YAML_SUFFIXES:
        raise RequestError("storyboard", str(path), "unknown script type: use .fountain or .yaml")
    body = dict(kind="storyboard", script=_read(path, "storyboard"), format="yaml" if suffix in YAML_SUFFIXES else "fountain",
                boards_only=args.boards_only, clip={k: v for k, v in request_from_args(args).items() if k != "prompt"})
    if args.style is not None:
        body["style"] = args.style
    return body


def batch_body(args: argparse.Namespace) -> dict:
    """A batch job's body: the spec's text and, inline, the files it names that exist beside it."""
    from .documents import SPEC_FILES

    given = [f"--{k.replace('_', '-')}" for k in REQUEST_FIELDS if getattr(args, k, None) is not None]
    if given:
        raise RequestError("batch", args.batch, f"the spec sets the clip; leave out {', '.join(given)}")
    path = Path(args.batch)
    text = _read(path, "batch")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        data = None  # sent as it is: the service names the line
    files = {}
    for loc in SPEC_FILES:
        value = data
        for key in loc:
            value = value.get(key) if isinstance(value, dict) else None
        name = PurePosixPath(value) if isinstance(value, str) else None
        # Only files in the spec's folder go; the service refuses any other path, naming its line.
        if name is None or name.is_absolute() or ".." in name.parts:
            continue
        if not (path.parent / name).is_file():
            raise RequestError(".".join(loc), value, f"no such file beside the spec ({path.parent / name})")
        files[name.as_posix()] = base64.b64encode((path.parent / name).read_bytes()).decode()
    return dict(kind="batch", spec=text, files=files)


def job_body(args: argparse.Namespace) -> dict:
    """The body ``videogen submit`` sends: a clip request, or a storyboard's or batch's document."""
    documents = [flag for flag in ("storyboard", "batch") if getattr(args, flag) is not None]
    if bool(args.prompt) == bool(documents):
        raise RequestError("prompt", args.prompt, "give a prompt, or --storyboard SCRIPT, or --batch SPEC (one of them)")
    if not args.storyboard and args.style is not None:
        raise RequestError("style", args.style, "applies to --storyboard only")
    if not args.storyboard and args.boards_only:
        raise RequestError("boards_only", True, "applies to --storyboard only")
    if args.storyboard:
        return storyboard_body(args)
    if args.batch:
        return batch_body(args)
    return request_from_args(args)


def _download(client: JobClient, job: dict, output: str) -> Path:
    """A clip's MP4 to ``output``; a storyboard's or batch's files into the folder ``output``."""
    return client.fetch(job["id"], output) if job["kind"] == "clip" else client.fetch_files(job["id"], output)


def cmd_submit(args: argparse.Namespace) -> int:
    client = _client(args)
    job = client.submit(job_body(args), args.priority, args.webhook_url, args.idempotency_key)
    print(job["id"] if not args.json else json.dumps(job))
    if not (args.wait or args.output):
        return 0
    job = client.wait(job["id"], on_update=None if args.json else lambda j: print(_line(j), file=sys.stderr))
    if job["status"] != "succeeded":
        print(f"videogen: error: job {job['id']} {job['status']}: {job.get('error') or ''}", file=sys.stderr)
        return EXIT_FAILED
    if args.output:
        print(f"wrote {_download(client, job, args.output)}", file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    job = _client(args).status(args.id)
    print(json.dumps(job, indent=2) if args.json else _line(job))
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    page = _client(args).jobs(args.status, args.limit, args.offset)
    if args.json:
        print(json.dumps(page))
    else:
        for job in page["jobs"]:
            print(_line(job))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    print(_line(_client(args).cancel(args.id)))
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    client = _client(args)
    print(f"wrote {_download(client, client.status(args.id), args.output)}")
    return 0


def _guard(func):
    """Turn the server's refusals into one ``videogen: error:`` line and an exit code."""

    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except ApiClientError as e:
            print(f"videogen: error: {e}", file=sys.stderr)
            return EXIT_FAILED if e.status in (0,) or e.status >= 500 else EXIT_REFUSED

    return run


def _server_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", metavar="URL", help="the service (default $VIDEOGEN_SERVER, else http://127.0.0.1:8000)")
    p.add_argument("--token", metavar="TOKEN", help="bearer token (default $VIDEOGEN_TOKEN)")
    p.add_argument("--json", action="store_true", help="print JSON")


def add_command(sub) -> None:
    """Register serve, submit, status, jobs, cancel and fetch on the ``videogen`` parser."""
    serve = sub.add_parser("serve", help="run the job service (HTTP API and web page) on Ray Serve",
                           description="Serve the job API, its queue and the web page with Ray Serve; jobs share one actor pool.",
                           epilog="example: videogen serve --tokens tokens.txt --port 8000 --workers 2")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    serve.add_argument("--tokens", metavar="FILE", help="bearer tokens, one per line, each optionally followed by a client name (default $VIDEOGEN_TOKENS_FILE)")
    serve.add_argument("--data", metavar="DIR", default="videogen-data", help="videos, previews and the task cache (default ./videogen-data)")
    serve.add_argument("--db", metavar="PATH", help="the SQLite job database (default DIR/jobs.db)")
    serve.add_argument("--blocklist", metavar="FILE", help="prompt policy file (default $VIDEOGEN_BLOCKLIST or configs/policy/default.yaml)")
    serve.add_argument("--max-queued", type=int, default=1000, metavar="N", help="queued jobs before submits get 429 (default 1000)")
    serve.add_argument("--per-client", type=int, default=4, metavar="N", help="jobs one client may have running at once (default 4)")
    add_cluster_flags(serve)
    serve.set_defaults(func=cmd_serve)

    submit = sub.add_parser("submit", help="send a clip, storyboard or batch job to a service",
                            description="Send a job to a videogen service: a clip (a prompt), a storyboard (--storyboard) "
                                        "or an ad batch (--batch).",
                            epilog='examples:\n'
                                   '  videogen submit "a red circle moving right" --seconds 2 --wait -o out.mp4\n'
                                   '  videogen submit --storyboard examples/storyboard/harbour.fountain --boards-only --wait -o harbour\n'
                                   '  videogen submit --batch examples/ads/sneakers.yaml --wait -o ads_out',
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    submit.add_argument("prompt", nargs="?", help="what the clip shows (leave out with --storyboard or --batch)")
    documents = submit.add_argument_group("storyboard and batch jobs")
    kind = documents.add_mutually_exclusive_group()
    kind.add_argument("--storyboard", metavar="SCRIPT", help="a .fountain screenplay or .yaml shot list: a storyboard job "
                                                              "(the clip flags are shared by every shot)")
    kind.add_argument("--batch", metavar="SPEC", help="an ad batch spec (.yaml): a batch job; the feed, logo or font it "
                                                      "names are sent with it")
    documents.add_argument("--style", metavar="TEXT", help="with --storyboard: prefixed to every prompt (default: the script's Style)")
    documents.add_argument("--boards-only", action="store_true", help="with --storyboard: keyframes only, boards and a held-boards animatic")
    add_engine_flags(submit)
    submit.add_argument("--priority", type=int, default=0, help="higher runs first (default 0)")
    submit.add_argument("--webhook-url", metavar="URL", help="called with the job's final state")
    submit.add_argument("--idempotency-key", metavar="KEY", help="a retried submit with the same key returns the same job")
    submit.add_argument("--wait", action="store_true", help="wait for the job to end")
    submit.add_argument("-o", "--output", metavar="OUT", help="wait, then download the MP4 here (a new folder for --storyboard or --batch)")
    _server_flags(submit)
    submit.set_defaults(func=_guard(cmd_submit))

    for name, func, helptext in (("status", cmd_status, "show one job"), ("cancel", cmd_cancel, "stop a job")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("id", help="job id")
        _server_flags(p)
        p.set_defaults(func=_guard(func))

    jobs = sub.add_parser("jobs", help="list your jobs, newest first")
    jobs.add_argument("--status", choices=["queued", "running", "succeeded", "failed", "canceled"])
    jobs.add_argument("--limit", type=int, default=20)
    jobs.add_argument("--offset", type=int, default=0)
    _server_flags(jobs)
    jobs.set_defaults(func=_guard(cmd_jobs))

    fetch = sub.add_parser("fetch", help="download a finished job's MP4, or every file of a storyboard or batch")
    fetch.add_argument("id", help="job id")
    fetch.add_argument("-o", "--output", required=True, metavar="OUT", help="OUT.mp4 for a clip; a new folder for a storyboard or batch")
    _server_flags(fetch)
    fetch.set_defaults(func=_guard(cmd_fetch))
