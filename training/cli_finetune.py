"""`clover finetune`: fine-tune a pretrained Clover for retrieval, open-ended QA, multiple-choice QA, or both QA.

    clover finetune --task retrieval --init runs/tiny/final --data data/sw --out runs/ret      # InfoNCE, tau 0.05
    clover finetune --task qa --init runs/tiny/final --data data/sw --out runs/qa --max-steps 300 --eval-split val
    clover finetune --task open-qa --init CKPT --data msrvtt_qa_train.jsonl --out RUN --max-answers 1500
    torchrun --standalone --nproc_per_node=2 -m training.cli_finetune --task retrieval --init CKPT ...   # DDP

Tasks: `retrieval` (the two uni-modal encoders, symmetric InfoNCE); `open-qa` (a new answer-vocabulary head over
the training split's most frequent open-ended answers, saved as qa_answers.json); `mc-qa` (the choice head over
each question's candidates); `qa` (both, one checkpoint that answers either kind); `rerank` (each caption against
its video and hard negatives mined by the dual encoder, on cached video tokens, listwise + matching loss: the
fusion encoder and head behind `rerank=true`; `--qa-weight` keeps a QA checkpoint's open-ended answers trained
beside it, since the fusion encoder is shared). QA freezes the video encoder
and trains from video tokens cached once (`--no-freeze-video` trains end to end, much slower on a CPU; with
`--per-clip`, `--retrieval-weight` keeps the tower matched to search's text space, from `--retrieval-from-step` on).

Per-task defaults (flags and `--config`'s "train" section override them): retrieval lr 1.2e-5 and weight decay
0.01 (paper); QA lr 2e-4, weight decay 0.01, new heads at `--head-lr-mult` x lr, no DataLoader workers (the
batches come from memory). The QA lr suits short CPU runs (synthworld open-QA: loss 2.8 -> 1.3 in 75 steps of
32, where 5e-5 had barely moved after 125); for real data and long runs start lower (ALPRO-style 5e-5).
The fine-tuned checkpoint is RUN/final.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from timm.utils import random_seed

from model import Clover, create_model
from model.host_memory import keep_freed_memory

from .cli_eval import resolve_split
from .cli_train import add_train_args, build_dataset, load_config_file, run_trainer, train_config
from .data import TextCollator
from .distributed import cleanup, init_distributed
from .evaluate import evaluate, summary_lines
from .finetune import (
    ANSWERED_P,
    RETRIEVAL_TAU,
    TASKS,
    QACollator,
    QAObjective,
    QuestionDataset,
    RerankCollator,
    RerankDataset,
    RerankObjective,
    RetrievalObjective,
    build_answer_vocab,
    cache_video_tokens,
    caption_items,
    freeze_text,
    freeze_video,
    group_by_clip,
    mine_hard_negatives,
    question_items,
    question_subtype,
)
from .formats import FORMATS, read_any
from .trainer import Trainer, resolve_device

log = logging.getLogger("clover.finetune")

QA_HEADS = ("qa_head", "choice_head")
RERANK_HEADS = ("match_head",)


def task_defaults(task: str, head_lr_mult: float) -> dict:
    """TrainConfig values a task starts from (below the config file and the flags)."""
    if task == "retrieval":
        return {"lr": 1.2e-5, "weight_decay": 0.01}
    heads = RERANK_HEADS if task == "rerank" else QA_HEADS
    return {"lr": 2e-4, "weight_decay": 0.01, "workers": 0,
            "lr_multipliers": {head: head_lr_mult for head in heads}}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="clover finetune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument("--init", help="the pretrained checkpoint to start from")
    parser.add_argument("--model", default="clover-tiny", help="preset to start from when no --init is given")
    parser.add_argument("--data", required=True, help="dataset directory or manifest file")
    parser.add_argument("--split", default="train")
    parser.add_argument("--format", default="auto", choices=["auto", *FORMATS], help="manifest format (QA tasks)")
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument("--config", help="JSON file with model / train sections")
    parser.add_argument("--tau", type=float, default=RETRIEVAL_TAU, help="InfoNCE temperature (retrieval)")
    parser.add_argument("--max-answers", type=int, default=1000, help="open-ended answer vocabulary size cap")
    parser.add_argument("--freeze-video", action=argparse.BooleanOptionalAction, default=None,
                        help="freeze the video encoder (default: on for QA, off for retrieval)")
    parser.add_argument("--freeze-text", action=argparse.BooleanOptionalAction, default=None,
                        help="freeze the text encoder (default: on for QA and rerank, so the checkpoint's search "
                             "quality is exactly the pretrained one's; off for retrieval)")
    parser.add_argument("--clip-token", action="store_true",
                        help="give the fusion encoder a clip token (the clip embedding as one more video position) "
                             "before fine-tuning; a new input layer that learns at --head-lr-mult x lr")
    parser.add_argument("--rerank-group", type=int, default=8,
                        help="rerank: each caption's true video plus negatives drawn from its 2x(group-1) nearest "
                             "videos in the training set, this many per caption (with --rerank-weight: the closest "
                             "clips of the batch)")
    parser.add_argument("--head-lr-mult", type=float, default=10.0, help="lr factor of the new QA heads")
    parser.add_argument("--token-batch-size", type=int, default=32, help="clips per forward when caching tokens")
    parser.add_argument("--qa-video-skip", action="store_true",
                        help="open QA: a new answer head that also reads the video tokens' max (heads.qa_video_skip)")
    parser.add_argument("--per-clip", action="store_true",
                        help="QA: batch every question of a clip together (--batch-size then counts clips), so "
                             "end to end each clip is encoded once per step")
    parser.add_argument("--retrieval-weight", type=float, default=0.0,
                        help="QA end to end with --per-clip: also InfoNCE between each clip and one of its captions, "
                             "at this weight, so the video tower stays matched to the text space of search")
    parser.add_argument("--retrieval-from-step", type=int, default=0,
                        help="with --retrieval-weight: the InfoNCE term starts at this optimizer step, after the "
                             "tower has learned from the questions alone (one run instead of two)")
    parser.add_argument("--rerank-weight", type=float, default=0.0,
                        help="QA end to end with --per-clip: also train the re-ranker in the same run, from "
                             "--retrieval-from-step on, each caption against its clip and the --rerank-group - 1 "
                             "closest clips of the batch (listwise + matching loss, at this weight)")
    parser.add_argument("--detach-anchor", action="store_true",
                        help="with --retrieval-weight / --rerank-weight: those terms see the video tower's tokens "
                             "detached, so they train the video projection and the fusion encoder to follow a "
                             "tower that learns from the questions alone (they can then start at step 0)")
    parser.add_argument("--rerank-captions", type=int,
                        help="with --rerank-weight: re-rank only this many captions of each batch (each against "
                             "every clip of it); fused pairs are most of a step's cost")
    parser.add_argument("--questions-per-clip", type=int,
                        help="QA with --per-clip: fuse this many of a clip's questions per epoch, drawn afresh "
                             "each epoch (the fused questions, not the video tower, are most of an end-to-end step)")
    parser.add_argument("--answered-keep", type=float, default=1.0,
                        help="open QA: fuse a question answered when last fused (p >= --answered-p) with this "
                             "probability, weighted by its inverse (1 = fuse every question every time)")
    parser.add_argument("--answered-p", type=float, default=ANSWERED_P,
                        help="with --answered-keep: the p(true answer) at which a question counts as answered "
                             "(focal loss keeps right answers unsure: 0.5 = every answer that wins)")
    parser.add_argument("--question-type-weight", action="append", default=[], metavar="TYPE=W",
                        help="open QA: weigh the loss of questions of this subtype (the manifest's \"subtype\", "
                             "e.g. shape=4) by W; repeatable. A type the others outnumber can be learned at its own "
                             "pace (docs/benchmarks.md, session 16)")
    parser.add_argument("--qa-focal-gamma", type=float, default=0.0,
                        help="open QA: focal loss -(1-p)^gamma log p instead of cross-entropy (0), so answered "
                             "question types stop outweighing the ones still at chance")
    parser.add_argument("--qa-weight", type=float, default=0.0,
                        help="rerank: also the open-ended QA loss of each caption's own video at this weight (a "
                             "checkpoint with an answer head), so the shared fusion encoder keeps answering")
    parser.add_argument("--eval-split", help="evaluate the final model on this split (RUN/final/eval_SPLIT.json)")
    add_train_args(parser)
    args = parser.parse_args(argv)
    if args.rerank_captions is not None and not args.rerank_weight:
        parser.error("--rerank-captions needs --rerank-weight")
    if args.retrieval_from_step and not (args.retrieval_weight or args.rerank_weight):
        parser.error("--retrieval-from-step needs --retrieval-weight or --rerank-weight")
    if args.detach_anchor and not (args.retrieval_weight or args.rerank_weight):
        parser.error("--detach-anchor needs --retrieval-weight or --rerank-weight")
    if not 0.0 < args.answered_keep <= 1.0:
        parser.error("--answered-keep must be in (0, 1]")
    if args.answered_p != ANSWERED_P and args.answered_keep == 1.0:
        parser.error("--answered-p needs --answered-keep")
    args.type_weights = {}
    for spec in args.question_type_weight:
        name, _, weight = spec.partition("=")
        try:
            args.type_weights[name] = float(weight)
        except ValueError:
            parser.error(f"--question-type-weight wants TYPE=W with a number W, not {spec!r}")
        if not name or args.type_weights[name] < 0:
            parser.error(f"--question-type-weight wants TYPE=W with a type and W >= 0, not {spec!r}")
    return args


def build_qa(args: argparse.Namespace, model: Clover, freeze: bool, cfg, out: Path):
    """-> (dataset, collate, notes) for the QA tasks; sets the answer vocabulary when open questions train."""
    samples = read_any(resolve_split(args.data, args.split), fmt=args.format)
    wants_open, wants_choice = args.task in ("open-qa", "qa"), args.task in ("mc-qa", "qa")
    vocab = None
    if wants_open:
        vocab = build_answer_vocab(samples, args.max_answers)
        if not vocab:
            raise SystemExit(f"clover finetune: the {args.split} split has no open-ended questions")
        new_head = args.qa_video_skip and not model.config.heads.qa_video_skip
        model.config.heads.qa_video_skip |= args.qa_video_skip
        if vocab != model.answer_vocab or new_head:
            model.set_answer_vocab(vocab)  # a new head; an identical vocabulary keeps the trained one
    if freeze:
        freeze_video(model)
        # Encode on the training device; the Trainer moves the model there anyway.
        tokens, rows = cache_video_tokens(model.to(resolve_device(cfg.device)), samples, args.token_batch_size,
                                          workers=max(1, cfg.workers))  # decode beside the encoder
        videos = None
    else:
        videos = build_dataset(args.data, args.split, model, args, train=True, seed=cfg.seed,
                               cache_dir=out / "cache", max_shift=cfg.max_shift)
        samples = videos.samples
        tokens, rows = None, {i: i for i in videos.indices}
    open_types = {question_subtype(q) for s in samples for q in s.questions if not q.get("candidates")}
    unknown = sorted(set(args.type_weights) - open_types)
    if unknown:  # a misspelt type would otherwise train silently unweighted
        raise SystemExit(f"clover finetune: --question-type-weight names {', '.join(unknown)}, but the open questions "
                         f"of the {args.split} split have the types {', '.join(sorted(map(str, open_types)))}")
    items = question_items(samples, rows, vocab, open_questions=wants_open, choice_questions=wants_choice,
                           type_weights=args.type_weights)
    if not items:
        raise SystemExit(f"clover finetune: no {args.task} questions in the {args.split} split")
    notes = {"answer_vocab_size": len(vocab or []), "num_questions": len(items),
             "num_open": sum(item["candidates"] is None for item in items), "frozen_video": freeze,
             "per_clip": args.per_clip}
    if args.questions_per_clip is not None and not args.per_clip:
        raise SystemExit("clover finetune: --questions-per-clip needs --per-clip")
    notes["questions_per_clip"] = args.questions_per_clip
    notes["question_type_weights"] = args.type_weights
    dataset = QuestionDataset(items, videos=videos, seed=cfg.seed, per_clip=args.per_clip,
                              questions_per_clip=args.questions_per_clip)
    return dataset, QACollator(tokens, model.tokenizer, model.config.text.max_length), notes


def build_rerank(args: argparse.Namespace, model: Clover, cfg):
    """-> (dataset, collate, notes) for re-ranking on cached tokens (the video encoder is frozen)."""
    samples = read_any(resolve_split(args.data, args.split), fmt=args.format)
    freeze_video(model)
    tokens, rows = cache_video_tokens(model.to(resolve_device(cfg.device)), samples, args.token_batch_size,
                                      workers=max(1, cfg.workers))
    items = caption_items(samples, rows)
    if not items:
        raise SystemExit(f"clover finetune: no captions in the {args.split} split")
    mine_hard_negatives(model, tokens, items, pool=2 * (args.rerank_group - 1))
    items = [item for item in items if len(item["negatives"]) >= args.rerank_group - 1]
    notes = {"num_pairs": len(items), "group": args.rerank_group, "frozen_video": True, "qa_weight": args.qa_weight}
    questions = None
    if args.qa_weight:
        if model.qa_head is None:
            raise SystemExit("clover finetune: --qa-weight needs a checkpoint with an open-ended QA head "
                             "(--task open-qa or qa)")
        # Open-ended questions only: one fused pass each, where a multiple-choice question costs one per candidate.
        asked = question_items(samples, rows, model.answer_vocab, open_questions=True, choice_questions=False)
        questions = {group[0]["row"]: group for group in group_by_clip(asked)}
        notes["num_questions"] = len(asked)
    return (RerankDataset(items, args.rerank_group, seed=cfg.seed, questions=questions),
            RerankCollator(tokens, model.tokenizer, model.config.text.max_length), notes)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    file_config = load_config_file(args.config)
    cfg = train_config(args, {**task_defaults(args.task, args.head_lr_mult), **file_config.get("train", {})})
    if args.warmup_steps is None and "warmup_steps" not in file_config.get("train", {}):
        cfg.warmup_steps = max(1, cfg.max_steps // 10)  # short fine-tunes: warm up over a tenth of the schedule
    info = init_distributed(str(resolve_device(cfg.device)))
    # The seed fixes new weights and dropout too, not only the data order (DDP broadcasts rank 0's weights).
    random_seed(cfg.seed, info.rank)
    if args.init:
        model = Clover.from_pretrained(args.init)
    else:
        log.warning("no --init: fine-tuning a randomly initialised %s", args.model)
        model = create_model(args.model, **file_config.get("model", {}))
    if args.clip_token and not model.config.fusion.clip_token:
        model.add_clip_token()
        cfg.lr_multipliers = {"fusion.clip_proj.": args.head_lr_mult, **cfg.lr_multipliers}
    out = Path(args.out)
    freeze = args.freeze_video if args.freeze_video is not None else args.task != "retrieval"
    if args.freeze_text is None:
        # QA and re-ranking train the fusion layers and heads; the text tower also serves search, and tuning it
        # for questions cost clover-tiny half its text->video R@1 (20.0 -> 11.0 on synthworld test).
        args.freeze_text = args.task != "retrieval"
    if args.freeze_text:
        freeze_text(model)
    if args.task == "retrieval":
        if freeze:
            freeze_video(model)
        dataset = build_dataset(args.data, args.split, model, args, train=True, seed=cfg.seed,
                                cache_dir=out / "cache", info=info, max_shift=cfg.max_shift)
        collate = TextCollator(model.tokenizer, model.config.text.max_length)
        loss_fn, notes = RetrievalObjective(args.tau, info), {"frozen_video": freeze}
        notes["frozen_text"] = args.freeze_text
    elif args.task == "rerank":
        dataset, collate, notes = build_rerank(args, model, cfg)
        loss_fn = RerankObjective(args.qa_weight, args.qa_focal_gamma)
    else:
        dataset, collate, notes = build_qa(args, model, freeze, cfg, out)
        if (args.retrieval_weight or args.rerank_weight) and (freeze or not args.per_clip):
            raise SystemExit("clover finetune: --retrieval-weight and --rerank-weight need --no-freeze-video and "
                             "--per-clip")
        loss_fn = QAObjective(args.retrieval_weight, args.tau, args.qa_focal_gamma, args.retrieval_from_step,
                              args.rerank_weight, args.rerank_group, args.rerank_captions,
                              args.answered_keep, notes["num_questions"], args.answered_p, args.detach_anchor)
        notes.update(frozen_text=args.freeze_text, retrieval_weight=args.retrieval_weight,
                     retrieval_from_step=args.retrieval_from_step, rerank_weight=args.rerank_weight,
                     rerank_captions=args.rerank_captions, answered_keep=args.answered_keep,
                     answered_p=args.answered_p, detach_anchor=args.detach_anchor,
                     qa_focal_gamma=args.qa_focal_gamma)
    log.info("%s fine-tuning: %d training items %s", args.task, len(dataset), notes)
    run_config = {"task": args.task, "init": args.init, "data": str(args.data), "split": args.split,
                  "tau": args.tau if args.task == "retrieval" else None, **notes,
                  "model": model.config.to_dict(), "train": cfg.to_dict(), "world_size": info.world_size}
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "run_config.json").write_text(json.dumps(run_config, indent=2) + "\n")
    trainer = Trainer(model, loss_fn, dataset, collate, cfg, info, run_config)
    run_trainer(trainer, args, out, info)
    if info.is_main and args.eval_split:
        samples = read_any(resolve_split(args.data, args.eval_split), fmt=args.format)
        result = evaluate(trainer.model, samples, qa=args.task not in ("retrieval", "rerank"),
                          workers=args.workers or 0)
        result = {"checkpoint": str(out / "final"), "split": args.eval_split, **result}
        (out / "final" / f"eval_{args.eval_split}.json").write_text(json.dumps(result, indent=2) + "\n")
        for line in summary_lines(result):
            log.info(line)
    cleanup()
    return 0


if __name__ == "__main__":  # python -m / torchrun -m: the batch job `clover` would start
    keep_freed_memory()
    sys.exit(main())
