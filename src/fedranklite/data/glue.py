"""The GLUE suite: every per-task default in ONE table, the GLUE loaders (local TSV folder in the
original GLUE layout, or the Hugging Face hub), trivial baselines and the config presets.

A GLUE experiment YAML inherits the task's preset as a virtual base, e.g.

    _base_: [../../base.yaml, "glue:rte"]     # base.yaml, then this module's RTE defaults
    experiment_name: glue_rte_lite
    federation: {scheduler: {type: lite}}

so columns, labels, metric, target and the number of clients are written here once, not in ten files.

Where the data comes from (`data.source: glue`, `data.name: <task>`):
  1. `data.data_dir` in the config, else the environment variable FEDRANKLITE_GLUE_DIR (or GLUE_DIR):
     a folder with `<TASK>/train.tsv` and `<TASK>/dev.tsv` as in the original GLUE download;
  2. else the Hugging Face hub (`nyu-mll/glue`, the task's subset; train / validation splits).
Evaluation is always on the dev (validation) split; GLUE's test labels are hidden.
"""

from __future__ import annotations

import copy
import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from fedranklite.data.scoring import trivial_baseline as trivial_baseline_of
from fedranklite.data.textsplit import DataError, TextSplit, class_ids

log = logging.getLogger(__name__)

ENV_VARS = ("FEDRANKLITE_GLUE_DIR", "GLUE_DIR")  # the first one set wins
HUB_NAME = "nyu-mll/glue"


@dataclass(frozen=True)
class GlueTask:
    name: str  # config name: sst2, qnli, mrpc, stsb, rte
    folder: str  # folder in the GLUE TSV layout
    tsv_text: tuple[str, ...]  # text columns in the TSV header
    tsv_label: str  # label column in the TSV header
    hub_text: tuple[str, ...]  # the same columns in the hub dataset
    task: str  # classification | regression
    label_names: Optional[tuple[str, ...]]  # index = class id (the hub's ids too); None for regression
    metric: str  # the GLUE headline metric (evaluation.metric)
    # what GLUE also reports: trivial_baseline scores the majority class on them. The engine does not read
    # this; it reports a fixed set per task type (engine._secondary_metrics), which includes these.
    secondary: tuple[str, ...]
    target: float  # time-to-target threshold at the laptop budgets of the presets below
    num_clients: int  # federated clients, as in the seed
    clients_per_round: int
    max_length: int  # tokens per row (pairs are longer)

    @property
    def num_labels(self) -> int:
        return 1 if self.task == "regression" else len(self.label_names or ())


GLUE_TASKS: dict[str, GlueTask] = {
    t.name: t
    for t in (
        GlueTask(
            "sst2",
            "SST-2",
            ("sentence",),
            "label",
            ("sentence",),
            "classification",
            ("negative", "positive"),
            "accuracy",
            ("f1",),
            0.80,
            12,
            4,
            64,
        ),
        GlueTask(
            "qnli",
            "QNLI",
            ("question", "sentence"),
            "label",
            ("question", "sentence"),
            "classification",
            ("entailment", "not_entailment"),
            "accuracy",
            ("f1",),
            0.65,
            12,
            4,
            128,
        ),
        GlueTask(
            "mrpc",
            "MRPC",
            ("#1 String", "#2 String"),
            "Quality",
            ("sentence1", "sentence2"),
            "classification",
            ("not_equivalent", "equivalent"),
            "f1",
            ("accuracy",),
            0.83,
            3,
            3,
            128,
        ),
        GlueTask(
            "stsb",
            "STS-B",
            ("sentence1", "sentence2"),
            "score",
            ("sentence1", "sentence2"),
            "regression",
            None,
            "pearson",
            ("spearman", "mse"),
            0.75,
            3,
            3,
            128,
        ),
        GlueTask(
            "rte",
            "RTE",
            ("sentence1", "sentence2"),
            "label",
            ("sentence1", "sentence2"),
            "classification",
            ("entailment", "not_entailment"),
            "accuracy",
            ("f1",),
            0.55,
            3,
            3,
            128,
        ),
    )
}

# Prompts of a causal LM's label-word scoring (`model.head: verbalizer`, verbalizer.py): per task the template
# ({text_a}, {text_b} = the task's text columns in order) and one label word per class id (STS-B: words 0..5
# standing for the centred scores of center_scores). Each is the best of three candidates by zero-shot
# SmolLM2-135M-Instruct score on 200 seeded rows of the TRAIN split (experiments/slm_prompts/,
# slm_prompts.json); dev was never read. Zero-shot on train: SST-2 0.75, QNLI 0.52, RTE 0.51,
# MRPC F1 0.79, STS-B Pearson 0.03 (the NLI tasks and STS-B are near chance before training).
_CHAT = "<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"  # SmolLM2-Instruct's chat format
PROMPTS: dict[str, dict[str, Any]] = {
    "sst2": {
        "template": "Review: {text_a}\nSentiment (positive or negative):",
        "label_words": [" negative", " positive"],
    },
    "qnli": {
        "template": '{text_b}\nQuestion: Does this sentence contain the answer to "{text_a}"? Yes or no?\nAnswer:',
        "label_words": [" yes", " no"],
    },
    "rte": {
        "template": "Premise: {text_a}\nHypothesis: {text_b}\nDoes the premise imply the hypothesis (yes or no)?"
        "\nAnswer:",
        "label_words": [" yes", " no"],
    },
    "mrpc": {
        "template": _CHAT.format(
            q="Do these two sentences mean the same thing? Answer yes or no.\n1: {text_a}\n2: {text_b}"
        ),
        "label_words": ["no", "yes"],
    },
    "stsb": {
        "template": _CHAT.format(
            q="How similar are these two sentences, from 0 (unrelated) to 5 (same meaning)? Answer with one digit."
            "\n1: {text_a}\n2: {text_b}"
        ),
        "label_words": [str(k) for k in range(6)],
        "label_values": [(k - 2.5) / 2.5 for k in range(6)],  # the centred scale of center_scores
    },
}

# Laptop budget shared by every GLUE preset (2-core CPU: a run takes a few minutes). What is capped is
# written to metrics.json's `budget` (see fedranklite.run.budget.budget_report).
COMMON_PRESET: dict[str, Any] = {
    # FedAvg of clients that each took k local steps moves the global model about k steps per round, so
    # rounds x max_local_steps is what buys accuracy at these budgets; lr 2e-3 for LoRA (1e-3 and 5e-4 learn
    # visibly slower in 30-60 effective steps: learning rate matters a lot here) and 1e-2 for the new head
    # (at 2e-3 the head of RTE drifted to the majority class before it learned to use the pair's cosine)
    "federation": {"num_rounds": 5, "aggregation": "blockwise", "scheduler": {"r_min": 2, "r_bar": 8}},
    "training": {
        "local_epochs": 1,
        "max_local_steps": 8,
        "batch_size": 16,
        "lr": 2e-3,
        "head_lr": 1e-2,
        "probe_samples": 0,
    },
    "data": {"source": "glue", "samples_per_client": 400, "partition": {"type": "iid"}},
    "model": {"lora": {"r_max": 16, "alpha": 32}},
    # simulated time: the default profile mode (the backbone's measured rank sweep, converted to the tiers' H100
    # reference where a shipped profile pair measures the conversion); `fedranklite run -c CONFIG --dry-run`
    # prints what a client-round costs (MiniLM on SST-2 at rank 8: 0.33-2.1 s, so this deadline does not bind).
    # The GLUE numbers in benchmarks/results/glue.md were measured under the earlier clock (MiniLM rows: the
    # analytic model, 0.05 + 0.005 r s/sample at tier factors 1.0/0.7/0.15, in which a slow-tier client met
    # this deadline only at rank <= ~10; SmolLM2 rows: tier factors 1.0/0.7/0.15 of the unconverted CPU
    # profile); their time and compliance columns are not what the software does now
    "deadline": {"seconds": 90, "straggler_policy": "use_partial"},
    "evaluation": {"eval_every": 1, "max_samples": 400, "batch_size": 64, "stop_at_target": False},
}


def _tier_counts(n: int) -> dict[str, int]:
    """n clients over the base tiers gpu_fast / gpu_medium / cpu_slow, as evenly as possible
    (the slow tier gets the remainder last)."""
    names = ["gpu_fast", "gpu_medium", "cpu_slow"]
    counts = [n // 3 + (1 if i < n % 3 else 0) for i in range(3)]
    return {name: c for name, c in zip(names, counts)}


def get_task(name: str) -> GlueTask:
    key = name.lower().replace("-", "").replace("_", "")
    if key not in GLUE_TASKS:
        raise DataError(f"unknown GLUE task {name!r}; known: {sorted(GLUE_TASKS)}")
    return GLUE_TASKS[key]


def preset(name: str) -> dict[str, Any]:
    """The config tree of a GLUE task (the virtual base `glue:<task>`): COMMON_PRESET + the task row."""
    t = get_task(name)
    tree = copy.deepcopy(COMMON_PRESET)
    tree["experiment_name"] = f"glue_{t.name}"
    tree["data"].update(
        {
            "name": t.name,
            "text_columns": list(t.tsv_text),
            "label_column": t.tsv_label,
            "task": t.task,
            "num_labels": t.num_labels,
            "label_names": list(t.label_names) if t.label_names else None,
        }
    )
    tree["federation"]["clients_per_round"] = t.clients_per_round
    tree["tiers"] = {tier: {"num_clients": c} for tier, c in _tier_counts(t.num_clients).items()}
    tree["evaluation"].update({"metric": t.metric, "target": t.target})
    tree["model"]["max_length"] = t.max_length
    tree["model"]["verbalizer"] = copy.deepcopy(PROMPTS[t.name])  # read only by causal LMs (model.head auto)
    return tree


# ================================================================== loading
def resolve_data_dir(configured: Optional[str]) -> Optional[Path]:
    """`data.data_dir` from the config, else the first of FEDRANKLITE_GLUE_DIR / GLUE_DIR that is set."""
    if configured:
        return Path(configured).expanduser()
    for var in ENV_VARS:
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    return None


def _how_to_provide(task: GlueTask) -> str:
    return (
        f"Provide GLUE {task.folder} either as a local folder in the GLUE TSV layout "
        f"(<dir>/{task.folder}/train.tsv and dev.tsv) given by data.data_dir or the environment variable "
        f"{ENV_VARS[0]}, or through the Hugging Face hub ({HUB_NAME}, subset {task.name!r}; needs network "
        f"and HF_DATASETS_OFFLINE unset)"
    )


def read_tsv(path: Path, columns: tuple[str, ...]) -> dict[str, list[str]]:
    """Columns of a GLUE TSV file by header name. Tab-separated with quote characters as literal text
    (csv.QUOTE_NONE: MRPC/RTE/QNLI sentences contain unbalanced quotes), an optional UTF-8 BOM (MRPC's
    header starts with one), header names with spaces and '#' (MRPC's '#1 String'). A row with more
    fields than the header keeps the named columns by position and takes its label from the last field
    (the label is the last column in every GLUE file)."""
    try:
        f = open(path, encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise DataError(f"{path}: cannot be read: {exc}") from None
    with f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if not header:
            raise DataError(f"{path}: the file is empty")
        header = [h.strip() for h in header]
        missing = [c for c in columns if c not in header]
        if missing:
            raise DataError(f"{path}: column(s) {missing} not found; the header is {header}")
        pos = [header.index(c) for c in columns]
        last = len(header) - 1
        out: dict[str, list[str]] = {c: [] for c in columns}
        for lineno, row in enumerate(reader, start=2):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) < len(header):
                raise DataError(f"{path}:{lineno}: {len(row)} fields but the header has {len(header)}")
            for c, p in zip(columns, pos):
                out[c].append(row[-1] if p == last else row[p])
    if not out[columns[0]]:
        raise DataError(f"{path}: no rows")
    return out


def center_scores(scores: np.ndarray) -> np.ndarray:
    """STS-B similarity 0..5 -> (score - 2.5) / 2.5 in [-1, 1]. A fresh regression head outputs ~0: with
    centred targets its first gradients follow the correlation with the text instead of shifting every
    output by the label mean, which at laptop budgets decides whether Pearson moves at all. Pearson and
    Spearman are unchanged by the affine map; MSE is on this scale (x 6.25 for the 0..5 scale)."""
    return ((np.asarray(scores, dtype=np.float32) - 2.5) / 2.5).astype(np.float32)


def _split_from_columns(
    cols: dict[str, list], text: tuple[str, ...], label: str, task: GlueTask, where: str
) -> TextSplit:
    texts = list(zip(*[[("" if v is None else str(v)) for v in cols[c]] for c in text]))
    raw = cols[label]
    if task.task == "regression":
        try:
            labels = np.asarray([float(v) for v in raw], dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{where}: column {label!r} must hold numbers for regression ({exc})") from None
        return TextSplit(texts, center_scores(labels))
    ids, names = class_ids(raw, list(task.label_names), label, where)
    return TextSplit(texts, ids, names)


def load_glue_tsv(task: GlueTask, data_dir: Path) -> tuple[TextSplit, TextSplit]:
    """(train, dev) of a task from `<data_dir>/<TASK>/{train,dev}.tsv`."""
    folder = data_dir / task.folder
    splits = []
    for name in ("train", "dev"):
        path = folder / f"{name}.tsv"
        if not path.is_file():
            raise DataError(f"{path}: not found. {_how_to_provide(task)}")
        cols = read_tsv(path, (*task.tsv_text, task.tsv_label))
        splits.append(_split_from_columns(cols, task.tsv_text, task.tsv_label, task, str(path)))
    return splits[0], splits[1]


def load_glue_hub(task: GlueTask) -> tuple[TextSplit, TextSplit]:
    import datasets  # heavy: kept off the config path (config imports this module for the presets)

    splits = []
    for split in ("train", "validation"):
        try:
            table = datasets.load_dataset(HUB_NAME, task.name, split=split)
        except Exception as exc:
            raise DataError(
                f"GLUE {task.folder}: no local folder configured and the hub failed "
                f"({type(exc).__name__}: {str(exc)[:200]}). {_how_to_provide(task)}"
            ) from None
        cols = {c: table[c] for c in (*task.hub_text, "label")}
        splits.append(_split_from_columns(cols, task.hub_text, "label", task, f"{HUB_NAME}/{task.name}:{split}"))
    return splits[0], splits[1]


def load_glue(name: str, data_dir: Optional[str] = None) -> tuple[TextSplit, TextSplit]:
    """(train, dev) of a GLUE task: the local folder when one is configured, else the hub."""
    task = get_task(name)
    folder = resolve_data_dir(data_dir)
    if folder is not None:
        if not folder.is_dir():
            raise DataError(f"GLUE folder {folder} does not exist. {_how_to_provide(task)}")
        return load_glue_tsv(task, folder)
    return load_glue_hub(task)


# ================================================================== trivial baselines
def trivial_baseline(task_name: str, eval_labels: np.ndarray) -> dict[str, Any]:
    """The best constant prediction on a task's dev labels, scored with its metric and secondary metrics
    (scoring.trivial_baseline, the same yardstick every run summary prints: MRPC's all-'equivalent' F1 is
    high; for STS-B a constant scores Pearson 0)."""
    task = get_task(task_name)
    regression = task.task == "regression"
    names = None if regression else task.label_names
    return trivial_baseline_of(eval_labels, task.metric, regression, task.secondary, names)
