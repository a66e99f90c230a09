"""A script in, one storyboard folder out: the shot list, boards, per-shot clips and the animatic.

The folder::

    shots.csv          scene, shot id, heading, description, prompt, dialogue, duration, seed...
    shots.yaml         the same as an editable shot list: run it again to redo only edited shots
    boards/<id>.png    each shot's first keyframe
    boards.png         every board on one contact sheet
    shots/<id>.mp4     each shot's clip (not in a boards-only run)
    animatic.mp4/.srt  the shots in order, dialogue burned in, and as subtitles
    storyboard.html    all of it on one page, working offline
    .cache/            task results by content, kept across runs into the same folder

Steps:
1. ``load_script`` reads Fountain or a YAML shot list; ``plan_shots`` decides every shot and
   checks every request, all before Ray starts.
2. ``make_storyboard`` submits every shot to one engine at once (keyframes only for boards), writes
   each board as soon as its keyframes are done, then the sheet, animatic, CSV and page.
3. The folder is built under a hidden name beside the output and renamed into place at the end, so
   a failed run never leaves a folder that looks complete.
"""

from __future__ import annotations

import csv
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import yaml
from PIL import Image

from ..contact import contact_sheet
from ..encode import write_mp4
from ..errors import RequestError
from ..presets import default_model, resolve_model
from ..policy import default_policy
from ..request import resolve
from .animatic import animatic_frames, srt
from .fountain import load_fountain
from .page import storyboard_html
from .shots import Script, ScriptError, Shot, Timing, finish, load_shot_list, to_shot_list

CSV_COLUMNS = ("scene", "shot", "heading", "description", "prompt", "dialogue", "duration", "seed", "frames", "transition")
FOUNTAIN_SUFFIXES = (".fountain", ".spmd", ".txt")
YAML_SUFFIXES = (".yaml", ".yml")
CACHE = ".cache"
MARKERS = ("shots.csv", "storyboard.html")  # a folder holding these is a storyboard a new run may replace


def load_script(path: str | os.PathLike, timing: dict | None = None) -> Script:
    """Read a Fountain screenplay or a YAML shot list.

    Args:
        path: ``.fountain`` (or ``.spmd``, ``.txt``) or ``.yaml``/``.yml``.
        timing: `Timing` fields that override the script's (``words_per_second``, ``min_seconds``...).
    Raises:
        ScriptError: with the file and line of the first problem.
    """
    path = Path(path)
    timing = {k: v for k, v in (timing or {}).items() if v is not None}
    try:
        if path.suffix.lower() in YAML_SUFFIXES:
            script = load_shot_list(path)
            script.timing = Timing.model_validate(script.timing.model_dump() | timing)
            return script
        if path.suffix.lower() in FOUNTAIN_SUFFIXES:
            return load_fountain(path, Timing.model_validate(timing))
    except ScriptError:
        raise
    except ValueError as e:  # a bad timing override
        err = e.errors()[0]
        raise RequestError(str(err["loc"][0]), err["input"], err["msg"]) from None
    raise ScriptError(path, 0, f"unknown script type {path.suffix!r}: use .fountain or .yaml")


def plan_shots(script: Script, request: dict, style: str | None = None) -> tuple[list[Shot], list[dict]]:
    """Decide every shot and build (and check) its clip request.

    Args:
        script: from `load_script`.
        request: clip fields every shot shares (model, size, steps...); ``seed`` is the base seed
            that shots without their own derive theirs from. Lengths come from the script.
        style: replaces the script's style line.
    Returns:
        The shots and one request dict per shot.
    Raises:
        RequestError: a bad shared field, or a length given outside the script.
    """
    for key in ("frames", "seconds", "prompt"):
        if request.get(key) is not None:
            raise RequestError(key, request[key], "comes from the script in a storyboard; set shot lengths with the timing options or the shot list")
    model = resolve_model(request.get("model") or default_model())
    fps = request.get("fps") or model.defaults.fps
    shots = finish(script, fps, request.get("seed", 0), style)
    requests = []
    for shot in shots:
        r = {**request, "prompt": shot.prompt, "frames": shot.frames, "seed": shot.seed, "fps": fps}
        try:
            default_policy().check(r)
            resolve(r, model)
        except RequestError as e:
            raise RequestError(e.field, e.value, f"{e.reason} (shot {shot.id})") from None
        requests.append(r)
    return shots, requests


def check_output_dir(out: str | os.PathLike) -> Path:
    """The storyboard folder, if a run may write it: absent, empty, or an earlier storyboard.

    Raises:
        RequestError: naming ``output`` and the path.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RequestError("output", str(out), "is a file, not a folder")
    if out.is_dir():
        names = {p.name for p in out.iterdir()} - {CACHE}
        if names and not all(m in names for m in MARKERS):
            raise RequestError("output", str(out), "exists and is not a storyboard folder; give a new or empty folder")
    parent = out.absolute().parent
    if not parent.is_dir():
        raise RequestError("output", str(out), f"folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RequestError("output", str(out), f"folder {parent} is not writable")
    return out


@dataclass
class StoryboardResult:
    """What a run made.

    Attributes:
        folder: the storyboard folder.
        shots: the shot list, in order.
        boards: shot id -> board image, uint8 (H, W, 3).
        made: ids of shots whose clip needed new work (the rest came whole from the cache).
        cached_tasks: shot id -> engine tasks read from the cache.
        actor_seconds: time actors spent on this run's tasks, all shots together.
        clips_seconds: wall time until the last shot's clip (or boards) came back.
        seconds: wall time of the run, the sheet, animatic and page included.
    """

    folder: Path
    shots: list[Shot]
    boards: dict[str, np.ndarray]
    made: list[str] = field(default_factory=list)
    cached_tasks: dict[str, int] = field(default_factory=dict)
    actor_seconds: float = 0.0
    clips_seconds: float = 0.0
    seconds: float = 0.0


def make_storyboard(
    script: Script,
    shots: list[Shot],
    requests: list[dict],
    out: str | os.PathLike,
    engine,
    boards_only: bool = False,
    on_board: Callable[[Shot, np.ndarray], None] | None = None,
) -> StoryboardResult:
    """Run every shot on ``engine`` and write the storyboard folder.

    Args:
        script, shots, requests: from `load_script` and `plan_shots`.
        out: the storyboard folder (replaced whole when the run succeeds; its ``.cache`` is kept).
        engine: a `videogen.Engine`; give it ``cache_dir=out/.cache`` so a re-run redoes only changed shots.
        boards_only: run only the keyframe stage: boards and a held-boards animatic, no clips.
        on_board: called with each shot and its board image as soon as its keyframes are done.
    """
    start = time.perf_counter()
    out = check_output_dir(out)
    staging = out.absolute().parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    boards: dict[str, np.ndarray] = {}
    lock = threading.Lock()
    submitted = threading.Event()
    jobs = {}

    def board_ready(shot: Shot, image: np.ndarray) -> None:
        with lock:
            if shot.id in boards:
                return
            boards[shot.id] = image
        Image.fromarray(image).save(staging / "boards" / f"{shot.id}.png")
        if on_board is not None:
            on_board(shot, image)

    def preview_board(shot: Shot) -> None:
        submitted.wait()  # the engine may report a preview before submit() has returned the job
        board_ready(shot, jobs[shot.id].preview[0])

    # Boards are written off the engine's dispatch thread, which calls on_progress holding its lock.
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="videogen-boards")

    def progress_of(shot: Shot):
        def on_progress(p):
            if p.stage == "preview":
                writer.submit(preview_board, shot)
        return on_progress

    try:
        (staging / "boards").mkdir(parents=True)
        if not boards_only:
            (staging / "shots").mkdir()
        # 1. Every shot goes to the shared actor pool at once.
        try:
            for shot, request in zip(shots, requests):
                jobs[shot.id] = engine.submit(
                    request,
                    output=None if boards_only else staging / "shots" / f"{shot.id}.mp4",
                    on_progress=progress_of(shot),
                    keyframes_only=boards_only,
                )
        finally:
            submitted.set()
        # 2. Collect clips as they finish; a shot without keyframes takes its first frame as its board.
        clips: dict[str, np.ndarray] = {}
        result = StoryboardResult(out, shots, boards)
        shot_of = {jobs[s.id].id: s for s in shots}
        for job in engine.as_completed(jobs.values()):
            clip = job.result()
            shot = shot_of[job.id]
            board_ready(shot, (clip.preview if clip.preview is not None else clip.frames)[0])
            clips[shot.id] = boards[shot.id][None] if boards_only else clip.frames
            result.cached_tasks[shot.id] = clip.cached_tasks
            result.actor_seconds += clip.actor_seconds
            if clip.actor_seconds > 0:
                result.made.append(shot.id)
        writer.shutdown(wait=True)
        result.clips_seconds = time.perf_counter() - start
        result.made.sort(key=[s.id for s in shots].index)
        # 3. The contact sheet, the animatic with captions and subtitles, the shot list and the page.
        captions = [f"{s.id}  {s.description}" + (f"\n{s.caption}" if s.dialogue else "") for s in shots]
        contact_sheet([boards[s.id] for s in shots], captions, columns=min(4, len(shots)),
                      title=script.title or out.name).save(staging / "boards.png")
        frames = animatic_frames(shots, clips)
        write_mp4(frames, staging / "animatic.mp4", shots[0].fps,
                  {"prompt": script.title or out.name, "shots": [s.id for s in shots], "boards_only": boards_only})
        (staging / "animatic.srt").write_text(srt(shots), encoding="utf-8")
        write_csv(staging / "shots.csv", shots)
        (staging / "shots.yaml").write_text(
            yaml.safe_dump(to_shot_list(script, shots), sort_keys=False, allow_unicode=True, width=100), encoding="utf-8")
        (staging / "storyboard.html").write_text(
            storyboard_html(script.title or out.name, shots, clips=not boards_only), encoding="utf-8")
        # 4. Into place: the cache moves into the new folder, then the new folder replaces the old one.
        if (out / CACHE).is_dir():
            os.replace(out / CACHE, staging / CACHE)
        if out.exists():
            trash = out.absolute().parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, trash)
            os.replace(staging, out)
            shutil.rmtree(trash)
        else:
            os.replace(staging, out)
    except BaseException:
        for job in jobs.values():
            job.cancel()
        writer.shutdown(wait=True, cancel_futures=True)
        if (staging / CACHE).is_dir() and out.is_dir() and not (out / CACHE).exists():
            os.replace(staging / CACHE, out / CACHE)  # keep the cache with the folder that is still in place
        shutil.rmtree(staging, ignore_errors=True)
        raise
    result.seconds = time.perf_counter() - start
    return result


def write_csv(path: Path, shots: list[Shot]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for s in shots:
            w.writerow([s.scene, s.id, s.heading, s.description, s.prompt, " / ".join(f"{a}: {t}" for a, t in s.dialogue),
                        f"{s.duration:g}", s.seed, s.frames, s.transition])
