"""A very small Clover for fast tests (random text tower, packaged MiniLM tokenizer)."""

from model import create_model

TINY_OVERRIDES = dict(
    num_frames=4,
    image_size=32,
    embed_dim=32,
    video={"patch_size": [2, 8, 8], "embed_dim": 16, "depths": [1, 1], "num_heads": [1, 2], "window_size": [2, 2, 2]},
    text={"pretrained": None, "num_layers": 3, "hidden_size": 32, "num_heads": 2, "intermediate_size": 64},
    heads={"video_hidden": 32, "qa_hidden": 16, "mc_hidden": 16},
)


def tiny_model(**extra):
    overrides = {**TINY_OVERRIDES, **extra}
    return create_model("clover-tiny", **overrides)


def deterministic_tiny_model():
    """No dropout or stochastic depth: two runs of a training step give identical numbers."""
    return tiny_model(
        text={**TINY_OVERRIDES["text"], "dropout": 0.0},
        video={**TINY_OVERRIDES["video"], "drop_path": 0.0},
    )
