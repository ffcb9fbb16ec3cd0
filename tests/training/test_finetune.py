"""Fine-tuning: answer vocabulary, question items, the QA and retrieval objectives, and short CLI runs."""

import json
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from model import Clover
from tests.model.helpers import tiny_model
from tests.video_factory import write_video
from training.data import Sample
from training.finetune import (
    IGNORE,
    QACollator,
    QAObjective,
    QuestionDataset,
    QuestionStates,
    RerankCollator,
    RerankDataset,
    RerankObjective,
    RetrievalObjective,
    build_answer_vocab,
    cache_video_tokens,
    freeze_text,
    freeze_video,
    in_batch_groups,
    mine_hard_negatives,
    question_items,
)
from training.trainer import TrainConfig, Trainer

COLORS = ["red", "blue", "red", "green", "red", "blue"]
MOTIONS = ["moves left", "moves right", "grows", "shrinks", "stays still"]


def open_q(answer, subtype="color"):
    return {"type": "open", "subtype": subtype, "question": "what color is the circle?", "answer": answer,
            "candidates": None}


def choice_q(i):
    candidates = MOTIONS[i % 5 :] + MOTIONS[: i % 5]
    return {"type": "action", "subtype": "action", "question": "what does the circle do?", "answer": MOTIONS[i % 5],
            "candidates": candidates, "answer_index": 0}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    lines = []
    for i, color in enumerate(COLORS):
        write_video(root / "videos" / f"v{i}.mp4", num_frames=8, width=32, height=32, fps=8, seed=i)
        lines.append({"video_id": f"v{i}", "path": f"videos/v{i}.mp4", "captions": [f"a {color} circle {MOTIONS[i % 5]}"],
                      "questions": [open_q(color), choice_q(i)]})
    for split in ("train", "val"):
        (root / f"{split}.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    torch.manual_seed(0)
    checkpoint = tiny_model().save_pretrained(root / "init")
    return SimpleNamespace(root=root, checkpoint=checkpoint)


def test_answer_vocab_by_frequency_then_alphabet():
    samples = [Sample("a", "/a", [], [open_q(c) for c in ["Red", "blue", "red ", "green", "blue", "red"]]
                      + [choice_q(0)])]
    assert build_answer_vocab(samples) == ["red", "blue", "green"]
    assert build_answer_vocab(samples, max_answers=2) == ["red", "blue"]


def test_question_items_labels_and_out_of_vocabulary():
    samples = [Sample("a", "/a", [], [open_q("red"), open_q("pink"), choice_q(2)]),
               Sample("b", "/b", [], [open_q("blue")])]
    items = question_items(samples, rows={0: 0}, answer_vocab=["blue", "red"])  # b did not decode
    assert items == [{"row": 0, "question": "what color is the circle?", "label": 1, "candidates": None, "qid": 0},
                     {"row": 0, "question": "what does the circle do?", "label": 0,
                      "candidates": choice_q(2)["candidates"], "qid": 1}]
    assert [i["candidates"] for i in question_items(samples, {0: 0, 1: 1}, None, open_questions=False)] == [
        choice_q(2)["candidates"]]


def test_qa_objective_trains_heads_not_the_frozen_video_encoder(world):
    model = Clover.from_pretrained(world.checkpoint)
    model.set_answer_vocab(["red", "blue", "green"])
    freeze_video(model)
    samples = [Sample(f"v{i}", str(world.root / "videos" / f"v{i}.mp4"), [], [open_q(c), choice_q(i)])
               for i, c in enumerate(COLORS[:3])]
    tokens, rows = cache_video_tokens(model, samples, batch_size=4)
    assert tokens.dtype == torch.float16 and tokens.shape == (3, *model.video_token_shape)
    items = question_items(samples, rows, model.answer_vocab)
    batch = QACollator(tokens, model.tokenizer, model.config.text.max_length)(QuestionDataset(items).items)
    assert batch["open_labels"].tolist() == [0, IGNORE, 1, IGNORE, 0, IGNORE]
    assert batch["choice_labels"].tolist() == [IGNORE, 0, IGNORE, 0, IGNORE, 0]
    model.train()
    loss, terms = QAObjective()(model, batch)
    # each question counts once: the batch loss is the question-weighted mean of the two terms
    assert loss.item() == pytest.approx(0.5 * (terms["open_qa"].item() + terms["mc_qa"].item()), rel=1e-5)
    loss.backward()
    assert all(p.grad is None for p in model.video_encoder.parameters())
    assert model.qa_head.mlp[-1].weight.grad.abs().sum() > 0
    assert model.choice_head.mlp[-1].weight.grad.abs().sum() > 0


def test_qa_finetune_lowers_the_loss_and_saves_the_vocabulary(world, tmp_path):
    from training.cli_finetune import main

    out = tmp_path / "run"
    code = main(["--task", "qa", "--init", str(world.checkpoint), "--data", str(world.root), "--out", str(out),
                 "--max-steps", "8", "--batch-size", "12", "--lr", "1e-3", "--warmup-steps", "0",
                 "--log-every", "1", "--token-batch-size", "4", "--eval-split", "val", "--quiet"])
    assert code == 0
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 8 and {"open_qa", "mc_qa"} <= set(history[0])
    assert history[-1]["loss"] < history[0]["loss"]  # 12 questions, one batch: the same questions every step
    assert json.loads((out / "final" / "qa_answers.json").read_text()) == ["red", "blue", "green"]
    model = Clover.from_pretrained(out / "final")
    assert model.answer_vocab == ["red", "blue", "green"] and model.qa_head is not None
    before = load_file(str(world.checkpoint / "model.safetensors"))
    after = load_file(str(out / "final" / "model.safetensors"))
    for name in before:
        if name.startswith("video_encoder."):
            assert torch.equal(before[name], after[name]), name  # the video encoder stayed frozen
    evaluation = json.loads((out / "final" / "eval_val.json").read_text())
    assert set(evaluation["qa"]) == {"open", "action"}
    assert evaluation["qa"]["open"]["num_questions"] == len(COLORS)
    assert evaluation["qa"]["action"]["num_questions"] == len(COLORS)


def test_the_seed_reproduces_a_fine_tune_new_head_dropout_and_all(world, tmp_path):
    from training.cli_finetune import main

    def run(name: str, seed: int, global_seed: int):
        torch.manual_seed(global_seed)  # whatever the process's RNG holds, the run's --seed decides
        out = tmp_path / name
        assert main(["--task", "qa", "--init", str(world.checkpoint), "--data", str(world.root), "--out", str(out),
                     "--max-steps", "2", "--batch-size", "12", "--warmup-steps", "0", "--log-every", "1",
                     "--token-batch-size", "4", "--seed", str(seed), "--quiet"]) == 0
        losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
        return losses, load_file(str(out / "final" / "model.safetensors"))

    first_losses, first = run("a", seed=3, global_seed=1)
    again_losses, again = run("b", seed=3, global_seed=2)
    _, other = run("c", seed=4, global_seed=1)
    assert first_losses == again_losses
    assert all(torch.equal(first[name], again[name]) for name in first)
    head = [name for name in first if name.startswith("qa_head.")]
    assert head and not all(torch.equal(first[name], other[name]) for name in head)


def test_retrieval_finetune_runs_info_nce(world, tmp_path):
    from training.cli_finetune import main

    out = tmp_path / "ret"
    code = main(["--task", "retrieval", "--init", str(world.checkpoint), "--data", str(world.root), "--out",
                 str(out), "--max-steps", "4", "--batch-size", "6", "--lr", "1e-3", "--warmup-steps", "0",
                 "--log-every", "1", "--workers", "0", "--no-cache", "--quiet"])
    assert code == 0
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [set(h) >= {"loss", "info_nce"} for h in history] == [True] * 4
    assert history[-1]["loss"] < history[0]["loss"]
    run_config = json.loads((out / "run_config.json").read_text())
    assert run_config["task"] == "retrieval" and run_config["tau"] == 0.05
    assert (out / "final" / "model.safetensors").is_file() and not (out / "final" / "qa_answers.json").exists()


def test_retrieval_objective_is_symmetric_info_nce():
    from training import losses

    torch.manual_seed(0)
    model = tiny_model()
    batch = {"frames": torch.randn(3, 4, 3, 32, 32)}
    batch.update(model.tokenize(["a", "b c", "d e f"]))
    loss, terms = RetrievalObjective(tau=0.05)(model.eval(), batch)
    with torch.no_grad():
        expected = losses.info_nce(model.encode_video(batch["frames"]),
                                   model.encode_text(batch["input_ids"], batch["attention_mask"]), 0.05)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5) and terms["info_nce"] == loss.detach()


def test_mc_qa_end_to_end_trains_the_video_encoder(world, tmp_path):
    from training.cli_finetune import main

    out = tmp_path / "e2e"
    code = main(["--task", "mc-qa", "--init", str(world.checkpoint), "--data", str(world.root), "--out", str(out),
                 "--no-freeze-video", "--no-cache", "--max-steps", "2", "--batch-size", "3", "--lr", "1e-3",
                 "--warmup-steps", "0", "--log-every", "1", "--quiet"])
    assert code == 0
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all("mc_qa" in h and "open_qa" not in h for h in history)
    before = load_file(str(world.checkpoint / "model.safetensors"))
    after = load_file(str(out / "final" / "model.safetensors"))
    name = "video_encoder.swin.patch_embed.proj.weight"
    assert not torch.equal(before[name], after[name])
    assert not (out / "final" / "qa_answers.json").exists()


def test_trainer_freezes_parameters_by_prefix(tmp_path):
    from training.trainer import freeze_parameters

    model = tiny_model()
    freeze_parameters(model, ["text_encoder.embeddings.word_embeddings"])
    assert not model.text_encoder.embeddings.word_embeddings.weight.requires_grad
    assert model.text_encoder.embeddings.position_embeddings.weight.requires_grad
    with pytest.raises(ValueError, match="no parameter"):
        freeze_parameters(model, ["text_encoder.nothing"])


def test_mined_negatives_are_the_nearest_other_videos():
    torch.manual_seed(0)
    model = tiny_model().eval()
    tokens = torch.randn(6, *model.video_token_shape)
    captions = ["a red circle moves left", "a blue square grows", "a red circle moves left", "a green cross",
                "a white square shrinks", "a small purple triangle"]
    items = [{"row": i, "caption": c} for i, c in enumerate(captions)]
    mine_hard_negatives(model, tokens, items, pool=3)
    with torch.no_grad():
        video_e = torch.nn.functional.normalize(model.video_proj(tokens), dim=-1)
        text = model.tokenize(captions)
        text_e = model.encode_text(text["input_ids"], text["attention_mask"])
    for i, item in enumerate(items):
        others = [j for j in range(6) if j != i and captions[j] != captions[i]]  # rows 0 and 2 share a caption
        assert item["negatives"] == sorted(others, key=lambda j: -float(text_e[i] @ video_e[j]))[:3]
    dataset = RerankDataset(items, group=3, seed=0)
    first = dataset[0]
    assert first["rows"][0] == 0 and set(first["rows"][1:]) <= set(items[0]["negatives"]) and len(first["rows"]) == 3
    assert dataset[0] == first  # seeded per epoch
    batch = RerankCollator(tokens, model.tokenizer, 16)([dataset[i] for i in range(4)])
    assert batch["video_tokens"].shape == (4, 3, *model.video_token_shape)


def test_rerank_objective_equals_a_loop_over_each_captions_group():
    """Listwise CE over (true video + negatives) of match log-odds + weighted cosine, plus the pairwise matching
    CE over the same pairs, against a per-caption loop through the model's own calls."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = tiny_model().eval()
    captions = ["a red circle moves left", "a blue square grows", "a green cross moves up"]
    groups = [[0, 3, 4], [1, 0, 2], [2, 4, 1]]
    tokens = torch.randn(5, *model.video_token_shape)
    batch = RerankCollator(tokens, model.tokenizer, 16)([{"caption": c, "rows": g} for c, g in zip(captions, groups, strict=True)])
    loss, terms = RerankObjective()(model, batch)

    with torch.no_grad():
        video_e = F.normalize(model.video_proj(tokens), dim=-1)
        listwise, pairs, labels = [], [], []
        for caption, group in zip(captions, groups, strict=True):
            text = model.tokenize([caption], max_length=16)
            text_e, hidden = model.encode_text(text["input_ids"], text["attention_mask"], return_hidden=True)
            logits = torch.stack([model.match_logits(model.fuse(tokens[j : j + 1], hidden, text["attention_mask"])[1])[0]
                                  for j in group])  # (3, 2)
            cosine = torch.stack([text_e[0] @ video_e[j] for j in group])
            scores = model.rerank_scores(logits[:, 1] - logits[:, 0], cosine)
            listwise.append(F.cross_entropy(scores[None], torch.tensor([0])))
            pairs.append(logits)
            labels += [1, 0, 0]
        expected_listwise = torch.stack(listwise).mean()
        expected_matching = F.cross_entropy(torch.cat(pairs), torch.tensor(labels))
    torch.testing.assert_close(terms["listwise"], expected_listwise, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(terms["matching"], expected_matching, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(loss.detach(), expected_listwise + expected_matching, atol=1e-4, rtol=1e-4)


def test_rerank_with_questions_adds_the_weighted_qa_loss_of_the_own_videos():
    torch.manual_seed(0)
    model = tiny_model()
    model.set_answer_vocab(["red", "blue", "green"])
    model.eval()  # after the new head: no dropout anywhere
    tokens = torch.randn(5, *model.video_token_shape)
    questions = {0: [{"row": 0, "question": "what color is it?", "label": 0, "candidates": None},
                     {"row": 0, "question": "what color is the circle?", "label": 0, "candidates": None}],
                 2: [{"row": 2, "question": "what color is it?", "label": 2, "candidates": None}]}
    items = [{"row": 0, "caption": "a red circle", "negatives": [3, 4]},
             {"row": 1, "caption": "a blue square", "negatives": [0, 2]},  # a video without questions
             {"row": 2, "caption": "a green cross", "negatives": [4, 1]}]
    dataset = RerankDataset(items, group=3, questions=questions)
    assert dataset[1]["questions"] == [] and dataset[0]["questions"] == questions[0]
    collate = RerankCollator(tokens, model.tokenizer, 16)
    batch = collate([dataset[i] for i in range(3)])
    assert batch["qa"]["video_index"].tolist() == [0, 0, 1]  # the two videos with questions, rows 0 and 2
    assert torch.equal(batch["qa"]["video_tokens"], tokens[[0, 2]])
    rerank_only, _ = RerankObjective()(model, batch)
    qa_loss, _ = QAObjective()(model, batch["qa"])
    loss, terms = RerankObjective(qa_weight=0.5)(model, batch)
    assert loss.item() == pytest.approx(rerank_only.item() + 0.5 * qa_loss.item(), rel=1e-5)
    assert {"listwise", "matching", "open_qa"} <= set(terms)
    assert "qa" not in collate([dataset[1]])  # no questions in the batch: re-ranking alone


def test_clip_grouped_batches_encode_each_clip_once_and_give_the_same_loss_in_either_fusion_mode(world):
    model = Clover.from_pretrained(world.checkpoint)
    model.set_answer_vocab(["red", "blue", "green"])
    samples = [Sample(f"v{i}", str(world.root / "videos" / f"v{i}.mp4"), [],
                      [open_q(c), choice_q(i), open_q(COLORS[(i + 1) % 3])]) for i, c in enumerate(COLORS[:3])]
    tokens, rows = cache_video_tokens(model, samples, batch_size=4)
    items = question_items(samples, rows, model.answer_vocab)
    collate = QACollator(tokens, model.tokenizer, model.config.text.max_length)
    grouped = QuestionDataset(items, per_clip=True)
    assert len(grouped) == 3 and len(QuestionDataset(items)) == 9
    per_clip = collate([grouped[i] for i in range(3)])
    per_question = collate(items)
    assert per_clip["video_tokens"].shape[0] == 3 and per_clip["video_index"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for key in ("input_ids", "open_labels", "choice_labels"):
        assert torch.equal(per_clip[key], per_question[key]), key
    model.eval()  # no dropout: the two batches are the same questions on the same tokens
    for video_attends_text in (True, False):  # the single stream, and one-way fusion (each clip's video run once)
        model.fusion.video_attends_text = model.config.fusion.video_attends_text = video_attends_text
        loss_grouped, _ = QAObjective()(model, per_clip)
        loss_flat, _ = QAObjective()(model, per_question)
        assert loss_grouped.item() == pytest.approx(loss_flat.item(), rel=1e-5), video_attends_text


def test_question_states_are_encoded_once_while_the_text_tower_is_frozen_with_the_same_loss_and_gradients(world):
    model = Clover.from_pretrained(world.checkpoint)
    model.set_answer_vocab(["red", "blue", "green"])
    phrasings = ["what color is the circle?", "which color does it have?", "what color is the circle?"]
    asked = [open_q(c) | {"question": q} for c, q in zip(COLORS[:3], phrasings, strict=True)]
    samples = [Sample(f"v{i}", str(world.root / "videos" / f"v{i}.mp4"), [], [asked[i], open_q(COLORS[i + 1])])
               for i in range(3)]
    tokens, rows = cache_video_tokens(model, samples, batch_size=4)
    batch = QACollator(tokens, model.tokenizer, model.config.text.max_length)(
        question_items(samples, rows, model.answer_vocab, choice_questions=False))
    model.eval()
    objective = QAObjective()
    encoded = []
    model.text_encoder.register_forward_hook(lambda module, args, kwargs, out: encoded.append(
        len(kwargs["input_ids"])), with_kwargs=True)

    def fusion_grads(loss):
        model.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in model.fusion.parameters() if p.grad is not None]

    trainable = objective(model, batch)[0]  # a text tower that trains: encoded every step, nothing kept
    expected = fusion_grads(trainable)
    assert encoded == [2] and not objective.question_states.states  # 6 questions, 2 distinct (`encode_text`)
    freeze_text(model)
    first = objective(model, batch)[0]
    assert encoded == [2, 2]  # the two distinct questions, kept
    torch.testing.assert_close(fusion_grads(first), expected)
    second = objective(model, batch)[0]
    assert encoded == [2, 2] and len(objective.question_states.states) == 2  # no text-tower pass
    assert first.item() == pytest.approx(trainable.item(), rel=1e-5) and second.item() == first.item()
    objective.question_states = QuestionStates(max_questions=1)  # full: the other question is encoded each time
    bounded = [objective(model, batch)[0].item() for _ in range(2)]
    assert encoded == [2, 2, 2, 1] and len(objective.question_states.states) == 1
    assert bounded == pytest.approx([first.item()] * 2, rel=1e-6)


def test_focal_open_qa_term_equals_a_loop_over_questions(world):
    model = Clover.from_pretrained(world.checkpoint)
    model.set_answer_vocab(["red", "blue", "green"])
    samples = [Sample(f"v{i}", str(world.root / "videos" / f"v{i}.mp4"), [], [open_q(c), choice_q(i)])
               for i, c in enumerate(COLORS[:3])]
    tokens, rows = cache_video_tokens(model, samples, batch_size=4)
    batch = QACollator(tokens, model.tokenizer, model.config.text.max_length)(
        question_items(samples, rows, model.answer_vocab, choice_questions=False))
    model.eval()
    with torch.no_grad():
        log_probs = model.open_qa_logits(batch["video_tokens"].float(), batch).log_softmax(-1)
        reference = [-(1 - lp[label].exp()) ** 2 * lp[label] for lp, label in zip(log_probs, batch["open_labels"], strict=True)]
        loss, terms = QAObjective(open_gamma=2.0)(model, batch)
        plain, _ = QAObjective()(model, batch)
    assert loss.item() == pytest.approx(torch.stack(reference).mean().item(), rel=1e-5)
    assert loss.item() < plain.item()  # every answer weighed down by (1 - p)^2 < 1


def test_end_to_end_qa_per_clip_with_retrieval_anchor_trains_the_video_tower(world, tmp_path):
    from training.cli_finetune import main

    out = tmp_path / "e2e"
    code = main(["--task", "open-qa", "--init", str(world.checkpoint), "--data", str(world.root), "--out", str(out),
                 "--no-freeze-video", "--per-clip", "--retrieval-weight", "0.5", "--max-steps", "3",
                 "--batch-size", "3", "--lr", "1e-3", "--warmup-steps", "0", "--log-every", "1", "--workers", "0",
                 "--no-cache", "--quiet"])
    assert code == 0
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [set(h) >= {"open_qa", "info_nce"} for h in history] == [True] * 3
    for h in history:  # the anchor is added at its weight to the question loss
        assert h["loss"] == pytest.approx(h["open_qa"] + 0.5 * h["info_nce"], rel=1e-4)
    run_config = json.loads((out / "run_config.json").read_text())
    assert run_config["per_clip"] and not run_config["frozen_video"] and run_config["retrieval_weight"] == 0.5
    before = load_file(str(world.checkpoint / "model.safetensors"))
    after = load_file(str(out / "final" / "model.safetensors"))
    assert any(not torch.equal(before[n], after[n]) for n in before if n.startswith("video_encoder."))
    assert all(torch.equal(before[n], after[n]) for n in before if n.startswith("text_encoder."))  # search's side


def test_runs_on_the_same_data_share_one_frame_cache_folder(world, tmp_path):
    from training.cli_finetune import main

    shared = tmp_path / "frames"

    def run(name: str) -> None:
        assert main(["--task", "open-qa", "--init", str(world.checkpoint), "--data", str(world.root),
                     "--out", str(tmp_path / name), "--no-freeze-video", "--per-clip", "--max-steps", "1",
                     "--batch-size", "3", "--warmup-steps", "0", "--workers", "0", "--cache-dir", str(shared),
                     "--quiet"]) == 0

    run("first")
    [cache] = shared.glob("train-*.npy")
    built = cache.stat().st_mtime_ns
    run("second")
    assert cache.stat().st_mtime_ns == built  # opened, not decoded again
    assert sorted(p.name for p in shared.iterdir()) == sorted([cache.name, cache.with_suffix(".json").name])  # no temp
    assert not (tmp_path / "first" / "cache").exists() and not (tmp_path / "second" / "cache").exists()


def test_retrieval_anchor_starts_at_its_step(world, tmp_path):
    from training.cli_finetune import main

    out = tmp_path / "gated"
    code = main(["--task", "open-qa", "--init", str(world.checkpoint), "--data", str(world.root), "--out", str(out),
                 "--no-freeze-video", "--per-clip", "--retrieval-weight", "0.5", "--retrieval-from-step", "2",
                 "--max-steps", "4", "--batch-size", "3", "--lr", "1e-3", "--warmup-steps", "0", "--log-every", "1",
                 "--workers", "0", "--no-cache", "--quiet"])
    assert code == 0
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert ["info_nce" in h for h in history] == [False, False, True, True]  # steps 1-2 questions only
    assert history[0]["loss"] == pytest.approx(history[0]["open_qa"], rel=1e-5)
    assert history[3]["loss"] == pytest.approx(history[3]["open_qa"] + 0.5 * history[3]["info_nce"], rel=1e-4)
    assert json.loads((out / "run_config.json").read_text())["retrieval_from_step"] == 2


def test_a_detached_anchor_trains_the_projection_and_re_ranker_not_the_tower(world, tmp_path):
    from training.cli_finetune import main

    before = load_file(str(world.checkpoint / "model.safetensors"))
    changed = {}
    for detach in (True, False):
        out = tmp_path / f"detach-{detach}"
        # The open questions weigh 0 and nothing decays: only the anchor and the re-ranker can move a weight.
        code = main(["--task", "open-qa", "--init", str(world.checkpoint), "--data", str(world.root), "--out", str(out),
                     "--no-freeze-video", "--per-clip", "--retrieval-weight", "1", "--rerank-weight", "1",
                     "--rerank-group", "2", "--question-type-weight", "color=0", "--weight-decay", "0",
                     "--max-steps", "2", "--batch-size", "3", "--lr", "1e-3", "--warmup-steps", "0",
                     "--workers", "0", "--no-cache", "--quiet"] + (["--detach-anchor"] if detach else []))
        assert code == 0
        after = load_file(str(out / "final" / "model.safetensors"))
        changed[detach] = {n.split(".")[0] for n in before if not torch.equal(before[n], after[n])}
    assert changed[True] >= {"video_proj", "match_head", "fusion"} and "video_encoder" not in changed[True]
    assert "video_encoder" in changed[False]  # the same run with the anchor's gradient into the tower


def test_in_batch_groups_put_the_own_clip_first_then_the_closest_others():
    cosine = torch.tensor([[0.9, 0.5, 0.8, 0.1],
                           [0.2, 0.7, 0.3, 0.6],
                           [0.8, 0.1, 0.4, 0.9],
                           [0.3, 0.2, 0.1, 0.5]])
    caption_ids = torch.tensor([[1, 5, 6], [1, 7, 0], [1, 5, 6], [1, 8, 0]])  # captions 0 and 2 are the same
    groups = in_batch_groups(cosine, caption_ids, group=3)
    # caption 0: clip 2 is as good as its own (same caption), so never a negative; then 1 (0.5), 3 (0.1)
    assert groups.tolist() == [[0, 1, 3], [1, 3, 2], [2, 3, 1], [3, 0, 1]]
    assert in_batch_groups(cosine, caption_ids, group=8).shape == (4, 4)  # never more than the batch
    assert in_batch_groups(cosine[:2], caption_ids, group=3).tolist() == [[0, 1, 3], [1, 3, 2]]  # a subset


def test_questions_per_clip_keeps_a_fresh_subset_each_epoch():
    items = [{"row": r, "question": f"q{r}-{k}", "label": 0, "candidates": None} for r in range(3) for k in range(5)]
    items.append({"row": 3, "question": "q3-0", "label": 0, "candidates": None})  # a clip with one question
    dataset = QuestionDataset(items, per_clip=True, questions_per_clip=2)
    drawn = [dataset[i]["members"] for i in range(4)]
    assert [len(m) for m in drawn] == [2, 2, 2, 1]
    for unit, members in zip(dataset.units, drawn, strict=True):
        assert all(m in unit for m in members) and members == sorted(members, key=unit.index)  # in question order
    assert [dataset[i]["members"] for i in range(4)] == drawn  # seeded: the same within an epoch
    epochs = set()
    for epoch in range(6):
        dataset.epoch = epoch
        epochs.add(tuple(m["question"] for i in range(3) for m in dataset[i]["members"]))
    assert len(epochs) > 1
    with pytest.raises(ValueError, match="questions_per_clip needs per_clip"):
        QuestionDataset(items, questions_per_clip=2)


def test_end_to_end_qa_trains_the_re_ranker_from_the_anchor_step(world, tmp_path):
    from training.cli_finetune import main

    out = tmp_path / "rerank-in-qa"
    code = main(["--task", "open-qa", "--init", str(world.checkpoint), "--data", str(world.root), "--out", str(out),
                 "--no-freeze-video", "--per-clip", "--rerank-weight", "0.5", "--rerank-group", "3",
                 "--retrieval-from-step", "1", "--max-steps", "3", "--batch-size", "3", "--lr", "1e-3",
                 "--warmup-steps", "0", "--log-every", "1", "--workers", "0", "--no-cache", "--quiet"])
    assert code == 0
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert ["listwise" in h for h in history] == [False, True, True]
    assert all("info_nce" not in h for h in history)  # no --retrieval-weight: re-ranking alone
    for h in history[1:]:
        assert h["loss"] == pytest.approx(h["open_qa"] + 0.5 * (h["listwise"] + h["matching"]), rel=1e-4)
    assert json.loads((out / "run_config.json").read_text())["rerank_weight"] == 0.5
    before = load_file(str(world.checkpoint / "model.safetensors"))
    after = load_file(str(out / "final" / "model.safetensors"))
    assert any(not torch.equal(before[n], after[n]) for n in before if n.startswith("match_head."))

    subset = tmp_path / "subset"
    assert main(["--task", "open-qa", "--init", str(world.checkpoint), "--data", str(world.root), "--out", str(subset),
                 "--no-freeze-video", "--per-clip", "--rerank-weight", "1", "--rerank-group", "2",
                 "--rerank-captions", "1", "--questions-per-clip", "1", "--max-steps", "1", "--batch-size", "3",
                 "--warmup-steps", "0", "--log-every", "1", "--workers", "0", "--no-cache", "--quiet"]) == 0
    run_config = json.loads((subset / "run_config.json").read_text())
    assert run_config["rerank_captions"] == 1 and run_config["questions_per_clip"] == 1
    assert "listwise" in json.loads((subset / "metrics.jsonl").read_text().splitlines()[0])


def test_rerank_fine_tune_keeps_training_the_qa_head_with_qa_weight(world, tmp_path):
    from training.cli_finetune import main

    qa_run = tmp_path / "qa"
    assert main(["--task", "open-qa", "--init", str(world.checkpoint), "--data", str(world.root), "--out",
                 str(qa_run), "--max-steps", "1", "--batch-size", "4", "--warmup-steps", "0", "--quiet"]) == 0
    out = tmp_path / "rerank-qa"
    assert main(["--task", "rerank", "--init", str(qa_run / "final"), "--data", str(world.root), "--out", str(out),
                 "--rerank-group", "3", "--qa-weight", "1", "--max-steps", "2", "--batch-size", "4",
                 "--warmup-steps", "0", "--log-every", "1", "--quiet"]) == 0
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all({"listwise", "matching", "open_qa"} <= set(h) for h in history)
    before = load_file(str(qa_run / "final" / "model.safetensors"))
    after = load_file(str(out / "final" / "model.safetensors"))
    assert any(not torch.equal(before[n], after[n]) for n in before if n.startswith("qa_head."))
    assert json.loads((out / "run_config.json").read_text())["qa_weight"] == 1
    with pytest.raises(SystemExit, match="--qa-weight needs"):
        main(["--task", "rerank", "--init", str(world.checkpoint), "--data", str(world.root),
              "--out", str(tmp_path / "bad"), "--qa-weight", "1", "--max-steps", "1", "--quiet"])


def test_retrieval_anchor_needs_end_to_end_clip_batches(world, tmp_path):
    from training.cli_finetune import main

    with pytest.raises(SystemExit, match="--retrieval-weight and --rerank-weight need"):
        main(["--task", "open-qa", "--init", str(world.checkpoint), "--data", str(world.root),
              "--out", str(tmp_path / "bad"), "--retrieval-weight", "1", "--max-steps", "1", "--quiet"])


def test_qa_video_skip_head_reads_the_tokens_and_survives_a_checkpoint(world, tmp_path):
    from training.cli_finetune import main

    out = tmp_path / "skip"
    code = main(["--task", "open-qa", "--init", str(world.checkpoint), "--data", str(world.root), "--out", str(out),
                 "--qa-video-skip", "--max-steps", "2", "--batch-size", "3", "--warmup-steps", "0",
                 "--token-batch-size", "4", "--quiet"])
    assert code == 0
    model = Clover.from_pretrained(out / "final").eval()
    assert model.config.heads.qa_video_skip and model.qa_head.video_readout is not None
    tokens = torch.randn(2, *model.video_token_shape)
    logits = model.answer_open(tokens, ["what color is the circle?"] * 2)
    assert logits.shape == (2, len(model.answer_vocab))
    changed = tokens.clone()
    changed[1] += 3 * torch.randn_like(changed[1])  # the second clip's tokens, and so its max, differ
    again = model.answer_open(changed, ["what color is the circle?"] * 2)
    assert torch.allclose(again[0], logits[0], atol=1e-5) and not torch.allclose(again[1], logits[1])
    with pytest.raises(ValueError, match="reads the video tokens"):
        model.qa_head(torch.zeros(1, model.text_encoder.config.hidden_size))


def open_questions_on_tokens(world, model):
    """Two open questions per clip of the world, on cached tokens: (items, collate)."""
    samples = [Sample(f"v{i}", str(world.root / "videos" / f"v{i}.mp4"), [], [open_q(c), open_q(COLORS[(i + 1) % 6])])
               for i, c in enumerate(COLORS)]
    tokens, rows = cache_video_tokens(model, samples, batch_size=8)
    items = question_items(samples, rows, model.answer_vocab, choice_questions=False)
    return items, QACollator(tokens, model.tokenizer, model.config.text.max_length)


def test_answered_questions_are_fused_with_the_keep_probability_and_weighted_by_its_inverse(world):
    model = Clover.from_pretrained(world.checkpoint)
    model.set_answer_vocab(["red", "blue", "green"])
    items, collate = open_questions_on_tokens(world, model)
    batch = collate(items)
    objective = QAObjective(open_gamma=2.0, answered_keep=0.5, num_questions=len(items))
    answered = torch.tensor([i % 3 == 0 for i in range(len(items))])
    objective.last_answer_p[answered] = 0.95  # above ANSWERED_P
    model.eval()
    with torch.no_grad():
        loss, terms = objective(model, batch, torch.Generator().manual_seed(5))
        log_probs = model.open_qa_logits(batch["video_tokens"].float(), batch).log_softmax(-1)
    kept = ~answered | (torch.rand(len(items), generator=torch.Generator().manual_seed(5)) < 0.5)
    assert 0 < int(kept.sum()) < len(items) and not kept[answered].all()
    reference = 0.0
    for i in kept.nonzero().flatten().tolist():
        lp = log_probs[i, batch["open_labels"][i]]
        reference += (2.0 if answered[i] else 1.0) * -(1 - lp.exp()) ** 2 * lp
    assert loss.item() == pytest.approx(reference.item() / len(items), rel=1e-5)
    assert terms["fused_open"].item() == pytest.approx(kept.float().mean().item())
    # fused questions now hold their p(answer); the others keep the old value
    p = log_probs.exp().gather(1, batch["open_labels"][:, None]).squeeze(1)
    assert torch.allclose(objective.last_answer_p[kept], p[kept], atol=1e-6)
    assert torch.equal(objective.last_answer_p[~kept], torch.full((int((~kept).sum()),), 0.95))


def test_skipping_answered_questions_keeps_the_expected_loss(world):
    model = Clover.from_pretrained(world.checkpoint)
    model.set_answer_vocab(["red", "blue", "green"])
    items, collate = open_questions_on_tokens(world, model)
    batch = collate(items)
    model.eval()
    with torch.no_grad():
        full, _ = QAObjective()(model, batch)
        objective = QAObjective(answered_keep=0.25, num_questions=len(items))
        draws = []
        for seed in range(400):
            objective.last_answer_p.fill_(1.0)  # every question answered: each fused with p 0.25, weight 4
            draws.append(objective(model, batch, torch.Generator().manual_seed(seed))[0].item())
    assert sum(draws) / len(draws) == pytest.approx(full.item(), rel=0.1)
    assert min(draws) < full.item() < max(draws)


def qa_trainer(world, out, objective_table=None):
    torch.manual_seed(0)
    model = Clover.from_pretrained(world.checkpoint)
    model.set_answer_vocab(["red", "blue", "green"])
    freeze_video(model)
    items, collate = open_questions_on_tokens(world, model)
    objective = QAObjective(answered_keep=0.5, num_questions=len(items))
    if objective_table is not None:
        objective.last_answer_p = objective_table.clone()
    cfg = TrainConfig(out=str(out), batch_size=4, max_steps=7, warmup_steps=1, lr=1e-2, workers=0, save_every=3,
                      log_every=1, seed=0)
    return Trainer(model, objective, QuestionDataset(items, seed=0), collate, cfg)


def test_resume_restores_which_questions_were_answered(world, tmp_path):
    start = torch.tensor([1.0, 0.0] * 6)  # half the questions answered from the first step
    full = qa_trainer(world, tmp_path / "full", start).train(progress=False)
    assert min(r["fused_open"] for r in full) < 1
    # a table that says every question is answered: only the checkpoint's table gives the same losses
    resumed_trainer = qa_trainer(world, tmp_path / "resumed", torch.ones(12))
    resumed_trainer.resume(tmp_path / "full" / "checkpoint-0000003")
    resumed = resumed_trainer.train(progress=False)
    assert [r["loss"] for r in resumed] == [r["loss"] for r in full[3:]]
    assert [r["fused_open"] for r in resumed] == [r["fused_open"] for r in full[3:]]


def test_finetune_flags_that_need_another_flag_are_refused():
    from training.cli_finetune import parse_args

    base = ["--task", "open-qa", "--data", "d", "--out", "o"]
    for extra in (["--rerank-captions", "4"], ["--retrieval-from-step", "10"], ["--answered-keep", "0"],
                  ["--detach-anchor"]):
        with pytest.raises(SystemExit):
            parse_args(base + extra)
    assert parse_args(base + ["--rerank-weight", "1", "--rerank-captions", "4"]).rerank_captions == 4
    assert parse_args(base + ["--answered-keep", "0.25"]).answered_keep == 0.25
    with pytest.raises(SystemExit):
        parse_args(base + ["--answered-p", "0.5"])  # without --answered-keep
    for spec in ("shape", "shape=x", "=2", "shape=-1"):
        with pytest.raises(SystemExit):
            parse_args(base + ["--question-type-weight", spec])
    weighted = parse_args(base + ["--question-type-weight", "shape=4", "--question-type-weight", "color=0.5"])
    assert weighted.type_weights == {"shape": 4.0, "color": 0.5}


def test_answered_p_sets_what_counts_as_answered():
    objective = QAObjective(answered_keep=0.5, num_questions=3, answered_p=0.5)
    objective.last_answer_p = torch.tensor([0.6, 0.4, 0.0])
    kept = {tuple(objective.rows_to_fuse(torch.arange(3), torch.arange(3), torch.Generator().manual_seed(seed))[0].tolist())
            for seed in range(20)}
    assert kept == {(0, 1, 2), (1, 2)}  # only the question at 0.6 is ever skipped


def test_question_type_weights_scale_each_open_questions_loss(world):
    model = Clover.from_pretrained(world.checkpoint)
    model.set_answer_vocab(["red", "blue", "green"])
    samples = [Sample(f"v{i}", str(world.root / "videos" / f"v{i}.mp4"), [],
                      [open_q(c), open_q(COLORS[(i + 1) % 3], subtype="shape"), choice_q(i)])
               for i, c in enumerate(COLORS[:3])]
    tokens, rows = cache_video_tokens(model, samples, batch_size=4)
    items = question_items(samples, rows, model.answer_vocab, type_weights={"shape": 4.0})
    assert [item.get("weight") for item in items] == [1.0, 4.0, None] * 3  # multiple choice: no weight
    collate = QACollator(tokens, model.tokenizer, model.config.text.max_length)
    open_items = [item for item in items if item["candidates"] is None]
    batch = collate(open_items)
    assert batch["question_weights"].tolist() == [1.0, 4.0] * 3
    model.eval()
    with torch.no_grad():
        loss, _ = QAObjective(open_gamma=2.0)(model, batch)
        log_probs = model.open_qa_logits(batch["video_tokens"].float(), batch).log_softmax(-1)
    reference = sum(w * -(1 - lp[y].exp()) ** 2 * lp[y]
                    for lp, y, w in zip(log_probs, batch["open_labels"], batch["question_weights"], strict=True))
    assert loss.item() == pytest.approx(reference.item() / len(open_items), rel=1e-5)
    assert "question_weights" not in collate([item for item in question_items(samples, rows, model.answer_vocab)])


def test_a_question_type_weight_for_a_type_the_split_lacks_is_refused(world, tmp_path):
    from training.cli_finetune import main

    with pytest.raises(SystemExit, match="names shapes, but the open questions of the train split have the types color"):
        main(["--task", "open-qa", "--init", str(world.checkpoint), "--data", str(world.root), "--out",
              str(tmp_path / "typo"), "--question-type-weight", "shapes=4", "--max-steps", "1", "--batch-size", "3",
              "--token-batch-size", "4", "--quiet"])
