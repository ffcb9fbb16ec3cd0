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
from transformers import BertConfig, BertModel

out = Path(sys.argv[1])
tokenizer_dir = Path(".gpu/tok")
out.mkdir(parents=True, exist_ok=True)
for name in ("clover-tiny", "clover-base"):
    preset = json.loads(Path(f"model/configs/{name}.json").read_text())
    text = preset["text"]
    tower = out / f"{name}-text"
    tower.mkdir(exist_ok=True)
    for f in tokenizer_dir.iterdir():
        if f.name != "config.json":
            shutil.copy(f, tower / f.name)
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=30522, hidden_size=text["hidden_size"], num_hidden_layers=text["num_layers"],
                                num_attention_heads=text["num_heads"], intermediate_size=text["intermediate_size"]),
                     add_pooling_layer=False)
    bert.save_pretrained(tower)
    preset["text"]["pretrained"] = str(tower.resolve())
    (out / f"{name}.json").write_text(json.dumps(preset, indent=1))
train = json.loads(Path("training/configs/tiny-synthworld-b32.json").read_text())
train["objective"]["text_masking"] = "random"  # spaCy's wheels do not fit the carry either
(out / "train.json").write_text(json.dumps(train, indent=1))
print("prepared", sorted(p.name for p in out.iterdir()))
