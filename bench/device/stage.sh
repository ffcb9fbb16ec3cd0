#!/bin/bash
# Stage what bench/device/run.sh needs on a bare GPU machine that has PyTorch but no network, into .gpu/
# (ignored by git; carry it). Run from the repository root after `make setup`.
#   .gpu/whl   wheels for Python 3.12 the GPU image lacks: decord and PyAV (the probe and the fallback decoder)
#   .gpu/tok   the bert-base-uncased tokenizer files of the packaged MiniLM (its 83 MB of weights stay behind)
#   .gpu/sw400 a 400-clip synthworld for the end-to-end `clover train` + `clover eval` on the GPU
set -euo pipefail
mkdir -p .gpu/whl .gpu/tok
grep -qx '/.gpu/' .git/info/exclude || echo /.gpu/ >> .git/info/exclude
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2010_x86_64 --platform manylinux2014_x86_64 \
  -d .gpu/whl decord==0.6.0 av==19.0.2
minilm=$(.venv/bin/python -c "from model.text_encoder import minilm_dir; print(minilm_dir())")
cp "$minilm"/{config.json,tokenizer.json,tokenizer_config.json,special_tokens_map.json,vocab.txt} .gpu/tok/
.venv/bin/clover synth --out .gpu/sw400 --num-videos 400 --seed 1 --quiet > /dev/null
du -sh .gpu
