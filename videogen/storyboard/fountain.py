"""Fountain screenplays to scenes of shots, parsed with ``screenplain``.

What becomes what:

- A scene heading (``INT.``, ``EXT.``, ``EST.``, ``INT./EXT.``, ``I/E``, or forced with a leading
  ``.``) starts a scene; ``#12#`` after it sets the scene number.
- Each action paragraph is a shot; one longer than ``max_action_words`` is split at sentence ends.
- Dialogue (and both sides of dual dialogue, ``^``) attaches to the scene's current shot; when the
  shot already holds as much dialogue as ``max_seconds`` allows, the next speech starts a new shot on
  its speaker. Parentheticals stay out of captions.
- Transitions (``CUT TO:``, ``> ...``, and ``FADE IN:``-style lines) are kept on the shot before them.
- Notes ``[[...]]``, boneyard ``/* */``, sections ``#``, synopses ``=``, page breaks and centered
  text ``> <`` never reach a prompt.
- The title page may carry ``Style:`` (prefixed to every prompt) and ``Cast:``, one indented line
  per character, ``NAME: description``, optionally ending in ``(seed N)``.

screenplain drops notes only inside one paragraph and does not report line numbers, so notes and
boneyard are checked (with line numbers) and removed here before it parses.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

from screenplain.parsers import fountain
from screenplain.types import Action, Dialog, DualDialog, Slug, Transition

from .shots import CastEntry, Scene, Script, ScriptError, ShotDraft, Timing, read_text, speaker

CAST_RE = re.compile(r"^(?P<name>[^:]+?)\s*:\s*(?P<description>.+?)(?:\s*\(seed\s+(?P<seed>\d+)\))?\s*$", re.IGNORECASE)
OWN_LINE_NOTE_RE = re.compile(r"^[ \t]*\[\[.*?\]\][ \t]*(?:\r?\n|$)", re.MULTILINE | re.DOTALL)
NOTE_RE = re.compile(r"\[\[.*?\]\]", re.DOTALL)
BONEYARD_RE = re.compile(r"/\*.*?\*/", re.DOTALL)
SENTENCE_END_RE = re.compile(r"(?<=[.!?])\s+")
FADE_RE = re.compile(r"^(FADE|CUT|DISSOLVE|SMASH|MATCH|WIPE|IRIS|JUMP)\b[A-Z .']*[:.]$")  # FADE IN:, FADE OUT.


def check_markup(path: Path, text: str) -> None:
    """Raise a `ScriptError` at the line of an unclosed or stray ``/*``, ``*/``, ``[[`` or ``]]``."""
    tokens = re.finditer(r"/\*|\*/|\[\[|\]\]", text)
    open_boneyard = open_note = None
    for m in tokens:
        line = text.count("\n", 0, m.start()) + 1
        tok = m.group()
        if open_boneyard is not None:
            if tok == "*/":
                open_boneyard = None
            continue
        if tok == "/*":
            open_boneyard = line
        elif tok == "*/":
            raise ScriptError(path, line, "'*/' closes a boneyard that was never opened with '/*'")
        elif open_note is not None:
            if tok == "]]":
                open_note = None
            elif tok == "[[":
                raise ScriptError(path, open_note, "note '[[' is not closed with ']]' before the next one")
        elif tok == "[[":
            open_note = line
        else:
            raise ScriptError(path, line, "']]' closes a note that was never opened with '[['")
    if open_boneyard is not None:
        raise ScriptError(path, open_boneyard, "boneyard '/*' is never closed with '*/'")
    if open_note is not None:
        raise ScriptError(path, open_note, "note '[[' is never closed with ']]'")


def strip_hidden(text: str) -> str:
    """Remove boneyard and notes; a note on a line of its own takes its line with it."""
    text = BONEYARD_RE.sub("", text)
    text = OWN_LINE_NOTE_RE.sub("", text)
    return NOTE_RE.sub("", text)


def parse_cast(path: Path, raw_lines: list[str], values: list[str]) -> dict[str, CastEntry]:
    cast: dict[str, CastEntry] = {}
    for value in values:
        line = next((i + 1 for i, raw in enumerate(raw_lines) if value in raw), 0)
        m = CAST_RE.match(value.strip())
        if not m:
            raise ScriptError(path, line, f"cast line {value.strip()!r} is not 'NAME: description' (optionally ending in '(seed N)')")
        name = m.group("name").strip().upper()
        if name in cast:
            raise ScriptError(path, line, f"cast member {name!r} is described twice")
        seed = m.group("seed")
        cast[name] = CastEntry(description=m.group("description").strip(), seed=int(seed) if seed else None)
    return cast


def split_action(text: str, max_words: int) -> list[str]:
    """Cut a long action paragraph at sentence ends into pieces of at most ``max_words`` words
    (a single longer sentence stays whole)."""
    pieces: list[str] = []
    for sentence in SENTENCE_END_RE.split(text):
        if pieces and len(pieces[-1].split()) + len(sentence.split()) <= max_words:
            pieces[-1] += " " + sentence
        else:
            pieces.append(sentence)
    return pieces


def load_fountain(path: Path, timing: Timing | None = None) -> Script:
    """Read a Fountain screenplay into scenes of shots.

    Args:
        path: the ``.fountain`` file (UTF-8).
        timing: shot-length rules; splitting long action and long exchanges depends on them.
    Raises:
        ScriptError: unclosed notes or boneyard, a bad cast line (with line numbers), a script without shots.
    """
    timing = timing or Timing()
    raw = read_text(path)
    check_markup(path, raw)
    screenplay = fountain.parse(io.StringIO(strip_hidden(raw)))
    title_page = screenplay.title_page
    raw_lines = raw.splitlines()
    cast = parse_cast(path, raw_lines, title_page.get("Cast", []))
    max_words = timing.max_seconds * timing.words_per_second

    scenes: list[Scene] = []

    def current_scene() -> Scene:
        if not scenes:
            scenes.append(Scene(""))
        return scenes[-1]

    def add_dialogue(dialog: Dialog) -> None:
        who = speaker(str(dialog.character))
        text = " ".join(" ".join(str(line).split()) for parenthetical, line in dialog.blocks if not parenthetical).strip()
        if not text:
            return
        scene = current_scene()
        shot = scene.shots[-1] if scene.shots else None
        spoken = sum(len(t.split()) for _, t in shot.dialogue) if shot else 0
        if shot is None or (shot.dialogue and spoken + len(text.split()) > max_words):
            shot = ShotDraft(description=f"{who.title()} speaks")
            scene.shots.append(shot)
        shot.dialogue.append((who, text))

    def add_transition(text: str) -> None:
        shots = [s for scene in scenes for s in scene.shots]
        if shots:
            shots[-1].transition = text

    for paragraph in screenplay.paragraphs:
        if isinstance(paragraph, Slug):
            number = str(paragraph.scene_number) if paragraph.scene_number else None
            heading = str(paragraph.line).strip()
            # screenplain keeps no line numbers: find the heading in the file, after the previous one.
            after = scenes[-1].line if scenes else 0
            line = next((i + 1 for i in range(after, len(raw_lines)) if heading in raw_lines[i].upper()), 0)
            scenes.append(Scene(heading, number, line=line))
        elif isinstance(paragraph, Action) and not paragraph.centered:
            text = " ".join(" ".join(str(line).split()) for line in paragraph.lines).strip()
            if not text:
                continue
            if len(paragraph.lines) == 1 and FADE_RE.match(text):
                add_transition(text)
                continue
            current_scene().shots.extend(ShotDraft(description=piece) for piece in split_action(text, timing.max_action_words))
        elif isinstance(paragraph, Dialog):
            add_dialogue(paragraph)
        elif isinstance(paragraph, DualDialog):
            add_dialogue(paragraph.left)
            add_dialogue(paragraph.right)
        elif isinstance(paragraph, Transition):
            add_transition(str(paragraph.line).strip())
    style = " ".join(title_page.get("Style", [])).strip()
    title = " ".join(title_page.get("Title", [])).strip()
    return Script(path, [s for s in scenes if s.shots], title, style, cast, timing)
