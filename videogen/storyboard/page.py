"""``storyboard.html``: boards, prompts and players on one page that works offline from its folder."""

from __future__ import annotations

from html import escape

from .shots import Shot

CSS = """
body { font: 15px/1.4 system-ui, sans-serif; background: #161616; color: #eee; margin: 24px; }
a { color: #9cf; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 18px; }
.shot { background: #222; padding: 10px; border-radius: 6px; }
.shot img, .shot video, .animatic video { width: 100%; image-rendering: pixelated; background: #000; }
.animatic video { max-width: 720px; }
.id { font-weight: bold; font-size: 18px; }
.heading { color: #aaa; font-size: 13px; }
.prompt { font-family: ui-monospace, monospace; font-size: 12px; color: #cfc; }
.dialogue { font-style: italic; }
.meta, .transition { color: #999; font-size: 12px; }
"""


def storyboard_html(title: str, shots: list[Shot], clips: bool) -> str:
    """The page, with paths relative to the storyboard folder.

    Args:
        title: the script's title (or the folder's name).
        shots: the shot list, in order.
        clips: whether ``shots/<id>.mp4`` exist (False for a boards-only run: boards, no players).
    """
    cards = []
    for shot in shots:
        board = f"boards/{escape(shot.id)}.png"
        media = (
            f'<video controls preload="none" poster="{board}" src="shots/{escape(shot.id)}.mp4"></video>'
            if clips else f'<img src="{board}" alt="board {escape(shot.id)}">'
        )
        dialogue = "".join(f"<div class=dialogue>{escape(who)}: {escape(text)}</div>" for who, text in shot.dialogue)
        transition = f"<div class=transition>{escape(shot.transition)}</div>" if shot.transition else ""
        cards.append(
            f"<div class=shot id=shot-{escape(shot.id)}>{media}"
            f"<div class=id>{escape(shot.id)}</div><div class=heading>{escape(shot.heading)}</div>"
            f"<div>{escape(shot.description)}</div>{dialogue}"
            f"<div class=prompt>{escape(shot.prompt)}</div>"
            f"<div class=meta>{shot.duration:g} s, {shot.frames} frames, seed {shot.seed}</div>{transition}</div>"
        )
    total = sum(s.frames for s in shots) / shots[0].fps
    return (
        f"<!doctype html>\n<html><head><meta charset=utf-8><title>{escape(title)}</title><style>{CSS}</style></head><body>\n"
        f"<h1>{escape(title)}</h1>\n"
        f"<p>{len(shots)} shots, {total:g} s. <a href=boards.png>boards.png</a> · <a href=shots.csv>shots.csv</a> · "
        f"<a href=shots.yaml>shots.yaml</a> (edit and run again) · <a href=animatic.srt>animatic.srt</a></p>\n"
        f'<div class=animatic><video controls src="animatic.mp4" poster="boards/{escape(shots[0].id)}.png"></video></div>\n'
        f"<div class=grid>\n" + "\n".join(cards) + "\n</div>\n</body></html>\n"
    )
