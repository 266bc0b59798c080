#!/usr/bin/env bash
# Device check (a CUDA machine; never in CI): the trainer on the tiny model with DeepSpeed bf16 and the hf
# backend, 2 steps, full fine-tuning and LoRA, each checkpointed, resumed for a third step and exported.
# Prints one line per check ("PASS <name>" / "FAIL <name> (log: ...)", "INFO ..."), exits 1 if any failed.
#
#   bash scripts/gpu_smoke.sh                     # in the repository root, with TurnRL's dependencies
#   WHEELS=/path/to/wheels bash scripts/gpu_smoke.sh   # first installs them offline from a wheel folder
#
# The device image has torch and transformers but not DeepSpeed, Hydra, gymnasium, wandb or peft: carry
# their wheels (`pip download deepspeed hydra-core omegaconf gymnasium wandb peft ... -d wheels`) and pass
# WHEELS. OUT (default: a temp dir) receives each run dir and each check's log.
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
OUT=${OUT:-$(mktemp -d -t turnrl-gpu-smoke-XXXX)}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 WANDB_MODE=disabled
failed=0

check() {  # check NAME COMMAND...: run it, log to $OUT/NAME.log, print PASS/FAIL
    local name=$1
    shift
    if "$@" >"$OUT/$name.log" 2>&1; then
        echo "PASS $name"
    else
        echo "FAIL $name (log: $OUT/$name.log)"
        failed=1
    fi
}

if [ -n "${WHEELS:-}" ]; then
    check install-wheels "$PYTHON" -m pip install --no-index --find-links "$WHEELS" \
        deepspeed hydra-core omegaconf gymnasium wandb peft psutil matplotlib
fi
check cuda-available "$PYTHON" -c "import torch; assert torch.cuda.is_available() and torch.cuda.is_bf16_supported()"

RUN=(env=bandit logger=console logger.progress_bar=false actor_rollout_ref.model.path=tiny-random
     actor_rollout_ref.rollout.name=hf actor_rollout_ref.actor.bf16=true actor_rollout_ref.rollout.response_length=8
     actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2 es_manager.train.env_groups=2 es_manager.train.group_size=2
     es_manager.val.env_groups=1 trainer.test_freq=-1 format_warmup.steps=0 trainer.save_freq=1
     trainer.max_ckpt_to_keep=5 algo=sr_grpo)

for variant in full lora; do
    extra=()
    [ "$variant" = lora ] && extra=(actor_rollout_ref.model.lora_rank=8)
    dir="$OUT/$variant"
    check "$variant-train-2-steps" "$PYTHON" scripts/train.py "${RUN[@]}" "${extra[@]}" \
        trainer.total_training_steps=2 "hydra.run.dir=$dir"
    check "$variant-checkpoint-verifies" "$PYTHON" -c "
from pathlib import Path
from algos.training.checkpoint_files import verify_manifest
verify_manifest(Path('$dir/checkpoints/global_step_2'))"
    check "$variant-resume-step-3" bash -c "'$PYTHON' scripts/train.py ${RUN[*]} ${extra[*]} \
        trainer.total_training_steps=3 trainer.resume=auto 'hydra.run.dir=$dir' | grep -q '(step 2)'"
    check "$variant-metrics-steps-1-2-3" "$PYTHON" -c "
import json, math
rows = [json.loads(line) for line in open('$dir/metrics.jsonl')]
assert [r['step'] for r in rows] == [1, 2, 3], [r['step'] for r in rows]
assert all(math.isfinite(r['actor/loss']) for r in rows)"
    check "$variant-export-loads-on-cuda" "$PYTHON" -c "
import torch
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained('$dir/hf_model').cuda()
assert torch.isfinite(model(torch.tensor([[1, 2, 3]]).cuda()).logits).all()"
    "$PYTHON" -c "
import json
row = [json.loads(line) for line in open('$dir/metrics.jsonl')][-1]
print('INFO $variant: sampler vs trainer (bf16) logprob_diff_mean %.2e max %.2e ratio_max %.3f' % (
    row.get('rollout/logprob_diff_mean', float('nan')), row.get('rollout/logprob_diff_max', float('nan')),
    row.get('rollout/ratio_max', float('nan'))))" 2>/dev/null || echo "INFO $variant: no rollout log-prob metrics"
done

check lora-checkpoint-under-a-tenth-of-full "$PYTHON" -c "
from pathlib import Path
size = lambda d: sum(p.stat().st_size for p in Path(d).rglob('*') if p.is_file())
full, lora = size('$OUT/full/checkpoints/global_step_2'), size('$OUT/lora/checkpoints/global_step_2')
print(full, lora)
assert lora <= 0.1 * full"
check lora-adapter-folder-exported test -f "$OUT/lora/hf_model/adapter/adapter_config.json"
echo "logs and run dirs: $OUT"
exit $failed
