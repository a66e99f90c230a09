"""``videogen batch SPEC.yaml -o DIR``: the ad batch on the command line (also runs as a Ray Job)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def cmd_batch(args: argparse.Namespace) -> int:
    from ..errors import RequestError
    from .batch import dry_run, run_batch
    from .spec import ClipFields, load_spec

    for name in ("width", "height", "seed", "negative", "lora", "lora_scale"):
        if getattr(args, name) is not None:
            raise RequestError(name, getattr(args, name), "is set by the spec (pixels, seed, negatives, lora) and its formats")
    overrides = {k: getattr(args, k) for k in ClipFields.model_fields if getattr(args, k, None) is not None}
    # Everything is checked before Ray starts: bad input fails in a second and writes nothing.
    batch = load_spec(args.spec, overrides)
    out_dir = Path(args.output)
    if args.dry_run:
        print(dry_run(batch, out_dir))
        return 0
    if out_dir.exists() and not out_dir.is_dir():
        raise RequestError("output", str(out_dir), "exists and is not a folder")

    from ..cli import engine_kwargs
    from ..driver import Engine

    def on_event(kind: str, info: dict) -> None:
        if kind == "variant" and not args.json:
            print(f"{info['variant']}: kept seed {', '.join(map(str, info['kept']))}; "
                  f"{len(info['rows'])} MP4s", file=sys.stderr)

    with Engine(**(engine_kwargs(args) | {"cache_dir": args.cache or out_dir / ".cache"})) as engine:
        report = run_batch(batch, out_dir, engine, on_event=on_event)
    summary = report.summary()
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"wrote {len(report.rows)} MP4s, manifest.csv, manifest.json and contact_sheet.png to {out_dir}: "
              f"{report.clips} clips in {report.wall_seconds:.1f} s ({report.skipped} variants already done), "
              f"{report.actor_seconds:.1f} actor-seconds, utilisation {report.utilisation:.0%}, cost {report.cost:.4f}")
    return 0


def add_command(sub) -> None:
    """Register ``videogen batch`` on the CLI's subparsers."""
    from ..cli import add_cluster_flags, add_engine_flags

    p = sub.add_parser(
        "batch",
        help="ad variants in batch: one spec, many variants in every platform format",
        description="Generate every variant of an ad spec in every format, keep the best candidates, "
                    "draw the overlays, and write MP4s, manifest.csv/.json and a contact sheet.",
        epilog="example: videogen batch examples/ads/sneakers.yaml -o ads_out --workers 2",
    )
    p.add_argument("spec", help="the batch spec (YAML)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder (a re-run skips finished variants)")
    p.add_argument("--dry-run", action="store_true", help="print the matrix, the clip count and the estimated cost; generate nothing")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    add_engine_flags(p)  # clip flags replace the spec's clip settings
    add_cluster_flags(p)
    p.set_defaults(func=cmd_batch)
