"""The training loop shared by pretraining and fine-tuning.

One process or many (torchrun; see `training.distributed`). AdamW from timm's optimizer factory (no weight decay
on norms, biases and embeddings' 1-D parameters), warm-up + cosine from timm's scheduler, gradient clipping and
accumulation, AMP on CUDA (bf16, or fp16 with a grad scaler), optional gradient checkpointing. Checkpoints are
`from_pretrained`-loadable directories plus `trainer_state.pt` (optimizer, scheduler, RNG; loaded with
`weights_only=True`), and `--resume` continues with the identical loss sequence.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from torch.utils.data import DataLoader, Dataset, Sampler

from model import Clover

from .batching import NeighbourBatchSampler, caption_neighbours, group_neighbours
from .distributed import DistInfo, all_reduce_mean

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.pt"


@dataclass
class TrainConfig:
    out: str = "runs/clover"
    batch_size: int = 64  # per rank, per micro-step
    accumulation: int = 1  # micro-steps per optimizer step
    max_steps: int = 1000  # optimizer steps
    max_minutes: float | None = None  # stop (and save) when the wall-clock budget is spent
    lr: float = 5e-5  # paper: 5e-5 at global batch 1024
    weight_decay: float = 0.005  # code: 0.005
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = 100  # paper: 4 of 40 epochs of linear warm-up
    min_lr_ratio: float = 1e-3  # cosine decays to lr * this
    grad_clip: float = 15.0  # code: 15
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16
    grad_checkpointing: bool = False
    workers: int = 1
    seed: int = 0
    log_every: int = 10
    save_every: int = 0  # steps; 0 = only at the end
    keep_checkpoints: int = 2
    device: str = "auto"
    lr_multipliers: dict[str, float] = field(default_factory=dict)  # module prefix -> lr factor
    freeze: list[str] = field(default_factory=list)  # parameter-name prefixes that get no gradient
    neighbour_groups: int = 0  # > 1: batches of this many caption neighbours at a time (training.batching)
    neighbour_pool: int = 8  # a group is drawn from its seed's this many nearest captions
    group_key: str = ""  # with neighbour_groups: group by this manifest field instead of caption similarity
    max_shift: int = 0  # pixels: each training clip moved by a random offset up to this (training.data)
    curriculum_steps: int = 0  # optimizer steps at the start drawn only from the simplest samples:
    curriculum_fraction: float = 0.3  # those with the shortest captions, this share of the dataset

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class EpochSampler(Sampler[int]):
    """A seeded permutation per epoch, sharded across ranks, able to start mid-epoch (exact resume).

    With `indices` it permutes that subset of the dataset instead of all of it (the curriculum's phase)."""

    def __init__(self, num_samples: int, batch_size: int, seed: int, info: DistInfo,
                 indices: list[int] | None = None):
        if indices is not None:
            num_samples = len(indices)
        self.num_samples, self.batch_size, self.seed, self.info = num_samples, batch_size, seed, info
        self.indices = torch.tensor(indices) if indices is not None else None
        per_rank = num_samples // info.world_size
        self.batches_per_epoch = per_rank // batch_size  # drop the ragged tail: equal batches on every rank
        if self.batches_per_epoch == 0:
            raise ValueError(f"{num_samples} samples cannot fill one batch of {batch_size} on {info.world_size} ranks")
        self.epoch, self.start_batch = 0, 0

    def set_position(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        mine = order[self.info.rank :: self.info.world_size][: self.batches_per_epoch * self.batch_size]
        if self.indices is not None:
            mine = self.indices[mine]
        return iter(mine[self.start_batch * self.batch_size :].tolist())

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size


def shortest_captioned(caption_lengths: list[float], fraction: float) -> list[int]:
    """The items whose captions are shortest, `fraction` of them (at least one), in item order.

    Short captions describe simple clips (one object, one action), whose questions and words are the clean
    labels a young video tower learns from fastest: an easy-first curriculum (Bengio et al. 2009; sentence
    length as the measure of difficulty, Spitkovsky et al. 2010)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"curriculum_fraction must be in (0, 1], not {fraction}")
    count = max(1, round(fraction * len(caption_lengths)))
    ranked = sorted(range(len(caption_lengths)), key=lambda i: (caption_lengths[i], i))
    return sorted(ranked[:count])


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW via timm: 1-D parameters (norms, biases) get no weight decay; optional per-module lr factors."""
    if not cfg.lr_multipliers:
        return create_optimizer_v2(model, opt="adamw", lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas)
    groups = []
    for prefix, factor in [*cfg.lr_multipliers.items(), ("", 1.0)]:
        claimed = {id(p) for g in groups for p in g["params"]}
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad and n.startswith(prefix)
                 and id(p) not in claimed]
        decay = [p for n, p in named if p.ndim > 1]
        no_decay = [p for n, p in named if p.ndim <= 1]
        groups += [{"params": decay, "weight_decay": cfg.weight_decay, "lr": cfg.lr * factor},
                   {"params": no_decay, "weight_decay": 0.0, "lr": cfg.lr * factor}]
    groups = [g for g in groups if g["params"]]
    return create_optimizer_v2(groups, opt="adamw", lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> CosineLRScheduler:
    """Linear warm-up then cosine to lr * min_lr_ratio, stepped per optimizer update (timm)."""
    return CosineLRScheduler(
        optimizer,
        t_initial=max(1, cfg.max_steps - cfg.warmup_steps),
        lr_min=cfg.lr * cfg.min_lr_ratio,
        warmup_t=cfg.warmup_steps,
        warmup_lr_init=cfg.lr * 1e-3,
        warmup_prefix=True,
        t_in_epochs=False,
    )


def enable_grad_checkpointing(model: Clover) -> None:
    """Trade compute for memory: recompute BERT layers and Swin stages in the backward pass."""
    from torch.utils.checkpoint import checkpoint

    model.text_encoder.gradient_checkpointing_enable()
    for stage in model.video_encoder.swin.features:
        forward = stage.forward
        stage.forward = lambda x, _f=forward: checkpoint(_f, x, use_reentrant=False)


def freeze_parameters(model: torch.nn.Module, prefixes: list[str]) -> None:
    """No gradient (and no optimizer state) for parameters whose names start with one of `prefixes`."""
    for prefix in prefixes:
        matched = [p for n, p in model.named_parameters() if n.startswith(prefix)]
        if not matched:
            raise ValueError(f"freeze: no parameter name starts with {prefix!r}")
        for parameter in matched:
            parameter.requires_grad_(False)


LossFn = Callable[[torch.nn.Module, dict, torch.Generator], tuple[torch.Tensor, dict[str, torch.Tensor]]]


class TrainingStep(torch.nn.Module):
    """Model + loss in one module, so DDP sees the whole step as its forward and synchronises gradients."""

    def __init__(self, model: Clover, loss_fn: LossFn):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: dict, generator: torch.Generator):
        return self.loss_fn(self.model, batch, generator)


class Trainer:
    """Runs `loss_fn(model, batch, generator)` over a dataset for `max_steps` optimizer steps."""

    def __init__(
        self,
        model: Clover,
        loss_fn: LossFn,
        dataset: Dataset,
        collate: Callable,
        cfg: TrainConfig,
        info: DistInfo | None = None,
        run_config: dict[str, Any] | None = None,
    ):
        self.cfg, self.info = cfg, info or DistInfo()
        self.device = resolve_device(cfg.device)
        self.model = model.to(self.device)
        self.loss_fn = loss_fn
        self.out = Path(cfg.out)
        self.run_config = run_config or {}
        if cfg.grad_checkpointing:
            enable_grad_checkpointing(model)
        freeze_parameters(model, cfg.freeze)
        self.step_module = self._wrap(TrainingStep(model, loss_fn))
        self.optimizer = build_optimizer(model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg)
        self.sampler = self._sampler(dataset)
        self.loader = self._loader(dataset, self.sampler, collate)
        self.dataset = dataset
        self.easy_sampler, self.easy_loader = None, None
        if cfg.curriculum_steps:
            if not hasattr(dataset, "item_caption_lengths"):
                raise ValueError(f"curriculum_steps needs a captioned dataset, not {type(dataset).__name__}")
            easy = shortest_captioned(dataset.item_caption_lengths(), cfg.curriculum_fraction)
            self.easy_sampler = EpochSampler(len(dataset), cfg.batch_size, cfg.seed, self.info, indices=easy)
            self.easy_loader = self._loader(dataset, self.easy_sampler, collate)
            log.info("curriculum: the first %d steps draw from the %d shortest-captioned of %d samples",
                     cfg.curriculum_steps, len(easy), len(dataset))
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.step = 0
        self.history: list[dict] = []

    # -- set-up ------------------------------------------------------------------------------------------

    def _sampler(self, dataset: Dataset) -> Sampler[int]:
        cfg = self.cfg
        if cfg.neighbour_groups <= 1:
            return EpochSampler(len(dataset), cfg.batch_size, cfg.seed, self.info)
        if not hasattr(dataset, "item_captions"):
            raise ValueError(f"neighbour_groups needs a captioned dataset, not {type(dataset).__name__}")
        if cfg.group_key and not any(key is not None for key in dataset.item_meta(cfg.group_key)):
            raise ValueError(f"group_key {cfg.group_key!r}: no sample of the training data has that field")
        # The neighbours themselves come at the first batch (`_batches`) or from a checkpoint (`resume`).
        return NeighbourBatchSampler(None, cfg.batch_size, cfg.neighbour_groups, cfg.seed, self.info,
                                     num_samples=len(dataset))

    def _loader(self, dataset: Dataset, sampler: Sampler[int], collate: Callable) -> DataLoader:
        return DataLoader(
            dataset, batch_size=self.cfg.batch_size, sampler=sampler, collate_fn=collate,
            num_workers=self.cfg.workers, persistent_workers=False, drop_last=True,
            pin_memory=self.device.type == "cuda",
        )

    def _find_neighbours(self) -> None:
        t0 = time.perf_counter()
        cfg = self.cfg
        if cfg.group_key:
            neighbours = group_neighbours(self.dataset.item_meta(cfg.group_key), cfg.neighbour_pool)
        else:
            neighbours = caption_neighbours(self.model, self.dataset.item_captions(), cfg.neighbour_pool)
        log.info("%s neighbours of %d samples in %.1f s: batches of %d-sample groups",
                 f"'{cfg.group_key}'" if cfg.group_key else "caption", len(neighbours),
                 time.perf_counter() - t0, cfg.neighbour_groups)
        self.sampler.neighbours = neighbours

    def _wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if not self.info.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        # Not every head runs every step (e.g. QA heads during pretraining): let DDP skip unused parameters.
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)

    def _amp_dtype(self) -> torch.dtype | None:
        precision = self.cfg.precision
        if precision == "auto":
            precision = "bf16" if self.device.type == "cuda" else "fp32"
        return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    # -- state ---------------------------------------------------------------------------------------------

    def save(self, final: bool = False) -> Path | None:
        """Checkpoint dir (loadable by `Clover.from_pretrained`) + trainer state; rank 0 writes."""
        if not self.info.is_main:
            return None
        name = "final" if final else f"checkpoint-{self.step:07d}"
        target = self.out / name
        tmp = self.out / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        self.model.save_pretrained(tmp, training_args={**self.run_config, "train": self.cfg.to_dict()},
                                   trainer_progress={"step": self.step})
        torch.save(self._state(), tmp / STATE_FILE)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        self._prune_checkpoints()
        return target

    def _prune_checkpoints(self) -> None:
        checkpoints = sorted(self.out.glob("checkpoint-*"))
        for old in checkpoints[: max(0, len(checkpoints) - self.cfg.keep_checkpoints)]:
            shutil.rmtree(old, ignore_errors=True)

    def _state(self) -> dict[str, Any]:
        neighbours = getattr(self.sampler, "neighbours", None)
        return {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python_rng": list(random.getstate()[1]),
            "numpy_rng": np.random.get_state()[1].tolist(),
            # the batches' composition, as first computed: a resumed run regroups nothing
            "neighbours": None if neighbours is None else torch.from_numpy(neighbours),
            # objectives that learn as they go (QAObjective's answered questions)
            "objective": self.loss_fn.training_state() if hasattr(self.loss_fn, "training_state") else None,
        }

    def resume(self, checkpoint_dir: str | Path) -> None:
        """Load model weights and trainer state so the next step is the one that would have followed."""
        from safetensors.torch import load_file

        from model.checkpoint import WEIGHTS_FILE, load_state_strict

        checkpoint_dir = Path(checkpoint_dir)
        load_state_strict(self.model, load_file(str(checkpoint_dir / WEIGHTS_FILE), device=str(self.device)),
                          str(checkpoint_dir))
        state = torch.load(checkpoint_dir / STATE_FILE, map_location="cpu", weights_only=True)
        self.step = int(state["step"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        random.setstate((3, tuple(state["python_rng"]), None))
        np.random.set_state(("MT19937", np.array(state["numpy_rng"], dtype=np.uint32), 624, 0, 0.0))
        if state.get("neighbours") is not None and hasattr(self.sampler, "neighbours"):
            self.sampler.neighbours = state["neighbours"].numpy()
        if state.get("objective") is not None and hasattr(self.loss_fn, "load_training_state"):
            self.loss_fn.load_training_state(state["objective"])

    # -- loop ------------------------------------------------------------------------------------------------

    def _batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """Batches from the current position on, epoch after epoch (the position follows from `step`): first
        the curriculum's, from the simple samples alone, then those of the whole dataset from its epoch 0."""
        micro = self.step * self.cfg.accumulation
        easy_micro = self.cfg.curriculum_steps * self.cfg.accumulation
        if micro < easy_micro:
            # Negative dataset epochs: other random frames than the main epochs' draws.
            curriculum = self._epochs(self.easy_sampler, self.easy_loader, micro, lambda epoch: -1 - epoch)
            yield from itertools.islice(curriculum, easy_micro - micro)
            micro = easy_micro
        if getattr(self.sampler, "neighbours", False) is None:
            self._find_neighbours()
        yield from self._epochs(self.sampler, self.loader, micro - easy_micro, lambda epoch: epoch)

    def _epochs(self, sampler: Sampler[int], loader: DataLoader, micro: int,
                dataset_epoch: Callable[[int], int]) -> Iterator[dict[str, torch.Tensor]]:
        """`loader`'s batches from micro-batch `micro` on, epoch after epoch of `sampler`."""
        epoch, start = divmod(micro, sampler.batches_per_epoch)
        while True:
            sampler.set_position(epoch, start)
            if hasattr(self.dataset, "epoch"):
                self.dataset.epoch = dataset_epoch(epoch)
            yield from loader
            epoch, start = epoch + 1, 0

    def _to_device(self, batch: dict) -> dict:
        """Every tensor of the batch on the training device, nested batches (a re-ranking step's "qa") too."""
        def move(value):
            if torch.is_tensor(value):
                return value.to(self.device, non_blocking=True)
            return self._to_device(value) if isinstance(value, dict) else value

        return {k: move(v) for k, v in batch.items()}

    def train(self, progress: bool = True) -> list[dict]:
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        metrics_file = (self.out / "metrics.jsonl").open("a") if self.info.is_main else None
        tb = self._tensorboard()
        bar = self._progress_bar(progress)
        started = time.perf_counter()
        self.model.train()
        batches = self._batches()
        seen_since_log, tick = 0, time.perf_counter()
        while self.step < cfg.max_steps:
            self.optimizer.zero_grad(set_to_none=True)
            if hasattr(self.loss_fn, "set_step"):  # objectives whose terms switch on later in the schedule
                self.loss_fn.set_step(self.step)
            terms_sum: dict[str, float] = {}
            for _ in range(cfg.accumulation):
                batch = self._to_device(next(batches))
                # Same on every rank: random draws are made for the global batch and sliced per rank.
                generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.step)
                with self._autocast():
                    loss, terms = self.step_module(batch, generator)
                self.scaler.scale(loss / cfg.accumulation).backward()
                for name, value in {"loss": loss.detach(), **terms}.items():
                    terms_sum[name] = terms_sum.get(name, 0.0) + float(value) / cfg.accumulation
                seen_since_log += _batch_size(batch) * self.info.world_size
            if self.info.enabled:  # log the mean over ranks: local terms (ranking, MLM) differ per rank
                terms_sum = reduce_terms(terms_sum, self.info, self.device)
            self.scaler.unscale_(self.optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.step += 1
            self.scheduler.step_update(self.step)
            if not math.isfinite(terms_sum["loss"]):
                raise FloatingPointError(f"loss is {terms_sum['loss']} at step {self.step}")
            record = {"step": self.step, **terms_sum, "grad_norm": float(grad_norm),
                      "lr": self.optimizer.param_groups[0]["lr"]}
            self.history.append(record)
            if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                now = time.perf_counter()
                record["samples_per_s"] = seen_since_log / max(now - tick, 1e-9)
                record["elapsed_s"] = now - started
                seen_since_log, tick = 0, now
                if metrics_file:
                    metrics_file.write(json.dumps(record) + "\n")
                    metrics_file.flush()
                if tb:
                    for name, value in record.items():
                        tb.add_scalar(f"train/{name}", value, self.step)
            if bar:
                bar.update(1)
                bar.set_postfix(loss=f"{terms_sum['loss']:.3f}")
            if cfg.save_every and self.step % cfg.save_every == 0 and self.step < cfg.max_steps:
                self.save()
            if cfg.max_minutes and time.perf_counter() - started > cfg.max_minutes * 60:
                log.info("time budget of %.1f min reached at step %d", cfg.max_minutes, self.step)
                break
        if bar:
            bar.close()
        if metrics_file:
            metrics_file.close()
        self.save(final=True)
        return self.history

    def _progress_bar(self, enabled: bool):
        if not (enabled and self.info.is_main):
            return None
        from tqdm import tqdm

        return tqdm(total=self.cfg.max_steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True)

    def _tensorboard(self):
        if not self.info.is_main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
        return SummaryWriter(str(self.out / "tensorboard"))


def _batch_size(batch: dict) -> int:
    """Samples in a batch: its frames, else its first tensor (QA batches carry no frames)."""
    first = batch.get("frames", next((v for v in batch.values() if torch.is_tensor(v)), None))
    return 0 if first is None else int(first.shape[0])


def reduce_terms(terms: dict[str, float], info: DistInfo, device: torch.device) -> dict[str, float]:
    """Every rank's logged values averaged (a collective: every rank calls it each step, in the same order)."""
    names = sorted(terms)
    values = all_reduce_mean(torch.tensor([terms[n] for n in names], device=device), info)
    return dict(zip(names, values.tolist(), strict=True))
