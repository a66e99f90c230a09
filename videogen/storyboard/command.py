"""``videogen storyboard SCRIPT -o DIR``: the command line over `build.make_storyboard`."""

from __future__ import annotations

import argparse
import json
import sys


def add_command(sub) -> None:
    """Register ``storyboard`` on the ``videogen`` command's subparsers."""
    from ..cli import add_cluster_flags, add_engine_flags

    p = sub.add_parser(
        "storyboard",
        help="a screenplay or shot list in; shot list, boards, clips and an animatic out",
        description="Turn a Fountain screenplay or a YAML shot list into a storyboard folder: shots.csv, "
                    "shots.yaml, boards.png, one MP4 per shot, animatic.mp4 (+ .srt) and storyboard.html.",
        epilog="example: videogen storyboard examples/storyboard/harbour.fountain -o harbour --boards-only",
    )
    p.add_argument("script", help="a .fountain screenplay or a .yaml shot list")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="the storyboard folder (new, empty, or an earlier storyboard)")
    p.add_argument("--style", metavar="TEXT", help="prefixed to every prompt (default: the script's Style)")
    p.add_argument("--boards-only", action="store_true", help="keyframes only: boards, sheet and a held-boards animatic, in seconds")
    t = p.add_argument_group("shot lengths")
    t.add_argument("--words-per-second", metavar="W", type=float, help="speaking pace that turns dialogue into shot length (default 2.5)")
    t.add_argument("--min-shot", metavar="S", type=float, dest="min_seconds", help="shortest shot in seconds (default 2)")
    t.add_argument("--max-shot", metavar="S", type=float, dest="max_seconds", help="longest shot in seconds (default 8)")
    t.add_argument("--max-action-words", metavar="N", type=int, help="longer action paragraphs are split into several shots (default 30)")
    add_engine_flags(p)
    add_cluster_flags(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of progress lines")
    p.set_defaults(func=cmd_storyboard, prompt=None)


def cmd_storyboard(args: argparse.Namespace) -> int:
    from ..cli import engine_kwargs, request_from_args
    from .build import CACHE, check_output_dir, load_script, make_storyboard, plan_shots

    # Everything is checked before Ray starts, so bad input fails in a second and writes nothing.
    timing = {k: getattr(args, k) for k in ("words_per_second", "min_seconds", "max_seconds", "max_action_words")}
    script = load_script(args.script, timing)
    request = {k: v for k, v in request_from_args(args).items() if k != "prompt"}
    shots, requests = plan_shots(script, request, args.style)
    out = check_output_dir(args.output)

    from ..driver import Engine

    def on_board(shot, image):
        if not args.json:
            print(f"board {shot.id} ready", file=sys.stderr, flush=True)

    # The cache lives in the folder unless --cache puts it elsewhere, so a re-run redoes only edited shots.
    with Engine(**(engine_kwargs(args) | {"cache_dir": args.cache or out / CACHE})) as engine:
        result = make_storyboard(script, shots, requests, out, engine, args.boards_only, on_board)
    seconds = sum(s.frames for s in shots) / shots[0].fps
    summary = dict(
        folder=str(result.folder), shots=len(shots), animatic_seconds=seconds, boards_only=args.boards_only,
        made=result.made, from_cache=[s.id for s in shots if s.id not in result.made], seconds=round(result.seconds, 3),
        clips_seconds=round(result.clips_seconds, 3), actor_seconds=round(result.actor_seconds, 3), workers=args.workers,
    )
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"wrote {result.folder}: {len(shots)} shots, {seconds:g} s animatic; "
              f"{len(result.made)} made, {len(shots) - len(result.made)} from cache; open {result.folder / 'storyboard.html'}")
    return 0
