#!/usr/bin/env bash
# Slurm wrapper for one experiment or an array of them.
#   one config:      sbatch scripts/run_slurm.sh configs/experiments/lite_iid.yaml [--set k=v ...]
#   an array sweep:  ls configs/experiments/*.yaml > sweep.txt
#                    sbatch --array=1-$(wc -l < sweep.txt) scripts/run_slurm.sh @sweep.txt [--set k=v ...]
#   (with @FILE, array task i runs the i-th line of FILE; with FEDRANKLITE_SEED_FROM_ARRAY=1 the seed is
#    SLURM_ARRAY_TASK_ID, unless the line or the command line already sets seed with --set seed=...)
#   a line of FILE is either a config path, taken verbatim (no word splitting, globbing or $(...)), or,
#   when it starts with `fedranklite` or contains " --", a whole shell-quoted argument list of
#   `fedranklite run` (CONFIG or --config CONFIG, then --set k=v ..., --resume), optionally led by
#   `fedranklite run`, which the shell parses (eval: such a line is trusted shell text, quoted as
#   shlex.join quotes): `fedranklite sweep SPEC --launcher slurm` writes such lines to
#   <output_dir>/sweep_commands.txt
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
args=(--config "$config")
if [[ "$config" == @* ]]; then
  list="${config#@}"
  index="${SLURM_ARRAY_TASK_ID:?@LIST needs an array job (sbatch --array=1-N)}"
  line=$(sed -n "${index}p" "$list")
  [ -n "$line" ] || { echo "no line $index in $list" >&2; exit 2; }
  if [[ "$line" == fedranklite* || "$line" == *" --"* ]]; then
    set -f  # no globbing of the words; the line is shell text, as shlex.join writes it
    eval "args=($line)"
    set +f
    if [ "${args[0]:-}" = fedranklite ] && [ "${args[1]:-}" = run ]; then args=("${args[@]:2}"); fi
    [[ "${args[0]:-}" == -* ]] || args=(--config "${args[@]}")
  else
    args=(--config "$line")  # a bare config path (the old form), taken verbatim
  fi
fi
extra=()
if [ "${FEDRANKLITE_SEED_FROM_ARRAY:-0}" = "1" ] && [ -n "${SLURM_ARRAY_TASK_ID:-}" ]; then
  sets_seed=0
  prev=""
  for a in "${args[@]}" "$@"; do  # a line (or the command line) that sets the seed keeps it: sweeps pair by seed
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
exec fedranklite run "${args[@]}" --quiet ${extra[@]+"${extra[@]}"} "$@"
