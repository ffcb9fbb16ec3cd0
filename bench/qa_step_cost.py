"""Where the time of one end-to-end QA step goes: the video tower, the fused questions, the caption terms.

    python bench/qa_step_cost.py --checkpoint runs/qa/final --data data/sw6k --clips 32 --repeats 5

One batch of training clips (decoded once) with every open question of each, as `clover finetune --per-clip`
builds it. Each part runs forward + backward on its own, `--repeats` times, and the median is printed:
- video: the tower over the clips (loss: the sum of the clip embeddings and tokens, so every output gets a
  gradient);
- questions: the fusion encoder and answer head over every question, on detached tokens that take a gradient
  (the question text through the frozen text tower, as in the fine-tune);
- anchor: the captions through the frozen text tower and InfoNCE against the clips' detached embeddings;
- re-rank: `rerank_losses` over in-batch groups of `--rerank-group` clips per caption;
- step: `QAObjective` with every term, forward + backward, the sum of the above plus the glue;
- with `--answered-keep P`, also that step as `clover finetune --answered-keep P` takes it once the questions this
  checkpoint answers (p >= `--answered-p`, here and now) are remembered as answered; the two steps are timed in
  turn, one repeat of each at a time, so drift on a shared machine hits both alike;
- with `--compare-fusion`, the questions part, the re-rank part and the step are timed once more with the fusion
  encoder switched to the other mode (single stream / one-way, `FusionConfig.video_attends_text`) on the same
  weights, alternately with the checkpoint's own mode: the cost of each mode, side by side;
- with `--compare-precision`, each part in fp32, under bf16 autocast (`--precision bf16`) and with bf16 autocast
  around the fusion encoder only, in turn.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import Clover  # noqa: E402
from model.host_memory import keep_freed_memory  # noqa: E402
from model.transforms import VideoTransform  # noqa: E402
from training import losses  # noqa: E402
from training.cli_eval import resolve_split  # noqa: E402
from training.data import decode_clip  # noqa: E402
from training.evaluate import normalise_answer  # noqa: E402
from training.finetune import ANSWERED_P, QAObjective, in_batch_groups, rerank_losses  # noqa: E402
from training.formats import read_any  # noqa: E402


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: allocator and kernels
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="an open-QA checkpoint")
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="train")
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--rerank-group", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compare-fusion", action="store_true",
                        help="also time the parts that fuse in the other fusion mode, alternately")
    parser.add_argument("--compare-precision", action="store_true",
                        help="also time each part in fp32, under bf16 autocast, and with only the fusion encoder "
                             "under bf16 autocast, alternately")
    parser.add_argument("--answered-keep", type=float,
                        help="also time the step that skips answered questions with this keep probability")
    parser.add_argument("--answered-p", type=float, default=ANSWERED_P,
                        help="p(true answer) at which --answered-keep counts a question answered")
    args = parser.parse_args()
    keep_freed_memory()  # as `clover finetune` runs; CLOVER_KEEP_FREED_MEMORY=0 times glibc's defaults
    torch.manual_seed(0)
    model = Clover.from_pretrained(args.checkpoint).train()
    model.text_encoder.requires_grad_(False)  # as `clover finetune` leaves it for QA
    model.text_proj.requires_grad_(False)
    samples = read_any(resolve_split(args.data, args.split))[: args.clips]
    transform = VideoTransform(model.config.image_size)
    frames = torch.stack([transform(decode_clip(s, model.config.num_frames, short_side=model.config.image_size))
                          for s in samples])
    vocab = {answer: i for i, answer in enumerate(model.answer_vocab)}
    asked = [(row, q) for row, s in enumerate(samples) for q in s.questions
             if not q.get("candidates") and normalise_answer(q["answer"]) in vocab]
    question_texts = model.tokenize([q["question"] for _, q in asked])
    video_index = torch.tensor([row for row, _ in asked])
    labels = torch.tensor([vocab[normalise_answer(q["answer"])] for _, q in asked])
    captions = model.tokenize([s.captions[0] for s in samples])
    with torch.no_grad():
        video_e, tokens = model.encode_video(frames, return_tokens=True)

    def video() -> None:
        model.zero_grad(set_to_none=True)
        embedding, out = model.encode_video(frames, return_tokens=True)
        (embedding.sum() + out.sum()).backward()

    def questions() -> None:
        model.zero_grad(set_to_none=True)
        live = tokens.clone().requires_grad_(True)
        logits = model.open_qa_logits(live, question_texts, video_index=video_index)
        F.cross_entropy(logits.float(), labels).backward()

    def anchor() -> None:
        model.zero_grad(set_to_none=True)
        live = video_e.clone().requires_grad_(True)
        text_e = model.encode_text(captions["input_ids"], captions["attention_mask"])
        losses.info_nce(live, text_e, 0.05).backward()

    def rerank() -> None:
        model.zero_grad(set_to_none=True)
        live = tokens.clone().requires_grad_(True)
        text_e, hidden = model.encode_text(captions["input_ids"], captions["attention_mask"], return_hidden=True)
        cosine = text_e @ video_e.T
        groups = in_batch_groups(cosine, captions["input_ids"], args.rerank_group)
        listwise, pointwise = rerank_losses(model, live, groups, hidden, captions["attention_mask"],
                                            cosine.gather(1, groups))
        (listwise + pointwise).backward()

    batch = {"frames": frames, "video_index": video_index, "input_ids": question_texts["input_ids"],
             "attention_mask": question_texts["attention_mask"], "open_labels": labels,
             "choice_labels": torch.full_like(labels, -100), "questions": [q["question"] for _, q in asked],
             "candidates": [None] * len(asked), "caption_ids": captions["input_ids"],
             "caption_mask": captions["attention_mask"]}
    objective = QAObjective(retrieval_weight=1.0, open_gamma=2.0, rerank_weight=1.0, rerank_group=args.rerank_group)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        objective(model, batch)[0].backward()

    print(f"{len(samples)} clips, {len(asked)} open questions, {torch.get_num_threads()} threads; "
          f"checkpoint {args.checkpoint}")
    for name, fn in (("video", video), ("questions", questions), ("anchor", anchor), ("re-rank", rerank),
                     ("step", step)):
        print(f"{name:>10} {median_seconds(fn, args.repeats):8.3f} s (forward + backward, median of {args.repeats})")
    if args.answered_keep:
        compare_answered_skip(model, batch, tokens, video_index, question_texts, labels, args, step)
    if args.compare_fusion:
        compare_fusion_modes(model, {"questions": questions, "re-rank": rerank, "step": step}, args.repeats)
    if args.compare_precision:
        compare_precisions(model, {"video": video, "questions": questions, "re-rank": rerank, "step": step},
                           args.repeats)


def compare_answered_skip(model, batch, tokens, video_index, question_texts, labels, args, full_step) -> None:
    """The full step against the step that skips answered questions, timed alternately."""
    with torch.no_grad():
        logits = model.open_qa_logits(tokens[video_index], question_texts).float()
    answer_p = logits.softmax(-1).gather(1, labels[:, None]).squeeze(1)
    skipping = QAObjective(retrieval_weight=1.0, open_gamma=2.0, rerank_weight=1.0, rerank_group=args.rerank_group,
                           answered_keep=args.answered_keep, num_questions=len(labels), answered_p=args.answered_p)
    batch = {**batch, "question_ids": torch.arange(len(labels))}
    fused = []

    def skipping_step() -> None:
        model.zero_grad(set_to_none=True)
        skipping.last_answer_p = answer_p.clone()  # the step updates the table: start each repeat from the same one
        loss, terms = skipping(model, batch, torch.Generator().manual_seed(len(fused)))
        loss.backward()
        fused.append(float(terms["fused_open"]))

    medians = medians_in_turn({"full": full_step, "skip": skipping_step}, args.repeats)
    full, skipped = medians["full"], medians["skip"]
    answered = float((answer_p >= args.answered_p).float().mean())
    print(f"answered (p >= {args.answered_p}): {answered:.1%} of the questions; "
          f"--answered-keep {args.answered_keep} fused {statistics.mean(fused):.1%}")
    print(f"{'step':>10} {full:8.3f} s, with the skip {skipped:8.3f} s: {skipped / full:.2f}x "
          f"(alternating, median of {args.repeats})")


def compare_precisions(model, parts: dict, repeats: int) -> None:
    """Each part in fp32, under bf16 autocast, and with bf16 autocast around the fusion encoder only, in turn."""
    fusion_forward = model.fusion.forward

    def bf16_fusion(*args, **kwargs):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return fusion_forward(*args, **kwargs)

    def in_precision(fn, mode):
        def run() -> None:
            if mode == "bf16 fusion":
                model.fusion.forward = bf16_fusion
            try:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
                    fn()
            finally:
                model.fusion.forward = fusion_forward
        return run

    for part, fn in parts.items():
        medians = medians_in_turn({mode: in_precision(fn, mode) for mode in ("fp32", "bf16", "bf16 fusion")},
                                  repeats)
        print(f"{part:>10} " + ", ".join(f"{mode} {t:.3f} s ({t / medians['fp32']:.2f}x)" for mode, t in medians.items())
              + f" (in turn, median of {repeats})")


def compare_fusion_modes(model, parts: dict, repeats: int) -> None:
    """Each part in the checkpoint's fusion mode and in the other one, one repeat of each in turn."""
    own = model.fusion.video_attends_text
    name = {True: "single stream", False: "one-way"}

    def in_mode(fn, video_attends_text):
        def run() -> None:
            model.fusion.video_attends_text = video_attends_text
            try:
                fn()
            finally:
                model.fusion.video_attends_text = own
        return run

    for part, fn in parts.items():
        medians = medians_in_turn({mode: in_mode(fn, mode) for mode in (True, False)}, repeats)
        single, one_way = medians[True], medians[False]
        print(f"{part:>10} {name[True]} {single:8.3f} s, {name[False]} {one_way:8.3f} s: {one_way / single:.2f}x "
              f"(alternating, median of {repeats}; the checkpoint's own mode: {name[own]})")


def medians_in_turn(variants: dict, repeats: int) -> dict:
    """Median seconds of each variant, one repeat of each in turn, so drift on a shared machine hits all alike."""
    times = {key: [] for key in variants}
    for fn in variants.values():
        fn()  # warm-up
    for _ in range(repeats):
        for key, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    return {key: statistics.median(measured) for key, measured in times.items()}


if __name__ == "__main__":
    main()
