"""Evaluation against brute-force references: the model's own embeddings, hand-built scores, stub models."""

import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from model.transforms import VideoTransform, sample_indices
from model.video_io import probe_video, read_frames
from tests.model.helpers import tiny_model
from tests.video_factory import write_video
from training.data import Sample, decode_clip
from training.evaluate import (
    ClipReader,
    EncodedVideos,
    encode_videos,
    evaluate,
    evaluate_qa,
    evaluate_retrieval,
    rerank_similarity,
)
from training.metrics import retrieval_metrics

CAPTIONS = ["a red circle moves left", "a blue square grows", "a green cross stays still",
            "a white triangle moves up", "a small yellow circle shrinks", "a large purple square moves down"]


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    samples = []
    for i, caption in enumerate(CAPTIONS):
        path = write_video(root / f"v{i}.mp4", num_frames=12, width=40, height=32, fps=8, seed=i)
        samples.append(Sample(video_id=f"v{i}", path=str(path), captions=[caption, f"{caption} slowly"]))
    torch.manual_seed(0)
    model = tiny_model().eval()
    return SimpleNamespace(root=root, samples=samples, model=model)


def reference_embeddings(model, samples, num_clips=1):
    """Decode each clip separately with sample_indices(num_clips) and encode it alone; average."""
    transform = VideoTransform(model.config.image_size)
    out = []
    with torch.no_grad():
        for sample in samples:
            info = probe_video(sample.path)
            idx = sample_indices(info.num_frames, model.config.num_frames, num_clips=num_clips).reshape(num_clips, -1)
            clips = torch.stack([transform(read_frames(sample.path, row, short_side=model.config.image_size))
                                 for row in idx])
            out.append(F.normalize(model.encode_video(clips).mean(0), dim=-1))
    return torch.stack(out)


def test_clip_reader_gives_the_clips_of_sample_indices(library):
    model, sample = library.model, library.samples[0]
    reader = ClipReader([sample], model.config.num_frames, model.config.image_size, num_clips=3)
    clips = reader[0]["clips"]  # (3, T, 3, S, S)
    info = probe_video(sample.path)
    idx = sample_indices(info.num_frames, model.config.num_frames, num_clips=3)
    transform = VideoTransform(model.config.image_size)
    for c in range(3):
        expected = transform(read_frames(sample.path, idx[c], short_side=model.config.image_size))
        torch.testing.assert_close(clips[c], expected)
    single = ClipReader([sample], model.config.num_frames, model.config.image_size)[0]["clips"][0]
    torch.testing.assert_close(single, VideoTransform(model.config.image_size)(
        decode_clip(sample, model.config.num_frames, model.config.image_size)))


def test_clip_reader_reports_broken_files(tmp_path, library):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    encoded = encode_videos(library.model, [library.samples[0], Sample("bad", str(broken), ["x"])])
    assert encoded.index == [0] and set(encoded.errors) == {1}
    assert encoded.embeddings.shape == (1, library.model.config.embed_dim)


@pytest.mark.parametrize("num_clips", [1, 2])
def test_retrieval_matches_brute_force_from_the_models_embeddings(library, num_clips):
    model, samples = library.model, library.samples
    result = evaluate(model, samples, num_clips=num_clips, batch_size=4, rerank_k=0, qa=False)
    video_e = reference_embeddings(model, samples, num_clips)
    with torch.no_grad():
        texts = model.tokenize([s.captions[0] for s in samples])
        text_e = model.encode_text(texts["input_ids"], texts["attention_mask"])
    sim = text_e @ video_e.T
    expected_t2v = retrieval_metrics(sim, list(range(len(samples))))
    expected_v2t = retrieval_metrics(sim.T, list(range(len(samples))))
    for name, expected in (("t2v", expected_t2v), ("v2t", expected_v2t)):
        for key, value in expected.items():
            assert result["retrieval"][name][key] == pytest.approx(value, abs=1e-6), (name, key)
    assert result["num_videos"] == len(samples) and result["retrieval"]["num_queries"] == len(samples)
    assert "t2v_rerank" not in result["retrieval"]


def test_all_captions_queries_every_caption(library):
    every = evaluate(library.model, library.samples, rerank_k=3, all_captions=True, qa=False)
    assert every["retrieval"]["num_queries"] == 2 * len(library.samples)
    assert set(every["retrieval"]) >= {"t2v", "v2t", "t2v_rerank"}
    assert set(every["retrieval"]["t2v"]) == {"R@1", "R@5", "R@10", "median_rank", "mean_rank"}


class StubMatcher(nn.Module):
    """match_score = 1 when the token grid's id (tokens[:, 0, 0]) equals the text, else 0."""

    device = torch.device("cpu")

    def __init__(self):
        super().__init__()
        self.calls = 0

    def match_score(self, video_tokens, texts):
        self.calls += 1
        return (video_tokens[:, 0, 0].float() == torch.tensor([float(t) for t in texts])).float()

    def rerank_scores(self, match, cosine):  # the match score alone (Clover adds a weighted cosine)
        return match


def test_rerank_reorders_only_the_top_k():
    torch.manual_seed(1)
    num_queries, num_videos, k = 7, 12, 4
    sim = torch.rand(num_queries, num_videos)
    tokens = torch.arange(num_videos).float().view(-1, 1, 1).expand(-1, 2, 3).contiguous()
    truth = [int(sim[q].argsort()[-(q % k) - 1]) for q in range(num_queries)]  # correct video at dual rank q%k
    reranked, top_k, match = rerank_similarity(StubMatcher(), sim, tokens, [str(t) for t in truth], k, batch_size=8)
    for q in range(num_queries):
        dual_order = sim[q].argsort(descending=True).tolist()
        new_order = reranked[q].argsort(descending=True).tolist()
        assert set(new_order[:k]) == set(dual_order[:k])  # same top-k set
        assert new_order[0] == truth[q]  # the matching video rises to the top
        assert [v for v in new_order[1:k]] == [v for v in dual_order[:k] if v != truth[q]]  # ties keep dual order
        assert new_order[k:] == dual_order[k:]
        torch.testing.assert_close(reranked[q, dual_order[k:]], sim[q, dual_order[k:]])  # scores below k untouched
    assert match.shape == (num_queries, k) and match.sum() == num_queries
    assert retrieval_metrics(reranked, truth)["R@1"] == 100.0
    assert retrieval_metrics(sim, truth)["R@1"] == pytest.approx(100.0 * 2 / 7)  # queries 0 and 4


def test_rerank_cannot_rescue_a_video_outside_the_top_k():
    sim = torch.tensor([[0.9, 0.8, 0.7, 0.1]])
    tokens = torch.arange(4).float().view(-1, 1, 1).expand(-1, 1, 1).contiguous()
    reranked, _, _ = rerank_similarity(StubMatcher(), sim, tokens, ["3"], k=2)
    assert reranked[0].argsort(descending=True).tolist() == [0, 1, 2, 3]


def test_a_perfect_reranker_lifts_every_top_k_hit_to_rank_1(library, monkeypatch):
    """Dual cosines from the tiny model, a stub fusion score that knows the answer: t2v R@1 becomes dual R@k."""
    model, samples = library.model, library.samples
    encoded = encode_videos(model, samples)
    ids = torch.arange(len(samples)).float().view(-1, 1, 1).expand(-1, 2, 2).contiguous()
    queries = [s.captions[0] for s in samples]
    stub = StubMatcher()
    monkeypatch.setattr(model.config.heads, "rerank_cosine_weight", 0.0)  # the stub's score alone decides
    monkeypatch.setattr(model, "match_score",
                        lambda tokens, texts: stub.match_score(tokens, [str(queries.index(t)) for t in texts]))
    result = evaluate_retrieval(model, EncodedVideos(encoded.index, encoded.embeddings, ids),
                                [s.captions for s in samples], rerank_k=3)
    with torch.no_grad():
        texts = model.tokenize(queries)
        sim = model.encode_text(texts["input_ids"], texts["attention_mask"]) @ encoded.embeddings.T
    dual_at_3 = retrieval_metrics(sim, list(range(len(samples))), ks=(3,))["R@3"]
    assert result["t2v_rerank"]["R@1"] == pytest.approx(dual_at_3)
    assert result["t2v_rerank"]["R@10"] == result["t2v"]["R@10"]
    assert result["rerank_k"] == 3 and stub.calls >= 1


class StubAnswerer(nn.Module):
    """Answers from the token grid: open answer id at tokens[:, 0, 0], chosen candidate at tokens[:, 0, 1]."""

    answer_vocab = ["red", "blue", "green"]
    device = torch.device("cpu")

    def __init__(self):
        super().__init__()
        self.qa_head = nn.Linear(1, 1)

    def answer_open(self, tokens, questions):
        return F.one_hot(tokens[:, 0, 0].long(), len(self.answer_vocab)).float()

    def answer_choice(self, tokens, questions, candidates):
        return F.one_hot(tokens[:, 0, 1].long(), len(candidates[0])).float()


def test_qa_accuracy_per_type_and_subtype():
    # video 0 "says" red / candidate 2; video 1 says green / candidate 0
    tokens = torch.tensor([[[0.0, 2.0]], [[2.0, 0.0]]])
    encoded = EncodedVideos([0, 1], torch.zeros(2, 4), tokens)
    five = ["a", "b", "c", "d", "e"]
    questions = [
        [{"type": "open", "subtype": "color", "question": "q", "answer": "Red", "candidates": None},  # right
         {"type": "open", "subtype": "shape", "question": "q", "answer": "circle", "candidates": None},  # wrong
         {"type": "action", "subtype": "action", "question": "q", "answer": "c", "candidates": five}],  # right
        [{"type": "open", "subtype": "color", "question": "q", "answer": "blue", "candidates": None},  # wrong
         {"type": "transition", "subtype": "after", "question": "q", "answer": "a", "candidates": five,
          "answer_index": 0},  # right
         {"type": "transition", "subtype": "before", "question": "q", "answer": "b", "candidates": five}],  # wrong
    ]
    result = evaluate_qa(StubAnswerer(), encoded, questions)
    assert result["open"]["num_questions"] == 3
    assert result["open"]["overall"] == pytest.approx(100 / 3)
    assert result["open"]["color"] == 50.0 and result["open"]["shape"] == 0.0
    assert result["open"]["answers_in_vocab"] == pytest.approx(200 / 3)
    assert result["action"] == {"overall": 100.0, "num_questions": 1}
    assert result["transition"] == {"overall": 50.0, "after": 100.0, "before": 0.0, "num_questions": 2}


def test_open_qa_is_skipped_without_a_head(library):
    samples = [Sample(s.video_id, s.path, s.captions, questions=[
        {"type": "open", "subtype": "color", "question": "what color?", "answer": "red", "candidates": None},
        {"type": "caption", "subtype": "caption", "question": "which caption?", "answer": CAPTIONS[i],
         "candidates": CAPTIONS[:5]}]) for i, s in enumerate(library.samples[:4])]
    result = evaluate(library.model, samples, rerank_k=2)
    assert "skipped" in result["qa"]["open"] and result["qa"]["open"]["num_questions"] == len(samples)
    assert result["qa"]["caption"]["num_questions"] == len(samples)
    # The retrieval-style answer is the candidate closest to the video in the dual space.
    video_e = reference_embeddings(library.model, library.samples[:4])
    correct = 0
    with torch.no_grad():
        for i, sample in enumerate(samples):
            q = sample.questions[1]
            texts = library.model.tokenize(q["candidates"])
            cos = library.model.encode_text(texts["input_ids"], texts["attention_mask"]) @ video_e[i]
            correct += q["candidates"][int(cos.argmax())] == q["answer"]
    assert result["qa"]["caption_dual"]["overall"] == pytest.approx(100.0 * correct / len(samples))


def test_cli_writes_the_json(library, tmp_path):
    from training.cli_eval import main

    checkpoint = library.model.save_pretrained(tmp_path / "ckpt")
    manifest = tmp_path / "test.jsonl"
    manifest.write_text("".join(json.dumps({"video_id": s.video_id, "path": s.path, "captions": s.captions}) + "\n"
                                for s in library.samples))
    out = tmp_path / "eval.json"
    code = main(["--checkpoint", str(checkpoint), "--data", str(tmp_path), "--split", "test", "--json", str(out),
                 "--rerank-k", "2", "--max-videos", "4", "--workers", "0", "--quiet"])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["num_videos"] == 4 and result["split"] == "test" and result["checkpoint"] == str(checkpoint)
    assert set(result["retrieval"]) >= {"t2v", "v2t", "t2v_rerank"}
    assert 0.0 <= result["retrieval"]["t2v_rerank"]["R@1"] <= 100.0


def test_rerank_score_adds_the_weighted_cosine(library, monkeypatch):
    """Clover.rerank_scores = match log-odds + weight x cosine: a large weight keeps the dual order, weight 0
    orders by the fusion score alone."""
    model = library.model
    match, cosine = torch.tensor([0.0, 3.0, -1.0]), torch.tensor([0.5, 0.1, 0.9])
    monkeypatch.setattr(model.config.heads, "rerank_cosine_weight", 20.0)
    torch.testing.assert_close(model.rerank_scores(match, cosine), match + 20.0 * cosine)
    sim = torch.tensor([[0.9, 0.5, 0.1]])
    tokens = torch.zeros(3, *model.video_token_shape)
    monkeypatch.setattr(model.config.heads, "rerank_cosine_weight", 1e6)
    reranked, _, _ = rerank_similarity(model, sim, tokens, ["a small red circle moves left"], k=3)
    assert reranked[0].argsort(descending=True).tolist() == [0, 1, 2]
    monkeypatch.setattr(model.config.heads, "rerank_cosine_weight", 0.0)
    monkeypatch.setattr(model, "match_score", lambda tokens, texts: torch.tensor([-1.0, 0.0, 2.0]))
    reranked, _, _ = rerank_similarity(model, sim, tokens, ["a small red circle moves left"], k=3)
    assert reranked[0].argsort(descending=True).tolist() == [2, 1, 0]
