"""`clover train`: pretrain Clover on video-text data.

    clover train --data DIR --model clover-tiny --out runs/tiny --objective clover --max-steps 2000
    torchrun --standalone --nproc_per_node=2 -m training.cli_train --data DIR --out RUN ...   # DDP

`--config FILE` (JSON: {"model": {...overrides}, "train": {...}, "objective": {...}}) sets defaults that flags
override; the resolved configuration is written to RUN/run_config.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import fields
from pathlib import Path

from timm.utils import random_seed

from model import Clover, create_model
from model.host_memory import keep_freed_memory

from .data import FrameCache, TextCollator, VideoTextDataset, read_manifest, split_manifest
from .distributed import DistInfo, barrier, cleanup, init_distributed
from .masking import RandomTextMasker, SemanticTextMasker
from .negatives import NounSwapper, WordVectors
from .objective import PRESETS, CloverObjective, ObjectiveConfig, objective_config
from .trainer import TrainConfig, Trainer, resolve_device

log = logging.getLogger("clover.train")


def add_train_args(parser: argparse.ArgumentParser) -> None:
    """Trainer flags shared by `train` and `finetune` (defaults None: the config file or TrainConfig decides)."""
    g = parser.add_argument_group("trainer")
    g.add_argument("--batch-size", type=int)
    g.add_argument("--accumulation", type=int, help="micro-batches per optimizer step")
    g.add_argument("--max-steps", type=int)
    g.add_argument("--max-minutes", type=float, help="wall-clock budget; the run saves and stops when spent")
    g.add_argument("--lr", type=float)
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--warmup-steps", type=int)
    g.add_argument("--grad-clip", type=float)
    g.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"])
    g.add_argument("--grad-checkpointing", action="store_true", default=None)
    g.add_argument("--workers", type=int, help="DataLoader workers")
    g.add_argument("--seed", type=int)
    g.add_argument("--max-shift", type=int, help="move each training clip by a random offset of up to N pixels")
    g.add_argument("--curriculum-steps", type=int,
                   help="the first N steps draw only from the samples with the shortest captions (simple clips)")
    g.add_argument("--curriculum-fraction", type=float, help="the share of samples the curriculum draws from (0.3)")
    g.add_argument("--save-every", type=int, help="checkpoint every N steps (0: only the final one)")
    g.add_argument("--log-every", type=int)
    g.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    g.add_argument("--resume", help="a checkpoint directory of this run, or 'auto' for its latest")
    parser.add_argument("--no-cache", action="store_true", help="decode every clip every epoch (large corpora)")
    parser.add_argument("--cache-frames", type=int, default=16, help="frames per clip kept in the frame cache")
    parser.add_argument("--cache-dir", help="the frame cache's folder (default: RUN/cache); runs on the same data "
                        "can share one, which is rebuilt only when the manifest, frame count or size differ")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def train_config(args: argparse.Namespace, base: dict) -> TrainConfig:
    values = dict(base)
    for f in fields(TrainConfig):
        flag = getattr(args, f.name, None)
        if flag is not None:
            values[f.name] = flag
    values["out"] = args.out
    if "betas" in values:
        values["betas"] = tuple(values["betas"])
    return TrainConfig(**values)


CONFIG_DIR = Path(__file__).parent / "configs"


def load_config_file(path: str | None) -> dict:
    """A JSON run config by path, or by name from `training/configs/` (e.g. `tiny-synthworld`)."""
    if not path:
        return {}
    file = Path(path)
    if not file.is_file() and (CONFIG_DIR / f"{path}.json").is_file():
        file = CONFIG_DIR / f"{path}.json"
    data = json.loads(file.read_text())
    unknown = set(data) - {"model", "train", "objective"}
    if unknown:
        raise SystemExit(f"{path}: unknown sections {sorted(unknown)} (expected model, train, objective)")
    return data


def latest_checkpoint(out: Path) -> Path | None:
    found = sorted(out.glob("checkpoint-*"))
    return found[-1] if found else None


def build_dataset(data: str, split: str, model: Clover, args, train: bool, seed: int, cache_dir: Path,
                  info: DistInfo | None = None, max_shift: int = 0):
    info = info or DistInfo()
    samples = read_manifest(split_manifest(data, split))
    cache = None
    if not args.no_cache:
        size = model.config.image_size
        path = Path(args.cache_dir or cache_dir) / f"{split}-{size}px-{args.cache_frames}f.npy"

        def build() -> FrameCache:
            return FrameCache.build(samples, path, frames=args.cache_frames, size=size,
                                    workers=max(1, args.workers or 1) + 1)

        # Under torchrun rank 0 decodes; the others wait, then open the finished cache (no two writers).
        if info.is_main:
            cache = build()
        barrier(info)
        if not info.is_main:
            cache = build()
    dataset = VideoTextDataset(samples, model.config.num_frames, model.config.image_size, train=train,
                               cache=cache, seed=seed, max_shift=max_shift)
    if dataset.skipped:
        log.warning("%s: %d of %d videos skipped (decode failures)", split, dataset.skipped, len(samples))
    return dataset


def run_trainer(trainer: Trainer, args: argparse.Namespace, out: Path, info: DistInfo) -> list[dict]:
    """`--resume` (a checkpoint, or `auto` for the run's latest), then train; shared by train and finetune."""
    if args.resume:
        checkpoint = latest_checkpoint(out) if args.resume == "auto" else Path(args.resume)
        if checkpoint is not None:
            trainer.resume(checkpoint)
            log.info("resumed from %s at step %d", checkpoint, trainer.step)
    history = trainer.train(progress=not args.quiet)
    if info.is_main and history:
        log.info("done: step %d, last loss %.4f -> %s", trainer.step, history[-1]["loss"], out / "final")
    return history


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="clover train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="dataset directory with train.jsonl, or a manifest file")
    parser.add_argument("--model", default="clover-tiny", help="preset name or JSON config")
    parser.add_argument("--init", help="start from this checkpoint's weights instead of the preset's")
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument("--objective", default="clover", choices=sorted(PRESETS))
    parser.add_argument("--config", help="JSON file with model / train / objective sections")
    parser.add_argument("--split", default="train")
    add_train_args(parser)
    return parser.parse_args(argv)


def noun_swapper(objective: ObjectiveConfig) -> NounSwapper | None:
    if not objective.caption_negatives:
        return None
    temperature = objective.caption_negative_temperature
    return NounSwapper(vectors=WordVectors(), temperature=temperature) if temperature > 0 else NounSwapper()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    file_config = load_config_file(args.config)
    cfg = train_config(args, file_config.get("train", {}))
    info = init_distributed(str(resolve_device(cfg.device)))
    # The seed fixes new weights and dropout too, not only the data order (DDP broadcasts rank 0's weights).
    random_seed(cfg.seed, info.rank)
    model = Clover.from_pretrained(args.init) if args.init else create_model(args.model, **file_config.get("model", {}))
    objective = objective_config(args.objective, **file_config.get("objective", {}))
    masker_cls = SemanticTextMasker if objective.text_masking == "semantic" else RandomTextMasker
    masker = masker_cls(model.tokenizer, max_length=model.config.text.max_length, seed=cfg.seed)
    out = Path(args.out)
    dataset = build_dataset(args.data, args.split, model, args, train=True, seed=cfg.seed, cache_dir=out / "cache",
                            info=info, max_shift=cfg.max_shift)
    run_config = {"data": str(args.data), "model": model.config.to_dict(), "objective": objective.to_dict(),
                  "objective_name": args.objective, "train": cfg.to_dict(), "world_size": info.world_size}
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "run_config.json").write_text(json.dumps(run_config, indent=2) + "\n")
    trainer = Trainer(model, CloverObjective(objective, info), dataset,
                      TextCollator(model.tokenizer, model.config.text.max_length, masker,
                                   negatives=noun_swapper(objective)),
                      cfg, info, run_config)
    run_trainer(trainer, args, out, info)
    cleanup()
    return 0


if __name__ == "__main__":  # python -m / torchrun -m: the batch job `clover` would start
    keep_freed_memory()
    sys.exit(main())
