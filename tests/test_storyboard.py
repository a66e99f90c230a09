"""Storyboards: scripts to shot lists (pure), bad scripts with line numbers, and whole runs on one
engine with a cache: the folder's files, shot lengths, the animatic's length and captions, and an
edited shot list redoing only the edited shot."""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from videogen.contact import contact_sheet
from videogen.encode import read_mp4
from videogen.errors import RequestError
from videogen.storyboard.animatic import burn_captions, scale_for, srt
from videogen.storyboard.build import CACHE, check_output_dir, load_script, make_storyboard, plan_shots
from videogen.storyboard.shots import ScriptError, setting

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "storyboard"
SMALL = dict(width=32, height=32, steps=2, fps=8)

# Every kind of heading, dialogue, dual dialogue, transitions, and hidden text that must not leak.
SCRIPT = """\
Title: Test Reel
Style: ink wash
Cast:
    ANNA: a girl in a green coat (seed 5)
    BEN: a tall man with a scar

FADE IN:

# ACT ONE SECRETSECTION

= SECRETSYNOPSIS the opening.

INT. KITCHEN - NIGHT

Anna pours tea. [[SECRETNOTE inline]] Steam rises.

ANNA
(quietly)
Is he coming?

[[SECRETNOTE
on two paragraphs

of its own]]

/* SECRETBONEYARD
BEN
I was never here.
*/

EXT. GARDEN - DAY #12#

Ben waits by the gate.

BEN
Yes.

ANNA ^
No.

CUT TO:

EST. CITY SKYLINE - DUSK

The towers glow.

INT./EXT. CAR - MOVING

Ben drives.

> SMASH CUT TO:

I/E. TRAIN - NIGHT

Lights flicker past the window.

.DREAM SEQUENCE

Feathers fall in an empty hall.

> THE END <
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def test_reel(tmp_path):
    return load_script(write(tmp_path, "reel.fountain", SCRIPT))


def test_fountain_scenes_shots_dialogue_and_transitions(test_reel):
    shots, _ = plan_shots(test_reel, dict(SMALL))
    assert [s.id for s in shots] == ["1A", "12A", "3A", "4A", "5A", "6A"]
    assert [s.heading for s in shots] == [
        "INT. KITCHEN - NIGHT", "EXT. GARDEN - DAY", "EST. CITY SKYLINE - DUSK", "INT./EXT. CAR - MOVING",
        "I/E. TRAIN - NIGHT", "DREAM SEQUENCE",
    ]
    assert shots[0].description == "Anna pours tea. Steam rises."
    assert shots[0].dialogue == (("ANNA", "Is he coming?"),)  # the parenthetical is not spoken
    assert shots[1].dialogue == (("BEN", "Yes."), ("ANNA", "No."))  # dual dialogue: both sides
    assert [s.transition for s in shots] == ["", "CUT TO:", "", "SMASH CUT TO:", "", ""]
    assert shots[0].prompt == "ink wash. interior, kitchen, night. Anna pours tea. Steam rises. Anna: a girl in a green coat."
    assert setting("EST. CITY SKYLINE - DUSK") == "establishing shot, city skyline, dusk"
    assert setting("INT./EXT. CAR - MOVING") == "interior and exterior, car, moving"


def test_notes_boneyard_sections_and_synopses_never_reach_a_prompt(test_reel):
    shots, requests = plan_shots(test_reel, dict(SMALL))
    text = " ".join(s.prompt + s.caption + s.description for s in shots) + " ".join(r["prompt"] for r in requests)
    assert "SECRET" not in text and "never here" not in text and "THE END" not in text
    assert "BEN: I was never here." not in [s.caption for s in shots]


def test_style_and_cast_keep_one_look_and_seed(test_reel):
    shots, _ = plan_shots(test_reel, dict(SMALL), style="pencil sketch")
    assert all(s.prompt.startswith("pencil sketch. ") for s in shots)
    assert shots[0].seed == 5  # Anna's, from the cast note
    ben_shots = [s for s in shots if s.description.startswith("Ben")]
    assert len(ben_shots) == 2 and len({s.seed for s in ben_shots}) == 1  # Ben keeps one derived seed
    assert all("Ben: a tall man with a scar." in s.prompt for s in ben_shots)
    assert len({s.seed for s in shots if "Ben" not in s.description and "Anna" not in s.description}) == 3
    # Seeds are derived from text, not from Python's salted hash(): the same in every process.
    again, _ = plan_shots(load_script(test_reel.path), dict(SMALL), style="pencil sketch")
    assert [s.seed for s in again] == [s.seed for s in shots]


def test_shot_lengths_follow_dialogue_within_min_and_max(tmp_path):
    words20 = " ".join(["word"] * 20)
    script = write(tmp_path, "len.fountain", f"INT. ROOM - DAY\n\nA.\n\nB.\n\nANNA\nOne two three four five.\n\nC.\n\nANNA\n{words20} {words20}\n")
    shots, requests = plan_shots(load_script(script, dict(words_per_second=2.0, min_seconds=1.5, max_seconds=4.0)), dict(SMALL))
    # No dialogue: the minimum. 5 words at 2 w/s: 2.5 s = 20 frames. 40 words: held at the 4 s maximum.
    assert [s.frames for s in shots] == [12, 20, 32]
    assert [r["frames"] for r in requests] == [12, 20, 32]
    assert [s.duration for s in shots] == [1.5, 2.5, 4.0]


def test_long_action_and_long_exchanges_are_split(tmp_path):
    action = " ".join(f"Sentence number {i} is here." for i in range(8))  # 40 words
    talk = "\n\n".join(f"ANNA\n{' '.join(['la'] * 12)}" for _ in range(3))  # 3 speeches of 12 words
    script = write(tmp_path, "split.fountain", f"INT. ROOM - DAY\n\n{action}\n\n{talk}\n")
    shots, _ = plan_shots(load_script(script, dict(max_action_words=15)), dict(SMALL))
    assert [len(s.description.split()) for s in shots[:3]] == [15, 15, 10]
    assert all(s.description.endswith(".") for s in shots[:3])
    # 8 s at 2.5 words/s holds 20 words: the second and third speeches each start a shot on their speaker.
    assert [len(s.dialogue) for s in shots] == [0, 0, 1, 1, 1]
    assert shots[3].description == "Anna speaks"


def test_yaml_shot_list_matches_the_fountain_example():
    fountain, _ = plan_shots(load_script(EXAMPLES / "harbour.fountain"), dict(SMALL))
    shot_list, _ = plan_shots(load_script(EXAMPLES / "harbour.yaml"), dict(SMALL))
    assert [s.id for s in fountain] == [s.id for s in shot_list] == ["1A", "1B", "2A", "3A", "4A"]
    assert [s.prompt for s in fountain] == [s.prompt for s in shot_list]
    assert [s.dialogue for s in fountain] == [s.dialogue for s in shot_list]
    assert shot_list[3].frames == 24 and shot_list[4].seed == 7  # given in the shot list
    assert fountain[2].seed == 42  # Tom's: he is the first the shot names


@pytest.mark.parametrize(
    "name,text,expected",
    [
        ("a.fountain", "INT. ROOM - DAY\n\nA.\n\n/* forgotten\n\nB.\n", r"a.fountain:5: boneyard '/\*' is never closed"),
        ("b.fountain", "INT. ROOM - DAY\n\nA. [[note\n\nB.\n", r"b.fountain:3: note '\[\[' is never closed"),
        ("c.fountain", "INT. ROOM - DAY\n\nA. */\n", r"c.fountain:3: '\*/' closes a boneyard that was never opened"),
        ("d.fountain", "Title: X\nCast:\n    NOBODY\n\nINT. ROOM - DAY\n\nA.\n", r"d.fountain:3: cast line 'NOBODY'"),
        ("e.fountain", "", r"e.fountain: the script has no shots"),
        ("f.fountain", "[[only a note]]\n\n/* and a boneyard */\n", r"f.fountain: the script has no shots"),
        ("o.fountain", "INT. A #3#\n\nA.\n\nINT. B\n\nB.\n\nINT. C\n\nC.\n", r"o.fountain:9: shot id '3A' is used twice"),
        ("g.yaml", "scenes:\n  - heading: INT. A\n    shots:\n      - description: x\n        lenght: 3\n",
         r"g.yaml:5: scenes.0.shots.0.lenght=3: unknown key"),
        ("h.yaml", "scenes:\n  - heading: INT. A\n    shots:\n      - prompt: x\n", r"h.yaml:4: scenes.0.shots.0.description: Field required"),
        ("i.yaml", "scenes:\n  - heading: [unclosed\n", r"i.yaml:3: not valid YAML"),
        ("j.yaml", "", r"j.yaml: the shot list is empty"),
        ("k.yaml", "scenes:\n  - shots:\n      - {id: X, description: a}\n      - {id: X, description: b}\n", r"k.yaml:4: shot id 'X' is used twice"),
        ("l.yaml", "scenes:\n  - shots:\n      - description: a\n        duration: 0.3\n", r"l.yaml:3: duration=0.3 is not a whole number of frames at fps=8"),
        ("m.yaml", "scenes:\n  - shots:\n      - description: a\n        dialogue: [{A: x, B: y}]\n", r"m.yaml:4: scenes.0.shots.0.dialogue: each dialogue line"),
        ("n.txt.docx", "x", r"unknown script type '.docx'"),
    ],
)
def test_bad_scripts_name_the_file_and_line(tmp_path, name, text, expected):
    path = write(tmp_path, name, text)
    with pytest.raises(ScriptError, match=expected):
        plan_shots(load_script(path), dict(SMALL))


def test_lengths_come_from_the_script(test_reel):
    with pytest.raises(RequestError, match="frames=40: comes from the script"):
        plan_shots(test_reel, dict(SMALL, frames=40))
    with pytest.raises(RequestError, match=r"width=50: must be a multiple of 16 .*\(shot 1A\)"):
        plan_shots(test_reel, dict(SMALL, width=50))


def test_output_must_be_new_empty_or_a_storyboard(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "thesis.txt").write_text("mine")
    with pytest.raises(RequestError, match="is not a storyboard folder"):
        check_output_dir(tmp_path / "docs")
    assert check_output_dir(tmp_path / "new") == tmp_path / "new"


def test_contact_sheet_grid_and_captions():
    images = [np.full((32, 48, 3), 40 * i, np.uint8) for i in range(5)]
    sheet = contact_sheet(images, [f"{i}A" for i in range(5)], columns=3, cell_width=96, gap=10, caption_lines=2, font_size=12)
    # 3 columns of 96 px with 10 px gaps; 2 rows of 64 px images + 2 caption lines (16 px) + 5 px.
    assert sheet.size == (10 + 3 * 106, 10 + 2 * (64 + 2 * 16 + 5) + 2 * 10)
    pixels = np.asarray(sheet)
    assert (pixels[10:74, 10 + 106 : 10 + 106 + 96] == 40).all()  # the second image, scaled 2x
    caption = pixels[74:106, 10:106]
    assert (caption > 200).any()  # text was drawn under the first image
    strip = contact_sheet(images, columns=len(images), cell_width=20, gap=2)
    assert strip.size == (2 + 5 * 22, 2 + round(32 * 20 / 48) + 2)


def test_captions_are_burned_into_the_bottom_band_only():
    frames = np.full((3, 120, 240, 3), 100, np.uint8)
    out = burn_captions(frames, "ANNA: Is he coming?")
    changed = np.abs(out.astype(int) - frames).sum(axis=(0, 3)) > 0  # (H, W)
    rows = np.where(changed.any(axis=1))[0]
    assert rows.min() > 120 * 2 // 3 and rows.max() == 119
    assert (out[:, rows.min():] > 200).any()  # white text
    assert burn_captions(frames, "") is frames


def test_srt_times_follow_the_shot_list(test_reel):
    shots, _ = plan_shots(test_reel, dict(SMALL))
    text = srt(shots)
    starts = np.cumsum([0] + [s.frames for s in shots]) / 8
    assert text.startswith("1\n00:00:00,000 --> ")
    blocks = text.strip().split("\n\n")
    assert len(blocks) == 2 and "ANNA: Is he coming?" in blocks[0] and "BEN: Yes.\nANNA: No." in blocks[1]
    assert f"00:00:{starts[1]:06.3f}".replace(".", ",") in blocks[1]


# ----------------------------------------------------------------------------- runs on an engine

RUN_SCRIPT = """\
Title: Run
Cast:
    ANNA: a girl in a green coat

INT. KITCHEN - NIGHT

Anna pours tea.

ANNA
Is he coming? He said he would be here soon.

EXT. GARDEN - DAY

Rain on the roses.
"""


@pytest.fixture(scope="module")
def engine(ray_local, tmp_path_factory):
    from videogen import Engine

    cache = tmp_path_factory.mktemp("cache")
    with Engine(workers=2, cache_dir=cache) as e:
        yield e


def shared_folder_state(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if CACHE not in p.parts)


def test_a_full_run_writes_the_folder(engine, tmp_path):
    script = load_script(write(tmp_path, "run.fountain", RUN_SCRIPT))
    shots, requests = plan_shots(script, dict(SMALL))
    assert [s.frames for s in shots] == [32, 16]  # 10 words at 2.5 words/s: 4 s; no dialogue: the 2 s minimum
    boards_seen = []
    out = tmp_path / "board"
    result = make_storyboard(script, shots, requests, out, engine, on_board=lambda shot, image: boards_seen.append(shot.id))
    assert sorted(boards_seen) == ["1A", "2A"]
    assert result.made == ["1A", "2A"] and result.actor_seconds > 0  # the first run: nothing cached yet
    assert shared_folder_state(out) == [
        "animatic.json", "animatic.mp4", "animatic.srt", "boards", "boards.png", "boards/1A.png", "boards/2A.png",
        "shots", "shots.csv", "shots.yaml", "shots/1A.json", "shots/1A.mp4", "shots/2A.json", "shots/2A.mp4",
        "storyboard.html",
    ]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left beside it
    rows = list(csv.DictReader(open(out / "shots.csv")))
    assert [r["shot"] for r in rows] == ["1A", "2A"]
    assert rows[0]["dialogue"] == "ANNA: Is he coming? He said he would be here soon."
    assert [float(r["duration"]) for r in rows] == [4.0, 2.0] and rows[0]["heading"] == "INT. KITCHEN - NIGHT"
    for shot in shots:
        frames, info = read_mp4(out / "shots" / f"{shot.id}.mp4")
        assert frames.shape == (shot.frames, 32, 32, 3) and info["fps"] == 8
        assert np.array_equal(np.asarray(Image.open(out / "boards" / f"{shot.id}.png")), result.boards[shot.id])
        assert result.boards[shot.id].shape == (32, 32, 3)
    # The animatic lasts as long as the shot list, is blown up for legibility, and carries the caption.
    animatic, info = read_mp4(out / "animatic.mp4")
    k = scale_for(32)
    assert animatic.shape == (sum(s.frames for s in shots), 32 * k, 32 * k, 3) and info["fps"] == 8
    clip1 = read_mp4(out / "shots" / "1A.mp4")[0].repeat(k, 1).repeat(k, 2).astype(int)
    clip2 = read_mp4(out / "shots" / "2A.mp4")[0].repeat(k, 1).repeat(k, 2).astype(int)
    band = slice(32 * k * 3 // 4, None)
    with_caption = np.abs(animatic[:32, band].astype(int) - clip1[:, band]).mean()
    without = np.abs(animatic[32:, band].astype(int) - clip2[:, band]).mean()
    assert with_caption > 20 and without < 6, (with_caption, without)
    assert "00:00:00,000 --> 00:00:04,000\nANNA: Is he coming?" in (out / "animatic.srt").read_text()
    html = (out / "storyboard.html").read_text()
    for ref in re.findall(r'(?:src|href|poster)="?([^" >]+)', html):
        assert (out / ref).exists(), ref
    assert "Anna pours tea." in html and 'src="shots/1A.mp4"' in html


def test_an_edited_shot_list_redoes_only_the_edited_shot(engine, tmp_path):
    script = load_script(write(tmp_path, "run.fountain", RUN_SCRIPT))
    shots, requests = plan_shots(script, dict(SMALL))
    out = tmp_path / "board"
    make_storyboard(script, shots, requests, out, engine)
    again = make_storyboard(script, shots, requests, out, engine)
    assert again.made == [] and all(n > 0 for n in again.cached_tasks.values())

    listing = yaml.safe_load((out / "shots.yaml").read_text())
    listing["scenes"][1]["shots"][0]["prompt"] = "Snow on the roses."
    edited_path = tmp_path / "edited.yaml"
    edited_path.write_text(yaml.safe_dump(listing))
    edited = load_script(edited_path)
    shots2, requests2 = plan_shots(edited, dict(SMALL))
    assert [r for r in requests2 if r["prompt"] != "Snow on the roses."] == requests[:1]
    result = make_storyboard(edited, shots2, requests2, out, engine)
    assert result.made == ["2A"] and result.cached_tasks["2A"] == 0
    # x264's threads make re-encodings differ by a level here and there, so the clips are checked by what made them.
    assert json.loads((out / "shots" / "1A.json").read_text())["prompt"] == shots[0].prompt
    assert json.loads((out / "shots" / "2A.json").read_text())["prompt"] == "Snow on the roses."
    assert list(csv.DictReader(open(out / "shots.csv")))[1]["prompt"] == "Snow on the roses."


def test_boards_only_makes_boards_and_a_held_animatic(engine, tmp_path):
    script = load_script(write(tmp_path, "run.fountain", RUN_SCRIPT))
    shots, requests = plan_shots(script, dict(SMALL))
    out = tmp_path / "boards"
    result = make_storyboard(script, shots, requests, out, engine, boards_only=True)
    assert set(result.boards) == {"1A", "2A"} and result.clips_seconds <= result.seconds
    assert not (out / "shots").exists() and (out / "boards.png").exists()
    animatic, _ = read_mp4(out / "animatic.mp4")
    assert len(animatic) == sum(s.frames for s in shots)
    # Each board is held still for its shot (up to the codec), captions included.
    assert np.abs(animatic[33].astype(int) - animatic[46].astype(int)).mean() < 3
    assert "<video controls preload" not in (out / "storyboard.html").read_text()


def test_a_failed_run_leaves_no_folder(engine, tmp_path):
    script = load_script(write(tmp_path, "run.fountain", RUN_SCRIPT))
    shots, requests = plan_shots(script, dict(SMALL))
    requests[1] = dict(requests[1], steps=0)  # the engine refuses the second shot after the first is queued
    with pytest.raises(RequestError, match="steps=0"):
        make_storyboard(script, shots, requests, tmp_path / "board", engine)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.fountain"]


def test_cli_bad_script_is_one_line_exit_2_and_writes_nothing(tmp_path):
    script = write(tmp_path, "bad.fountain", "INT. ROOM - DAY\n\nA [[never closed\n")
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    r = subprocess.run([sys.executable, "-m", "videogen.cli", "storyboard", str(script), "-o", str(tmp_path / "out")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"videogen: error: {script}:3: note '[[' is never closed with ']]'"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.fountain"]


def test_cli_makes_boards_of_the_example(tmp_path):
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    out = tmp_path / "harbour"
    r = subprocess.run([sys.executable, "-m", "videogen.cli", "storyboard", str(EXAMPLES / "harbour.fountain"), "-o", str(out),
                        "--boards-only", "--width", "32", "--height", "32", "--steps", "2", "--address", "local", "--json"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["shots"] == 5 and summary["made"] == ["1A", "1B", "2A", "3A", "4A"] and summary["from_cache"] == []
    assert summary["animatic_seconds"] == (16 + 19 + 26 + 16 + 16) / 8
    assert (out / "boards.png").exists() and (out / CACHE).is_dir() and (out / "storyboard.html").exists()


def test_a_shot_the_prompt_policy_blocks_is_refused_with_its_category(tmp_path):
    script = load_script(write(tmp_path, "gore.fountain", "INT. CELLAR - NIGHT\n\nThe floor is covered in gore.\n"))
    with pytest.raises(RequestError, match=r"blocked by the prompt policy \(category: graphic_violence\) \(shot 1A\)"):
        plan_shots(script, dict(SMALL))
    near_miss = load_script(write(tmp_path, "gorgeous.fountain", "INT. CELLAR - NIGHT\n\nA gorgeous wine rack.\n"))
    assert len(plan_shots(near_miss, dict(SMALL))[0]) == 1
