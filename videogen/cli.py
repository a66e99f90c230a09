"""The ``videogen`` command: a thin layer over `videogen.Engine`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import RequestError

EXIT_BAD_INPUT = 2


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors, like every other bad-input error of videogen."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_engine_flags(p: argparse.ArgumentParser) -> None:
    """The clip request's fields as flags (shared by every command that makes clips)."""
    from .presets import DEFAULT_MODEL

    g = p.add_argument_group("clip")
    g.add_argument("--model", metavar="NAME_OR_PATH", default=None,
                   help=f"model preset name or diffusers model folder (default: $VIDEOGEN_MODEL, else {DEFAULT_MODEL}, the built-in model)")
    g.add_argument("--quality", metavar="NAME", default=None, help="quality preset from configs/quality/: draft, standard, high, miniature (default: the model's)")
    length = g.add_mutually_exclusive_group()
    length.add_argument("--frames", metavar="N", type=int, help="clip length in pixel frames")
    length.add_argument("--seconds", metavar="S", type=float, help="clip length in seconds (frames = seconds * fps)")
    g.add_argument("--fps", metavar="F", type=int, help="frames per second")
    g.add_argument("--width", metavar="W", type=int, help="width in pixels (a multiple of the model's size step)")
    g.add_argument("--height", metavar="H", type=int, help="height in pixels")
    g.add_argument("--seed", metavar="S", type=int, help="random seed (default 0); same seed, same frames")
    g.add_argument("--steps", metavar="K", type=int, help="denoising steps")
    g.add_argument("--guidance", metavar="G", type=float, help="classifier-free guidance scale (1 turns it off)")
    g.add_argument("--negative", metavar="TEXT", help="negative prompt")
    g.add_argument("--lora", metavar="PATH", help="a LoRA adapter (diffusers .safetensors file or folder) for a style")
    g.add_argument("--lora-scale", metavar="X", type=float, help="strength of the LoRA adapter, 0 to 2 (default 1)")
    w = p.add_argument_group("windows")
    w.add_argument("--window", metavar="N", type=int, help="pixel frames per temporal window (4k+1 for Wan)")
    w.add_argument("--overlap", metavar="N", type=int, help="pixel frames neighbouring windows share (a multiple of 4 for Wan)")
    w.add_argument("--keyframe-every", metavar="N", type=int, help="pixel frames between keyframes (0: no keyframes)")
    w.add_argument("--keyframe-release", metavar="SIGMA", type=float,
                   help="noise level below which each window draws its keyframes again, joined to its own frames "
                        "(0: keyframes kept exactly; default: the quality preset's)")
    w.add_argument("--blend", choices=["linear", "cosine", "pyramid", "flat"], help="how overlaps are blended (default cosine)")


def add_cluster_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("cluster")
    g.add_argument("--workers", metavar="N", type=int, default=1, help="denoiser actors (the output does not depend on it; default 1)")
    g.add_argument("--threads", metavar="N", type=int, default=None,
                   help="torch CPU threads per actor, each reserving as many Ray CPUs (default 1). On a CPU the "
                        "frames depend on it, as they do not on --workers")
    g.add_argument("--address", metavar="RAY_ADDRESS", default=None, help="Ray cluster to join (default $RAY_ADDRESS, else a local Ray)")
    g.add_argument("--gpu-fraction", metavar="X", type=float, default=1.0, help="share of a GPU per actor when the cluster has GPUs")
    g.add_argument("--decode-on", choices=["denoisers", "cpu"], default="denoisers",
                   help="blend and decode on the denoiser actors, or on a VAE-only CPU actor (default denoisers)")
    g.add_argument("--encode-on", choices=["driver", "cluster"], default="driver",
                   help="encode MP4s in this process, or in a one-CPU task on any node (the output must be reachable there)")
    g.add_argument("--cache", metavar="DIR", default=None,
                   help="cache task results here; a re-run reads back what did not change (a shared folder on a cluster)")


def engine_kwargs(args: argparse.Namespace) -> dict:
    """`Engine` arguments from the cluster flags."""
    for name in ("workers", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise RequestError(name, value, "must be at least 1")
    if not 0 < args.gpu_fraction <= 1:
        raise RequestError("gpu_fraction", args.gpu_fraction, "must be in (0, 1]")
    return dict(workers=args.workers, address=args.address, gpu_fraction=args.gpu_fraction,
                cpus_per_worker=float(args.threads or 1),  # an actor's torch threads follow its CPUs
                decode_on=args.decode_on, encode_on=args.encode_on, cache_dir=args.cache)


REQUEST_FIELDS = (
    "model", "quality", "frames", "seconds", "fps", "width", "height", "seed", "steps",
    "guidance", "negative", "window", "overlap", "keyframe_every", "keyframe_release", "blend", "lora", "lora_scale",
)


def request_from_args(args: argparse.Namespace) -> dict:
    request = {"prompt": args.prompt}
    request.update({k: getattr(args, k) for k in REQUEST_FIELDS if getattr(args, k, None) is not None})
    return request


def cmd_generate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .encode import check_output_path, check_png_path
    from .policy import default_policy
    from .presets import default_model, resolve_model
    from .request import resolve

    request = request_from_args(args)
    # Check everything before starting Ray, so bad input fails in a second and leaves nothing.
    default_policy().check(request)
    resolve(request, resolve_model(request.get("model") or default_model()))
    check_output_path(args.output)
    if args.strip is not None:
        check_png_path("strip", args.strip)

    from .driver import Engine

    bar = None
    if not args.json and sys.stderr.isatty():
        bar = tqdm(total=1, unit="task", desc="starting", file=sys.stderr)

    def on_progress(p):
        if bar is not None:
            bar.total = p.total
            bar.set_description(p.stage)
            bar.n = p.done
            bar.refresh()

    with Engine(**engine_kwargs(args)) as engine:
        result = engine.generate(request, args.output, on_progress=on_progress)
        ray_start = engine.ray_start_seconds
    if bar is not None:
        bar.close()
    summary = result.summary()
    summary["ray_start_seconds"] = round(ray_start, 3)
    if args.strip is not None:
        from .contact import frame_strip
        from .encode import atomic_path, read_mp4

        frames, info = read_mp4(result.path)
        with atomic_path(args.strip, ".png") as tmp:
            frame_strip(frames, info["fps"], title=result.spec.prompt).save(tmp, format="PNG")
        summary["strip"] = str(args.strip)
    if args.json:
        print(json.dumps(summary))
    else:
        view = result.spec.view  # what write_mp4 enlarged the frames to
        shown = f" enlarged to {view[0]}x{view[1]} ({view[2]})" if view else ""
        print(f"wrote {result.path}: {summary['frames']} frames at {result.spec.fps} fps, "
              f"{result.spec.width}x{result.spec.height}{shown}; {summary['windows']} windows, {summary['keyframes']} keyframes")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run_bench

    return run_bench(args)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="videogen",
        description="Text-to-video on Ray: keyframes first, then every temporal window in parallel, blended and encoded to MP4.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)

    gen = sub.add_parser(
        "generate",
        help="make one clip",
        description="Make one clip from a prompt and write it as MP4 (with a .json sidecar beside it).",
        epilog='example: videogen generate "a red circle moving right" -o out.mp4 --seconds 4',
    )
    gen.add_argument("prompt", help="what the clip shows")
    gen.add_argument("-o", "--output", required=True, metavar="OUT.mp4", help="output .mp4 path")
    add_engine_flags(gen)
    add_cluster_flags(gen)
    gen.add_argument("--strip", metavar="STRIP.png", type=Path, help="also write 8 evenly spaced frames side by side as a PNG")
    gen.add_argument("--json", action="store_true", help="print one JSON object instead of a progress bar")
    gen.set_defaults(func=cmd_generate)

    bench = sub.add_parser(
        "bench",
        help="measure overhead, length scaling, parallelism, the compute floor, the job service and an ad batch",
        description="Time videogen against diffusers' WanPipeline side by side in one run and print ratios.",
    )
    bench.add_argument("--json", action="store_true", help="print the results as JSON")
    bench.add_argument("--quick", action="store_true", help="fewer repeats and shorter clips (a smoke run)")
    bench.add_argument("--model", default="bench-cpu", metavar="NAME", help="a built-in random-weight preset to time (default bench-cpu)")
    bench.add_argument("--sections", nargs="+", type=int, choices=range(1, 7), default=list(range(1, 7)), metavar="N",
                       help="sections to run (default all): 1 overhead, 2 length, 3 parallelism, 4 compute floor (needs 3), "
                            "5 job service, 6 ad batch")
    bench.set_defaults(func=cmd_bench)

    # Commands of the other workflows register themselves here, one line each.
    from .storyboard.command import add_command as add_storyboard; add_storyboard(sub)  # noqa: E702
    from .service.cli import add_command as add_service; add_service(sub)  # noqa: E702
    from .ads.command import add_command as add_batch; add_batch(sub)  # noqa: E702
    from .train_command import add_command as add_train; add_train(sub)  # noqa: E702
    from .evaluate import add_command as add_eval; add_eval(sub)  # noqa: E702
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except RequestError as e:
        print(f"videogen: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
