"""`clover synth`: render the synthetic world (MP4 clips + JSONL manifests + world.json).

Examples:
    clover synth --out data/synth --num-videos 5000 --seed 0
    clover synth --out data/tiny --num-videos 200 --size 32 --test-size 40 --holdout "purple triangle"
"""

from __future__ import annotations

import argparse
import json
import sys

from .world import WorldConfig, generate_world

_DEFAULTS = WorldConfig()


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults that mean something (not None / False) and keep the examples' line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.required:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clover synth",
        description="Render the synthetic video world of SYNTHWORLD.md:\n"
        "  DIR/videos/*.mp4 (H.264), DIR/{train,val,test,test_compositional}.jsonl, DIR/world.json.\n"
        "Deterministic for a seed; rerunning with the same arguments skips clips that already exist.",
        epilog="examples:\n"
        "  clover synth --out data/synth --num-videos 5000 --seed 0\n"
        "  clover synth --out data/tiny --num-videos 200 --size 32 --holdout 'purple triangle' "
        "--holdout 'yellow grows'",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--out", required=True, help="output directory DIR")
    parser.add_argument("--num-videos", type=int, required=True, help="clips over all splits")
    parser.add_argument("--seed", type=int, default=0, help="seed of scenes, captions and questions")
    parser.add_argument(
        "--workers", type=int, default=None, help="render processes (default: min(cpu count, 4))"
    )
    parser.add_argument("--size", type=int, default=_DEFAULTS.size, help="square frame side in pixels (even)")
    parser.add_argument("--frames", type=int, default=_DEFAULTS.frames, help="frames per clip")
    parser.add_argument("--fps", type=int, default=_DEFAULTS.fps, help="frame rate of the MP4 files")
    parser.add_argument(
        "--test-size",
        type=int,
        default=_DEFAULTS.test_size,
        help="test clips (unique captions, none seen in train); capped at 20%% of --num-videos",
    )
    parser.add_argument(
        "--val-size",
        type=int,
        default=_DEFAULTS.val_size,
        help="validation clips (unique captions); capped at 10%% of --num-videos",
    )
    parser.add_argument(
        "--compositional-size",
        type=int,
        default=_DEFAULTS.compositional_size,
        help="test_compositional clips (held-out combinations); capped at 10%% of --num-videos",
    )
    parser.add_argument(
        "--holdout",
        action="append",
        default=None,
        metavar="COMBO",
        help="attribute combination kept out of train/val/test, e.g. 'purple triangle' or "
        "'large circle grows' (repeatable; default: 'purple triangle'; 'none' for no holdout)",
    )
    parser.add_argument(
        "--captions",
        type=int,
        default=_DEFAULTS.captions_per_video,
        help="captions per clip (the first is the canonical full description)",
    )
    parser.add_argument(
        "--two-object-prob",
        type=float,
        default=_DEFAULTS.two_object_prob,
        help="probability that a clip shows two objects",
    )
    parser.add_argument(
        "--two-phase-prob",
        type=float,
        default=_DEFAULTS.two_phase_prob,
        help="probability that an object has two motion phases",
    )
    parser.add_argument(
        "--shape-variants",
        type=int,
        default=_DEFAULTS.shape_variants,
        help="also render each train scene with one object's shape changed to up to N other shapes (0-3), "
        "grouped with it by the manifest's 'group' field (train.group_key batches them together)",
    )
    parser.add_argument("--crf", type=int, default=_DEFAULTS.crf, help="H.264 constant rate factor")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a world with other settings already in --out"
    )
    parser.add_argument("--quiet", action="store_true", help="print only the final JSON summary")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    holdout = tuple(args.holdout) if args.holdout else _DEFAULTS.holdout
    if [h.lower() for h in holdout] == ["none"]:
        holdout = ()

    def log(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    try:
        summary = generate_world(
            args.out,
            args.num_videos,
            args.seed,
            workers=args.workers,
            overwrite=args.overwrite,
            log=log,
            size=args.size,
            frames=args.frames,
            fps=args.fps,
            test_size=args.test_size,
            val_size=args.val_size,
            compositional_size=args.compositional_size,
            holdout=holdout,
            captions_per_video=args.captions,
            two_object_prob=args.two_object_prob,
            two_phase_prob=args.two_phase_prob,
            crf=args.crf,
            shape_variants=args.shape_variants,
        )
    except (ValueError, FileExistsError, RuntimeError) as error:
        print(f"clover synth: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
