#!/usr/bin/env bash
# The Dr. GRPO / Dr. GRPO+ Soft ablation (seed "Running Experiments"): six jobs per seed,
#
#   stage 1, no filtering (top_k = env_groups, keep all):  GRPO-NoFilter  DrGRPO-NoFilter  DrGRPO-Soft
#   stage 2, hard filtering (top_k = env_groups / 2):      GRPO-Filter0.5 DrGRPO-Filter0.5 DrGRPO-Soft-Filter0.5
#
# scheduled over a GPU list, one job per GPU at a time (more jobs than GPUs queue), or one after
# another on CPU. Each job gets its own run dir <out>/<task>/<job>-seed<s> (stdout+stderr in job.log
# there, metrics.jsonl, checkpoints, hf_model) and its own wandb run, grouped as drgrpo-compare-<task>
# (logger.wandb.group). The six jobs of a seed train on the same levels (a paired comparison); each seed
# has levels of its own (es_manager.train_seed_start = 10000 + 100000 * seed), so seeds are independent.
# A failing job is reported and the others go on; the exit status is 1 if any job failed.
#
# Scale (conf/scale): --model_size 0.5B/3B/7B runs at scale=ragen, RAGEN's GPU settings (group_size 16,
# 5 turns, 400-token replies, lr 1e-6, ...) on RAGEN's env configs (sokoban -> coord_sokoban, frozenlake ->
# coord_frozenlake, bandit validated on Bandit + BanditTest); 135M runs at scale=cpu on the plain envs.
# --scale overrides the choice. Before anything runs the script prints the composed key settings
# (scripts/config_summary.py, which also validates them); --dry-run prints those and the commands only.
#
# Environment: TURNRL_PYTHON (interpreter; default the repo's .venv), TURNRL_COMPARE_DIR (run root;
# default <repo>/runs/compare). Plot the result with:
#   python scripts/plot_compare.py '<out>/<task>/*' --out <out>/<task>/summary
set -u

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEFAULT_PYTHON="$REPO/.venv/bin/python"
[[ -x "$DEFAULT_PYTHON" ]] || DEFAULT_PYTHON="python3"
PYTHON="${TURNRL_PYTHON:-$DEFAULT_PYTHON}"
OUT_ROOT="${TURNRL_COMPARE_DIR:-$REPO/runs/compare}"

JOBS=(GRPO-NoFilter DrGRPO-NoFilter DrGRPO-Soft GRPO-Filter0.5 DrGRPO-Filter0.5 DrGRPO-Soft-Filter0.5)
declare -A JOB_ALGO=(
  [GRPO-NoFilter]=grpo [DrGRPO-NoFilter]=drgrpo [DrGRPO-Soft]=drgrpo_soft
  [GRPO-Filter0.5]=grpo [DrGRPO-Filter0.5]=drgrpo [DrGRPO-Soft-Filter0.5]=drgrpo_soft
)
declare -A MODEL_CONFIG=(
  [135M]=smollm2_135m [0.5B]=qwen2.5_0.5b_instruct [3B]=qwen2.5_3b_instruct [7B]=qwen2.5_7b_instruct
)
declare -A MODEL_SCALE=([135M]=cpu [0.5B]=ragen [3B]=ragen [7B]=ragen)
declare -A RAGEN_ENV=([bandit]=bandit [sokoban]=coord_sokoban [frozenlake]=coord_frozenlake)  # _1/_2/_3 configs

usage() {
  cat <<EOF
Usage: $(basename "$0") [options] [-- HYDRA_OVERRIDE ...]

  --task TASK          bandit | sokoban | frozenlake (required)
  --steps N            training steps per job (default 200)
  --model_size SIZE    135M (embedded SmolLM2, CPU) | 0.5B | 3B | 7B (default 3B)
  --scale SCALE        cpu | ragen (default: cpu for 135M, ragen for the Qwen sizes)
  --gpus LIST          comma-separated GPU ids, one job per GPU at a time (default 0,1,2,3,4,5,6,7),
                       or 'cpu' to run them on this machine's CPU, --cpu_jobs at a time
  --cpu_jobs N         with --gpus cpu: jobs at a time (default 1), each with OMP_NUM_THREADS =
                       cores / N unless OMP_NUM_THREADS is set
  --seeds LIST         comma-separated training seeds (default 0)
  --env_groups N       env groups per step, even, >= 2 (default 8): NoFilter keeps top_k = N groups,
                       Filter0.5 keeps top_k = N/2
  --env_config NAME    the conf/env file to run (default: TASK at scale cpu, RAGEN's coord_* env at
                       scale ragen), e.g. coord_frozenlake for the seed's FrozenLake on CPU
  --dry-run            print the composed key settings and the commands, run nothing
  -h, --help           this message

Overrides after '--' go to every job, e.g. -- es_manager.train.group_size=16 logger.wandb.mode=online
EOF
}

die_usage() {
  echo "error: $1" >&2
  usage >&2
  exit 2
}

is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }

TASK="" STEPS=200 MODEL_SIZE=3B GPUS="0,1,2,3,4,5,6,7" SEEDS="0" ENV_GROUPS=8 DRY_RUN=0 SCALE="" ENV_CONFIG="" CPU_JOBS=1
EXTRA=()
while (($#)); do
  case "$1" in
    --task | --steps | --model_size | --gpus | --seeds | --env_groups | --scale | --env_config | --cpu_jobs)
      (($# >= 2)) || die_usage "$1 needs a value"
      case "$1" in
        --task) TASK="$2" ;;
        --steps) STEPS="$2" ;;
        --model_size) MODEL_SIZE="$2" ;;
        --gpus) GPUS="$2" ;;
        --seeds) SEEDS="$2" ;;
        --env_groups) ENV_GROUPS="$2" ;;
        --scale) SCALE="$2" ;;
        --env_config) ENV_CONFIG="$2" ;;
        --cpu_jobs) CPU_JOBS="$2" ;;
      esac
      shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) die_usage "unknown option '$1'" ;;
  esac
done

case "$TASK" in
  bandit | sokoban | frozenlake) ;;
  "") die_usage "--task is required" ;;
  *) die_usage "--task '$TASK' is not one of bandit, sokoban, frozenlake" ;;
esac
{ is_uint "$STEPS" && ((STEPS >= 1)); } || die_usage "--steps '$STEPS' must be an integer >= 1"
[[ -n "${MODEL_CONFIG[$MODEL_SIZE]+set}" ]] || die_usage "--model_size '$MODEL_SIZE' is not one of 135M, 0.5B, 3B, 7B"
SCALE="${SCALE:-${MODEL_SCALE[$MODEL_SIZE]}}"
[[ "$SCALE" == cpu || "$SCALE" == ragen ]] || die_usage "--scale '$SCALE' is not one of cpu, ragen"
if [[ -z "$ENV_CONFIG" ]]; then
  ENV_CONFIG="$TASK"
  [[ "$SCALE" == ragen ]] && ENV_CONFIG="${RAGEN_ENV[$TASK]}"
fi
[[ -f "$REPO/conf/env/$ENV_CONFIG.yaml" ]] ||
  die_usage "--env_config '$ENV_CONFIG' is not a file in conf/env/ ($(cd "$REPO/conf/env" && ls *.yaml | sed 's/\.yaml$//' | tr '\n' ' '))"
{ is_uint "$ENV_GROUPS" && ((ENV_GROUPS >= 2 && ENV_GROUPS % 2 == 0)); } ||
  die_usage "--env_groups '$ENV_GROUPS' must be an even integer >= 2 (Filter0.5 keeps half)"
[[ "$SEEDS" =~ ^[0-9]+(,[0-9]+)*$ ]] || die_usage "--seeds '$SEEDS' must be comma-separated integers, e.g. 0,1"
[[ "$GPUS" == cpu || "$GPUS" =~ ^[0-9]+(,[0-9]+)*$ ]] ||
  die_usage "--gpus '$GPUS' must be comma-separated GPU ids, e.g. 0,1, or 'cpu'"
{ is_uint "$CPU_JOBS" && ((CPU_JOBS >= 1)); } || die_usage "--cpu_jobs '$CPU_JOBS' must be an integer >= 1"
[[ "$GPUS" == cpu ]] || ((CPU_JOBS == 1)) || die_usage "--cpu_jobs needs --gpus cpu"
IFS=, read -r -a SEED_LIST <<<"$SEEDS"
IFS=, read -r -a GPU_LIST <<<"$GPUS"
THREAD_ENV=()  # CPU jobs side by side share the cores instead of each taking all of them
if [[ "$GPUS" == cpu ]]; then
  SLOTS=()
  for ((slot = 0; slot < CPU_JOBS; slot++)); do SLOTS+=("cpu$slot"); done
  if ((CPU_JOBS > 1)) && [[ -z "${OMP_NUM_THREADS:-}" ]]; then
    threads=$(($(nproc) / CPU_JOBS))
    ((threads >= 1)) || threads=1
    THREAD_ENV=("OMP_NUM_THREADS=$threads" "MKL_NUM_THREADS=$threads")
  fi
else
  SLOTS=("${GPU_LIST[@]}")
fi
GROUP="drgrpo-compare-$TASK"

# job_command JOB SEED DEVICE: fills CMD with the job's full command (env assignments, then train.py).
job_command() {
  local job="$1" seed="$2" device="$3" top_k="$ENV_GROUPS"
  [[ "$job" == *Filter0.5 ]] && top_k=$((ENV_GROUPS / 2))
  CMD=(env "CUDA_VISIBLE_DEVICES=$device" "${THREAD_ENV[@]}"
    "$PYTHON" "$REPO/scripts/train.py"
    "scale=$SCALE" "env=$ENV_CONFIG" "algo=${JOB_ALGO[$job]}" "model=${MODEL_CONFIG[$MODEL_SIZE]}" "seed=$seed"
    "logger.wandb.group=$GROUP"
    "trainer.total_training_steps=$STEPS"
    "es_manager.train.env_groups=$ENV_GROUPS"
    "actor_rollout_ref.rollout.rollout_filter_strategy=top_k"
    "actor_rollout_ref.rollout.rollout_filter_value=$top_k"
    "trainer.experiment_name=$job-seed$seed"
    "es_manager.train_seed_start=$((10000 + 100000 * seed))"
    "system.CUDA_VISIBLE_DEVICES=$device"
    "hydra.run.dir=$OUT_ROOT/$TASK/$job-seed$seed"
    "${EXTRA[@]}")
}

QUEUE=()  # "job seed", seed-major so that all six jobs of seed 0 start first
for seed in "${SEED_LIST[@]}"; do
  for job in "${JOBS[@]}"; do QUEUE+=("$job $seed"); done
done

# The key settings every job shares (the commands differ in algo, filter value, seed and GPU only).
job_command "${JOBS[0]}" "${SEED_LIST[0]}" ""
echo "scale=$SCALE env=$ENV_CONFIG model=${MODEL_CONFIG[$MODEL_SIZE]}; key settings of every job:"
"$PYTHON" "$REPO/scripts/config_summary.py" "${CMD[@]:$((4 + ${#THREAD_ENV[@]}))}" || exit 2

if ((DRY_RUN)); then
  echo "commands:"
  for index in "${!QUEUE[@]}"; do
    read -r job seed <<<"${QUEUE[$index]}"
    device=""  # cpu: no GPU visible; GPUs: the first round's assignment (later, the first free GPU)
    [[ "$GPUS" != cpu ]] && device="${GPU_LIST[$((index % ${#GPU_LIST[@]}))]}"
    job_command "$job" "$seed" "$device"
    printf -v line '%q ' "${CMD[@]}"
    echo "${line% }"
  done
  exit 0
fi

FAILED=()
declare -A SLOT_PID=() SLOT_JOB=() SLOT_START=()

# launch JOB SEED DEVICE: starts the job in the background; its pid is in LAUNCHED_PID.
launch() {
  local run_dir="$OUT_ROOT/$TASK/$1-seed$2"
  mkdir -p "$run_dir"
  job_command "$1" "$2" "$3"
  echo "[start] $1-seed$2${3:+ on GPU $3}  (log: $run_dir/job.log)"
  "${CMD[@]}" >"$run_dir/job.log" 2>&1 &
  LAUNCHED_PID=$!
}

# finish NAME STATUS START: reports a finished job, remembering it if it failed.
finish() {
  local log="$OUT_ROOT/$TASK/$1/job.log"
  if (($2 == 0)); then
    echo "[done]  $1  ($((SECONDS - $3)) s)"
  else
    echo "[FAIL]  $1  exit $2 after $((SECONDS - $3)) s; last lines of $log:" >&2
    tail -n 5 "$log" | sed 's/^/        /' >&2
    FAILED+=("$1")
  fi
}

stop_jobs() {
  echo "stopping: sending SIGTERM to the running jobs (they checkpoint and exit)" >&2
  for slot in "${!SLOT_PID[@]}"; do kill -TERM "${SLOT_PID[$slot]}" 2>/dev/null; done
  wait
  exit 130
}
trap stop_jobs INT TERM

echo "$((${#QUEUE[@]})) jobs -> $OUT_ROOT/$TASK (wandb group $GROUP)"
next=0
while ((next < ${#QUEUE[@]})) || ((${#SLOT_PID[@]} > 0)); do
  for slot in "${SLOTS[@]}"; do
    if [[ -n "${SLOT_PID[$slot]+set}" ]] && ! kill -0 "${SLOT_PID[$slot]}" 2>/dev/null; then
      wait "${SLOT_PID[$slot]}"
      finish "${SLOT_JOB[$slot]}" $? "${SLOT_START[$slot]}"
      unset "SLOT_PID[$slot]" "SLOT_JOB[$slot]" "SLOT_START[$slot]"
    fi
    if [[ -z "${SLOT_PID[$slot]+set}" ]] && ((next < ${#QUEUE[@]})); then
      read -r job seed <<<"${QUEUE[$next]}"
      next=$((next + 1))
      SLOT_START[$slot]=$SECONDS
      device="$slot"
      [[ "$GPUS" == cpu ]] && device=""
      launch "$job" "$seed" "$device"
      SLOT_PID[$slot]=$LAUNCHED_PID
      SLOT_JOB[$slot]="$job-seed$seed"
    fi
  done
  sleep 1
done

if ((${#FAILED[@]})); then
  echo "${#FAILED[@]} of ${#QUEUE[@]} jobs failed: ${FAILED[*]}" >&2
  exit 1
fi
echo "all ${#QUEUE[@]} jobs finished: $OUT_ROOT/$TASK"
