"""Every run config shipped in training/configs/ loads by name into what the CLIs build from."""

import pytest

from model import get_model_config
from training.cli_train import CONFIG_DIR, load_config_file
from training.objective import objective_config
from training.trainer import TrainConfig

SHIPPED = sorted(path.stem for path in CONFIG_DIR.glob("*.json"))


def test_the_documented_recipe_configs_are_shipped():
    assert {"tiny-synthworld-fast", "tiny-synthworld-oneway", "qa-synthworld-e2e"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_config_builds_its_model_train_and_objective_sections(name):
    config = load_config_file(name)
    TrainConfig(**config.get("train", {}), out="unused")  # a misspelt key is a TypeError here
    get_model_config("clover-tiny", **config.get("model", {}))
    objective_config("clover", **config.get("objective", {}))


def test_the_oneway_recipe_pretrains_a_one_way_fusion_encoder():
    model = get_model_config("clover-tiny", **load_config_file("tiny-synthworld-oneway")["model"])
    assert model.fusion.video_attends_text is False and model.fusion.clip_token
