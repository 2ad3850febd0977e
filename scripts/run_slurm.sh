#!/usr/bin/env bash
# One experiment as a Slurm job:
#   sbatch scripts/run_slurm.sh configs/experiments/lite_iid.yaml [--set key=value ...] [--resume]
# The same config over seeds as an array (FEDRANKLITE_SEED_FROM_ARRAY=1: seed = the array task id, unless the
# arguments set the seed themselves):
#   FEDRANKLITE_SEED_FROM_ARRAY=1 sbatch --array=0-9 scripts/run_slurm.sh configs/experiments/lite_iid.yaml
# A grid of runs (cells x axes x seeds, throttled, failed runs resubmitted) is a sweep instead:
#   fedranklite sweep SPEC.yaml --launcher slurm --workers 8
# Every argument is passed to `fedranklite run` as a word of its own: nothing here is evaluated as shell text.
#SBATCH --job-name=fedranklite
#SBATCH --cpus-per-task=4
#SBATCH --mem=16G
#SBATCH --time=02:00:00
#SBATCH --output=slurm-%x-%A_%a.out
set -euo pipefail
if [ $# -lt 1 ] || [[ "$1" == -* ]]; then
  echo "usage: sbatch $0 CONFIG.yaml [--set key=value ...] [--resume]" >&2
  exit 2
fi
config="$1"; shift
if [[ "$config" == @* ]]; then
  echo "$config: lists of runs are not taken here; run a grid with: fedranklite sweep SPEC.yaml --launcher slurm" >&2
  exit 2
fi
extra=()
if [ "${FEDRANKLITE_SEED_FROM_ARRAY:-0}" = "1" ] && [ -n "${SLURM_ARRAY_TASK_ID:-}" ]; then
  sets_seed=0
  prev=""
  for a in "$@"; do  # arguments that set the seed keep it
    if { [ "$prev" = --set ] && [[ "$a" == seed=* ]]; } || [[ "$a" == --set=seed=* ]]; then sets_seed=1; fi
    prev="$a"
  done
  if [ "$sets_seed" = 1 ]; then
    echo "FEDRANKLITE_SEED_FROM_ARRAY ignored: the arguments set the seed" >&2
  else
    extra+=(--set "seed=${SLURM_ARRAY_TASK_ID}")
  fi
fi
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
# shellcheck disable=SC1091
[ -f .venv/bin/activate ] && . .venv/bin/activate
exec fedranklite run --config "$config" --quiet ${extra[@]+"${extra[@]}"} "$@"
