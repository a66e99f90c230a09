"""The ``videogen train`` command: flags and checks; the training itself is `videogen.train`.

Kept apart so that building the CLI's parser does not import torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .errors import RequestError


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from .train import Trainer, TrainSettings

    if args.minutes is not None and args.minutes <= 0:
        raise RequestError("minutes", args.minutes, "must be positive")
    for name in ("steps", "vae_steps", "expert_steps", "batch", "checkpoint_every"):
        if getattr(args, name) < 1:
            raise RequestError(name.replace("_", "-"), getattr(args, name), "must be at least 1")
    if args.base is not None and args.resume:
        raise RequestError("base", args.base, "starts a run; --resume continues one (its base is in the checkpoint)")
    if args.base is not None and not (Path(args.base) / "model_index.json").is_file():
        raise RequestError("base", args.base, "is not a model folder (no model_index.json)")
    settings = TrainSettings(out=Path(args.out), vae_steps=args.vae_steps, steps=args.steps,
                             expert_steps=args.expert_steps, minutes=args.minutes, batch=args.batch,
                             checkpoint_every=args.checkpoint_every, seed=args.seed)
    trainer = Trainer(settings)
    if args.resume:
        if not trainer.checkpoint_path.exists():
            raise RequestError("resume", str(trainer.checkpoint_path), "no checkpoint to resume from")
        try:
            trainer.load()
        except ValueError as e:
            raise RequestError("resume", str(trainer.checkpoint_path), str(e)) from None
    elif trainer.checkpoint_path.exists():
        raise RequestError("out", args.out, "holds a checkpoint: pass --resume to continue it, or choose another folder")
    if args.base is not None:
        try:
            trainer.start_from(args.base)
        except ValueError as e:
            raise RequestError("base", args.base, str(e)) from None
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = trainer.run(progress=not args.quiet)
    print(f"model: {folder}  (vae steps {trainer.counts['vae']}, transformer steps {trainer.counts['dit']}, "
          f"expert steps {trainer.counts['expert']}, {sum(trainer.seconds.values()) / 60:.1f} min"
          + (f" on top of {trainer.based_on}" if trainer.based_on else "") + ")")
    return 0


def add_command(sub) -> None:
    """Register ``videogen train`` on the CLI's subparsers."""
    p = sub.add_parser("train", help="train the miniature model on the shapes world",
                       description="Train the built-in miniature model from scratch (its transformer, in pixel "
                                   "space, then its low-noise expert; the text encoder stays as initialised), "
                                   "with checkpoints, a loss log and resume.")
    p.add_argument("--out", default="miniature-run", help="run folder (checkpoint.pt, loss.csv, model/)")
    p.add_argument("--minutes", type=float, default=90.0,
                   help="wall-clock budget over all stages (the low-noise expert gets the last ninth)")
    p.add_argument("--steps", type=int, default=100_000, help="transformer steps (stops earlier at the time budget)")
    p.add_argument("--expert-steps", type=int, default=100_000,
                   help="low-noise expert steps (stops earlier at the time budget)")
    p.add_argument("--vae-steps", type=int, default=4000, help="VAE steps (a Wan VAE only; the pixel fold has none)")
    p.add_argument("--base", metavar="MODEL_FOLDER",
                   help="take this trained model's transformer and train only its low-noise expert, "
                        "for the whole budget")
    p.add_argument("--batch", type=int, default=8, help="clips per step")
    p.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)
