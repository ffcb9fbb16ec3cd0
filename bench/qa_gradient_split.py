"""Which open-question types push the video tower, and how hard: its gradient split by question type.

    python bench/qa_gradient_split.py --checkpoint runs/qa/checkpoint-0000200 --data data/sw6k --objects 1

One batch of training clips (one-object clips with `--objects 1`), every open question of each, and per question
subtype (synthworld's `subtype`): its share of the batch's open-QA loss (each question's cross-entropy over the
batch's question count, as `QAObjective` weighs it), the norm of the gradient that share sends into the video
tower, and that gradient's cosine with the `--against` type's. A type the head already answers can still send
the tower a gradient as large as the one still at chance: Adam then scales the learning type's step down.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import Clover  # noqa: E402
from model.transforms import VideoTransform  # noqa: E402
from training.cli_eval import resolve_split  # noqa: E402
from training.data import decode_clip  # noqa: E402
from training.evaluate import normalise_answer  # noqa: E402
from training.formats import read_any  # noqa: E402


def tower_gradient(model: Clover, frames: torch.Tensor, questions: list[tuple[int, dict]], total: int
                   ) -> tuple[float, torch.Tensor]:
    """(loss share, flattened video-tower gradient) of these (clip row, question) pairs."""
    vocab = {answer: i for i, answer in enumerate(model.answer_vocab)}
    model.zero_grad(set_to_none=True)
    _, tokens = model.encode_video(frames, return_tokens=True)
    rows = torch.tensor([row for row, _ in questions])
    logits = model.open_qa_logits(tokens[rows], model.tokenize([q["question"] for _, q in questions]))
    labels = torch.tensor([vocab[normalise_answer(q["answer"])] for _, q in questions])
    loss = F.cross_entropy(logits.float(), labels, reduction="sum") / total
    loss.backward()
    grads = [p.grad.flatten() for p in model.video_encoder.parameters() if p.grad is not None]
    return float(loss.detach()), torch.cat(grads).double()  # float64: millions of terms in the cosine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="an open-QA checkpoint")
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="train")
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--objects", type=int, help="only clips with this many objects")
    parser.add_argument("--against", default="shape", help="the type the others are compared with")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = Clover.from_pretrained(args.checkpoint).train()
    vocab = set(model.answer_vocab or [])
    samples = [s for s in read_any(resolve_split(args.data, args.split))
               if args.objects is None or len(s.meta.get("scene", {}).get("objects", [])) == args.objects]
    samples = samples[: args.clips]
    transform = VideoTransform(model.config.image_size)
    frames = torch.stack([transform(decode_clip(s, model.config.num_frames, short_side=model.config.image_size))
                          for s in samples])
    questions = [(row, q) for row, s in enumerate(samples) for q in s.questions
                 if not q.get("candidates") and normalise_answer(q["answer"]) in vocab]
    kinds = sorted({q.get("subtype", "open") for _, q in questions})
    split = {kind: tower_gradient(model, frames, [(r, q) for r, q in questions if q.get("subtype", "open") == kind],
                                  len(questions)) for kind in kinds}
    reference = split.get(args.against, (0.0, None))[1]
    print(f"{len(samples)} clips, {len(questions)} open questions; checkpoint {args.checkpoint}")
    print(f"{'type':>10} {'asked':>6} {'loss share':>11} {'tower grad norm':>16} {'cos with ' + args.against:>16}")
    for kind, (loss, grad) in split.items():
        asked = sum(q.get("subtype", "open") == kind for _, q in questions)
        cosine = float(F.cosine_similarity(grad, reference, dim=0)) if reference is not None else float("nan")
        print(f"{kind:>10} {asked:>6} {loss:>11.4f} {float(grad.norm()):>16.4f} {cosine:>16.3f}")


if __name__ == "__main__":
    main()
