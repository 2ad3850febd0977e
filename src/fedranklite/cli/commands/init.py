"""`fedranklite init [DIR]`: a commented starter config for your own data, a sweep spec over it, and a small
example data file in the layout the config reads (replace it with yours)."""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

CONFIG_NAME, SWEEP_NAME, DATA_NAME = "config.yaml", "sweep.yaml", "data/train.csv"
EXAMPLE_ROWS = 300

CONFIG = """\
# A FedRankLite experiment on your own data. Every key left out takes its default (`fedranklite list` shows
# each plugin's parameters; the configuration reference lists every key). Check it without training:
#   fedranklite run --config {config} --dry-run
# then run it:
#   fedranklite run --config {config}
experiment_name: starter         # results are written to <output_dir>/<experiment_name>/
output_dir: results              # relative to the directory the command runs in
seed: 0
device: auto                     # auto | cpu | cuda

model:
  name: bundled:minilm-l6        # bundled:minilm-l6 (offline) | tiny:bert (random) | a local folder | a Hub name
  max_length: 64                 # tokens per row
  lora:
    r_max: 16                    # the largest LoRA rank a client may get
    target_modules: [query, value]

data:
  source: files                  # a local file: csv | tsv | json | jsonl | parquet
  train_file: {data}             # relative to this file's folder; replace the example rows with yours
  eval_file: null                # null: a seeded 10 % of the training rows is held out for evaluation
  text_columns: [text]           # one column, or two for sentence pairs (e.g. [question, sentence])
  label_column: label            # class names or ids (task: classification), numbers (task: regression)
  task: classification
  partition:
    type: dirichlet              # iid | dirichlet | label_skew: how the rows are split among the clients
    alpha: 0.5                   # dirichlet: smaller is more skewed

# Clients come in tiers (numbered tier by tier); compute_factor is the relative training speed (fastest 1.0),
# memory_gb caps the rank a client can train, bandwidths are Mbit/s each way (null: not simulated).
tiers:
  fast:
    compute_factor: 1.0
    num_clients: 4
    memory_gb: 16
    bandwidth_mbps: 100
  slow:
    compute_factor: 0.25
    num_clients: 4
    memory_gb: 8
    bandwidth_mbps: 20

federation:
  num_rounds: 10
  clients_per_round: 4
  aggregation: blockwise         # fedavg | blockwise | svd | stack | hetlora | median | trimmed_mean | krum
  scheduler:
    type: lite                   # fixed | cvx | lite: the rank of each selected client each round
    r_min: 2
    r_bar: 8                     # mean rank per selected client

training:
  max_local_steps: 8
  batch_size: 16
  lr: 0.002

deadline:
  seconds: null                  # simulated seconds per round; null: no deadline
  straggler_policy: wait         # wait | drop | use_partial

timing:
  mode: analytic                 # analytic (constants below) | profile (measured rank profile) | measured
  sec_per_sample: 0.05
  sec_per_sample_per_rank: 0.005

evaluation:
  eval_every: 1
  target: 0.8                    # the score time-to-target is measured to
"""

SWEEP = """\
# Every scheduler on the same clients and seeds. Check it without running:
#   fedranklite sweep {sweep} --dry-run
# run it, then the paired statistics:
#   fedranklite sweep {sweep}
#   fedranklite report results/sweeps/{stem}
base: {config}                   # relative to this file's folder
seeds: 3                         # seeds 0..2, or a list
set: {{federation.num_rounds: 10}}  # overrides applied to every run
schedulers:                      # one cell each: overrides of the base config
  fixed: {{federation.scheduler.type: fixed}}
  cvx: {{federation.scheduler.type: cvx}}
  lite: {{federation.scheduler.type: lite}}
reference: lite                  # the cell the report pairs against
# axes:                          # optional grid over any key, crossed with the cells
#   deadline.seconds: [30, 60]
"""


def example_rows(n: int = EXAMPLE_ROWS) -> str:
    """Labelled example sentences (the package's generated sentiment task) as CSV text with `text,label`."""
    from fedranklite.data.embedded import EMBEDDED_TASKS

    split = EMBEDDED_TASKS["sentiment"](n, 0)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["text", "label"])
    names = split.label_names
    for texts, label in zip(split.texts, split.labels.tolist()):
        writer.writerow([texts[0], names[label] if names else label])
    return out.getvalue()


def cmd_init(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    files = {
        CONFIG_NAME: CONFIG.format(config=folder / CONFIG_NAME, data=DATA_NAME),
        SWEEP_NAME: SWEEP.format(sweep=folder / SWEEP_NAME, config=CONFIG_NAME, stem=Path(SWEEP_NAME).stem),
        DATA_NAME: None,
    }
    if folder.exists() and not folder.is_dir():
        print(f"error: {folder}: exists and is not a folder", file=sys.stderr)
        return 2
    taken = [name for name in files if (folder / name).exists() or (folder / name).is_symlink()]
    if taken:
        print(
            f"error: {folder / taken[0]} already exists; init writes only new files (choose another folder)",
            file=sys.stderr,
        )
        return 2
    try:
        (folder / DATA_NAME).parent.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            with open(folder / name, "x", encoding="utf-8") as fh:  # "x": never replaces a file made meanwhile
                fh.write(text if text is not None else example_rows())
    except OSError as exc:
        print(f"error: {exc.filename or folder}: cannot be written ({exc.strerror or exc})", file=sys.stderr)
        return 2
    for name in files:
        print(folder / name)
    return 0
