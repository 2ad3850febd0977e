#!/usr/bin/env bash
# Slurm wrapper for one experiment or an array of them.
#   one config:      sbatch scripts/run_slurm.sh configs/experiments/lite_iid.yaml [--set k=v ...]
#   an array sweep:  ls configs/experiments/*.yaml > sweep.txt
#                    sbatch --array=1-$(wc -l < sweep.txt) scripts/run_slurm.sh @sweep.txt [--set k=v ...]
#   (with @FILE, array task i runs the i-th line of FILE; SLURM_ARRAY_TASK_ID is also used as the seed
#    offset when FEDRANKLITE_SEED_FROM_ARRAY=1)
#SBATCH --job-name=fedranklite
#SBATCH --cpus-per-task=4
#SBATCH --mem=16G
#SBATCH --time=02:00:00
#SBATCH --output=slurm-%x-%A_%a.out
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: sbatch $0 CONFIG.yaml|@LIST.txt [--set key=value ...]" >&2
  exit 2
fi
config="$1"; shift
if [[ "$config" == @* ]]; then
  list="${config#@}"
  index="${SLURM_ARRAY_TASK_ID:?@LIST needs an array job (sbatch --array=1-N)}"
  config=$(sed -n "${index}p" "$list")
  [ -n "$config" ] || { echo "no line $index in $list" >&2; exit 2; }
fi
extra=()
if [ "${FEDRANKLITE_SEED_FROM_ARRAY:-0}" = "1" ] && [ -n "${SLURM_ARRAY_TASK_ID:-}" ]; then
  extra+=(--set "seed=${SLURM_ARRAY_TASK_ID}")
fi
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
# shellcheck disable=SC1091
[ -f .venv/bin/activate ] && . .venv/bin/activate
exec fedranklite run --config "$config" --quiet "${extra[@]}" "$@"
