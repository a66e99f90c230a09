"""The shot list: its YAML schema, and how a scene's shots get their ids, prompts, lengths and seeds.

A script (Fountain or YAML) becomes `Scene`s of `ShotDraft`s; `finish` turns those into `Shot`s:

- **id**: the scene number and a letter, ``12A``, ``12B``... (or the id the shot list gives).
- **prompt**: ``style. setting. description. Cast: description.``, where the setting comes from
  the scene heading (``INT. KITCHEN - NIGHT`` is ``interior, kitchen, night``) and every cast
  member the shot shows or lets speak adds their description. A shot with its own ``prompt`` is
  used as written.
- **length**: dialogue words / ``words_per_second``, kept within ``min_seconds`` and
  ``max_seconds``; a shot without dialogue lasts ``min_seconds``; a length the shot list gives is
  used as written. Lengths are whole frames at the clip's fps.
- **seed**: the shot list's seed, else the first cast member's seed (so a character keeps one seed
  across shots), else one derived from the run's seed and the shot id (never from Python's ``hash()``).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import Field, ValidationError, field_validator

from ..errors import RequestError
from ..presets import Strict
from ..request import MAX_SEED


class ScriptError(RequestError):
    """A bad script or shot list, with the file and line so the message alone says where to look.

    Args:
        path: the script file.
        line: 1-based line number (0 when the problem is the whole file).
        reason: what is wrong.
    """

    def __init__(self, path: str | Path, line: int, reason: str):
        self.field, self.value, self.reason, self.line = "script", str(path), reason, line
        ValueError.__init__(self, f"{path}:{line}: {reason}" if line else f"{path}: {reason}")


class Timing(Strict):
    """How long shots last and how long action paragraphs may be before they are split."""

    words_per_second: float = Field(default=2.5, gt=0)  # a calm speaking pace
    min_seconds: float = Field(default=2.0, gt=0)
    max_seconds: float = Field(default=8.0, gt=0)
    max_action_words: int = Field(default=30, ge=1)  # an action paragraph longer than this becomes several shots


class CastEntry(Strict):
    description: str
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)


class ShotEntry(Strict):
    """One shot as a shot list writes it; everything but the description is optional."""

    id: str | None = None
    description: str
    prompt: str | None = None
    dialogue: list[dict[str, str]] = []  # [{CHARACTER: line}, ...]
    duration: float | None = Field(default=None, gt=0, allow_inf_nan=False)  # seconds
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    transition: str = ""

    @field_validator("dialogue")
    @classmethod
    def _one_speaker_per_line(cls, v: list[dict[str, str]]) -> list[dict[str, str]]:
        for item in v:
            if len(item) != 1:
                raise ValueError(f"each dialogue line is one 'CHARACTER: text' pair, got {item!r}")
        return v


class SceneEntry(Strict):
    heading: str = ""
    number: str | None = None
    shots: list[ShotEntry] = Field(min_length=1)


class ShotList(Strict):
    """A YAML shot list: for people who do not write Fountain, and what a run writes back as ``shots.yaml``."""

    title: str = ""
    style: str = ""
    timing: Timing = Timing()
    cast: dict[str, CastEntry] = {}
    scenes: list[SceneEntry] = Field(min_length=1)


@dataclass
class ShotDraft:
    """A shot as read from a script, before ids, prompts, lengths and seeds are decided."""

    description: str
    dialogue: list[tuple[str, str]] = field(default_factory=list)  # (character, line)
    transition: str = ""
    id: str | None = None
    prompt: str | None = None
    duration: float | None = None  # seconds, when the script gives it
    seed: int | None = None
    line: int = 0  # where the shot starts in the script (0: unknown)


@dataclass
class Scene:
    heading: str
    number: str | None = None
    shots: list[ShotDraft] = field(default_factory=list)
    line: int = 0


@dataclass
class Script:
    """A parsed script: what `finish` needs, whatever the file format was."""

    path: Path
    scenes: list[Scene]
    title: str = ""
    style: str = ""
    cast: dict[str, CastEntry] = field(default_factory=dict)
    timing: Timing = field(default_factory=Timing)


@dataclass(frozen=True)
class Shot:
    """One shot, fully decided: one clip request and one row of ``shots.csv``."""

    scene: str
    id: str
    heading: str
    description: str
    prompt: str
    dialogue: tuple[tuple[str, str], ...]
    frames: int
    fps: int
    seed: int
    transition: str = ""

    @property
    def duration(self) -> float:
        """Seconds."""
        return self.frames / self.fps

    @property
    def caption(self) -> str:
        """The dialogue as subtitle lines, ``CHARACTER: line`` each."""
        return "\n".join(f"{who}: {text}" for who, text in self.dialogue)


PLACES = {"INT": "interior", "EXT": "exterior", "EST": "establishing shot", "INT/EXT": "interior and exterior", "I/E": "interior and exterior"}
HEADING_RE = re.compile(r"^(INT\.?/EXT|INT|EXT|EST|I/E)[. ]\s*(.*)$", re.IGNORECASE)


def setting(heading: str) -> str:
    """A scene heading as prompt words: ``INT. KITCHEN - NIGHT`` -> ``interior, kitchen, night``."""
    heading = heading.strip().lstrip(".").strip()
    m = HEADING_RE.match(heading)
    place, rest = (PLACES[m.group(1).upper().replace(".", "")], m.group(2)) if m else ("", heading)
    parts = [p.strip() for p in re.split(r"\s+-+\s+", rest) if p.strip()]
    return ", ".join(p.lower() for p in (place, *parts) if p)


def stable_seed(*parts) -> int:
    """A 32-bit seed from text, the same in every process (unlike Python's salted ``hash()``)."""
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:4], "big")


def shot_letters(n: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA: the letter part of a shot id."""
    letters = ""
    n += 1
    while n:
        n, r = divmod(n - 1, 26)
        letters = chr(ord("A") + r) + letters
    return letters


def speaker(cue: str) -> str:
    """A character cue without its extension: ``MAYA (V.O.)`` -> ``MAYA``."""
    return re.sub(r"\s*\(.*?\)\s*", " ", cue).strip()


def featured(draft: ShotDraft, cast: dict[str, CastEntry]) -> list[str]:
    """Cast members the shot shows or lets speak: those its description names, in the order named,
    then its speakers, in speaking order."""
    named = []
    for name in cast:
        m = re.search(rf"\b{re.escape(name)}\b", draft.description, re.IGNORECASE)
        if m:
            named.append((m.start(), name))
    names = [name for _, name in sorted(named)]
    by_upper = {name.upper(): name for name in cast}
    for who, _ in draft.dialogue:
        name = by_upper.get(speaker(who).upper())
        if name is not None and name not in names:
            names.append(name)
    return names


def frames_for(seconds: float, fps: int) -> int:
    return max(1, round(seconds * fps))


def finish(script: Script, fps: int, base_seed: int = 0, style: str | None = None) -> list[Shot]:
    """Decide every shot's id, prompt, length and seed.

    Args:
        script: the parsed script.
        fps: frames per second of the clips (lengths become whole frames at this rate).
        base_seed: the run's seed; shots without a seed of their own or of a cast member derive theirs from it.
        style: replaces the script's own style line when given.
    Raises:
        ScriptError: an empty script, a repeated shot id, or a length that is not whole frames.
    """
    style = script.style if style is None else style
    timing = script.timing
    if timing.min_seconds > timing.max_seconds:
        raise ScriptError(script.path, 0, f"min_seconds={timing.min_seconds} is longer than max_seconds={timing.max_seconds}")
    shots: list[Shot] = []
    seen: dict[str, int] = {}
    for number, scene in enumerate(script.scenes, start=1):
        scene_no = scene.number or str(number)
        where = setting(scene.heading)
        for i, draft in enumerate(scene.shots):
            shot_id = draft.id or f"{scene_no}{shot_letters(i)}"
            if shot_id in seen:
                raise ScriptError(script.path, draft.line or scene.line, f"shot id {shot_id!r} is used twice")
            seen[shot_id] = draft.line
            names = featured(draft, script.cast)
            if draft.prompt is not None:
                prompt = draft.prompt
            else:
                people = [f"{n.title()}: {script.cast[n].description}" for n in names]
                prompt = ". ".join(p.strip().rstrip(".") for p in (style, where, draft.description, *people) if p.strip()) + "."
            if draft.duration is not None:
                frames = draft.duration * fps
                if abs(frames - round(frames)) > 1e-6:
                    raise ScriptError(script.path, draft.line, f"duration={draft.duration} is not a whole number of frames at fps={fps}")
                frames = round(frames)
            else:
                words = sum(len(text.split()) for _, text in draft.dialogue)
                seconds = min(max(words / timing.words_per_second, timing.min_seconds), timing.max_seconds)
                frames = frames_for(seconds, fps)
            if draft.seed is not None:
                seed = draft.seed
            elif names:
                member = script.cast[names[0]]
                seed = member.seed if member.seed is not None else stable_seed(base_seed, "cast", names[0].upper())
            else:
                seed = stable_seed(base_seed, "shot", shot_id)
            shots.append(Shot(scene_no, shot_id, scene.heading, draft.description, prompt,
                              tuple(draft.dialogue), frames, fps, seed, draft.transition))
    if not shots:
        raise ScriptError(script.path, 0, "the script has no shots: write at least one action paragraph")
    return shots


# ------------------------------------------------------------------------------------- YAML


def yaml_lines(text: str) -> dict[tuple, int]:
    """The 1-based line of every key and item in a YAML document, by its path (``("scenes", 0, "shots")``)."""
    lines: dict[tuple, int] = {}

    def walk(node, path):
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                walk(value, path + (key.value,))
                lines[path + (key.value,)] = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, path + (i,))

    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is not None:
        walk(root, ())
    return lines


def load_shot_list(path: Path) -> Script:
    """Read a YAML shot list; every error names the file and line.

    Raises:
        ScriptError: bad YAML, an unknown key, a missing description, an empty list...
    """
    text = read_text(path)
    try:
        data = yaml.safe_load(text)
        lines = yaml_lines(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise ScriptError(path, mark.line + 1 if mark else 0, f"not valid YAML: {getattr(e, 'problem', e)}") from None
    if data is None:
        raise ScriptError(path, 0, "the shot list is empty: give at least one scene with one shot")
    try:
        shot_list = ShotList.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(err["loc"])
        line = next((lines[loc[:n]] for n in range(len(loc), -1, -1) if loc[:n] in lines), 0)
        key = ".".join(map(str, loc)) or "shot list"
        reason = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            reason = "unknown key"
        value = f"={err['input']!r}" if err["type"] != "missing" and not isinstance(err["input"], (dict, list)) else ""
        raise ScriptError(path, line, f"{key}{value}: {reason}") from None
    scenes = []
    for si, s in enumerate(shot_list.scenes):
        scene = Scene(s.heading, s.number, line=lines.get(("scenes", si), 0))
        for i, shot in enumerate(s.shots):
            scene.shots.append(ShotDraft(
                description=shot.description,
                dialogue=[next(iter(d.items())) for d in shot.dialogue],
                transition=shot.transition,
                id=shot.id,
                prompt=shot.prompt,
                duration=shot.duration,
                seed=shot.seed,
                line=lines.get(("scenes", si, "shots", i), 0),
            ))
        scenes.append(scene)
    return Script(path, scenes, shot_list.title, shot_list.style, dict(shot_list.cast), shot_list.timing)


def to_shot_list(script: Script, shots: list[Shot]) -> dict:
    """The decided shots as a YAML shot list: every prompt, length and seed written out, so editing one
    shot and running the list again changes only that shot's request."""
    scenes: list[dict] = []
    for shot in shots:
        if not scenes or scenes[-1]["number"] != shot.scene:
            scenes.append({"heading": shot.heading, "number": shot.scene, "shots": []})
        entry = {"id": shot.id, "description": shot.description, "prompt": shot.prompt}
        if shot.dialogue:
            entry["dialogue"] = [{who: text} for who, text in shot.dialogue]
        entry.update(duration=shot.duration, seed=shot.seed)
        if shot.transition:
            entry["transition"] = shot.transition
        scenes[-1]["shots"].append(entry)
    return {
        "title": script.title,
        "style": script.style,
        "timing": script.timing.model_dump(),
        "cast": {name: c.model_dump(exclude_none=True) for name, c in script.cast.items()},
        "scenes": scenes,
    }


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ScriptError(path, 0, "no such file") from None
    except UnicodeDecodeError as e:
        raise ScriptError(path, 0, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise ScriptError(path, 0, f"cannot be read ({e.strerror})") from None
