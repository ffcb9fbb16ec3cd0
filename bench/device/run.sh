#!/bin/bash
# GPU benchmark run on a device machine, from the repository root after bench/device/stage.sh:
#   bash bench/device/run.sh OUTDIR        (DEV=cpu QUICK=1 NO_INSTALL=1 PY=.venv/bin/python for a dry run here)
# Each step has its own time limit and log; results and logs are tarred into OUTDIR/gpu.tar after every step.
# ONLY="prepare train-tiny ..." runs just the named steps (prepare is needed by every other one).
set -u
OUTDIR=${1:?}; PY=${PY:-python3}; DEV=${DEV:-cuda}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ -z "${NO_INSTALL:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
R=/tmp/gpuout; rm -rf $R; mkdir -p $R; M=/tmp/gpu-models
save() { tar -cf $OUTDIR/gpu.tar -C $R . ; }
step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2; touch $R/.mark
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then return; fi
  echo "=== $name ($(date +%T))"; local t0=$SECONDS
  timeout $limit "$@" > $R/$name.log 2>&1; local rc=$?
  echo "    rc=$rc in $((SECONDS - t0)) s"; tail -n 4 $R/$name.log
  for f in $(find bench/results -name '*.json' -newer $R/.mark); do cp "$f" "$R/$name-$(basename $f)"; done
  save
}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; $PY -c "import torch, transformers, timm, torchvision, decord, av; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__, 'timm', timm.__version__, 'torchvision', torchvision.__version__, 'decord', decord.__version__, 'av', av.__version__)"; nproc; } > $R/env.txt 2>&1
cat $R/env.txt
step prepare 120 $PY bench/device/prepare.py $M
if [ -n "${QUICK:-}" ]; then Q=--quick; B=4; S=2; else Q=; B=64; S=30; fi
step train-tiny 150 $PY bench/bench_training.py --model $M/clover-tiny.json --device $DEV --no-ddp --random-masking --batch $B --steps $S $Q
step model-tiny 120 $PY bench/bench_model.py --model $M/clover-tiny.json --device $DEV --batch $B $Q
step e2e-train 150 $PY -m service.cli train --data .gpu/sw400 --model $M/clover-tiny.json --config $M/train.json --out /tmp/run --device $DEV --max-steps ${E2E_STEPS:-150} --workers ${WORKERS:-12} --save-every 0 --quiet
step e2e-eval 90 $PY -m service.cli eval --checkpoint /tmp/run/final --data .gpu/sw400 --split test --device $DEV --json $R/e2e-eval.json
step train-base 150 $PY bench/bench_training.py --model $M/clover-base.json --device $DEV --no-ddp --random-masking --batch $((B / 4 > 1 ? B / 4 : 1)) --steps $((S / 3 > 1 ? S / 3 : 2)) $Q
step model-base 150 $PY bench/bench_model.py --model $M/clover-base.json --device $DEV --batch 16 --repeats 10 $Q
step train-tiny-b256 120 $PY bench/bench_training.py --model $M/clover-tiny.json --device $DEV --no-ddp --random-masking --batch $((B * 4)) --steps $((S / 3 > 1 ? S / 3 : 2)) $Q
echo "=== done ($(date +%T))"
