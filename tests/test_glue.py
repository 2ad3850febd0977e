"""GLUE suite: loaders on the real GLUE TSV files (small slices), quirks, presets of the ten configs,
the one clear error when no source works, budget labels, the centralized reference, trivial baselines.

The GLUE folder is passed in, never hard-coded in the project: FEDRANKLITE_GLUE_DIR when set, else the
repository's sibling ../shared/data/glue (present in CI); tests that need it skip cleanly without it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedranklite.config.files import load_config
from fedranklite.config.schema import ConfigError
from fedranklite.data.glue import GLUE_TASKS, get_task, load_glue, read_tsv, resolve_data_dir, trivial_baseline
from fedranklite.data.load import load_data
from fedranklite.data.textsplit import DataError
from fedranklite.run.budget import budget_report
from fedranklite.run.centralized import centralized_config

ROOT = Path(__file__).resolve().parents[1]
GLUE_CONFIGS = ROOT / "configs" / "experiments" / "glue"
_env = os.environ.get("FEDRANKLITE_GLUE_DIR")
GLUE_DIR = Path(_env) if _env else Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"
needs_glue = pytest.mark.skipif(
    not (GLUE_DIR / "RTE" / "dev.tsv").is_file(),
    reason=f"GLUE TSV folder not found at {GLUE_DIR} (set FEDRANKLITE_GLUE_DIR)",
)
TASKS = ["sst2", "qnli", "mrpc", "stsb", "rte"]


@pytest.fixture
def small_glue(tmp_path):
    """The first rows of every real GLUE file, copied byte for byte (BOM, quotes and all)."""

    def make(rows_train: int = 120, rows_dev: int = 60) -> Path:
        for task in GLUE_TASKS.values():
            (tmp_path / "glue" / task.folder).mkdir(parents=True)
            for split, n in (("train", rows_train), ("dev", rows_dev)):
                lines = (GLUE_DIR / task.folder / f"{split}.tsv").read_bytes().split(b"\n")
                (tmp_path / "glue" / task.folder / f"{split}.tsv").write_bytes(b"\n".join(lines[: n + 1]) + b"\n")
        return tmp_path / "glue"

    return make


# ================================================================== loaders on the real files
@needs_glue
@pytest.mark.parametrize("name", TASKS)
def test_every_task_loads_from_the_real_folder(name):
    train, dev = load_glue(name, str(GLUE_DIR))
    task = get_task(name)
    expected_dev = {"sst2": 872, "qnli": 1000, "mrpc": 408, "stsb": 1500, "rte": 277}[name]
    assert len(dev) == expected_dev and len(train) > 2000
    assert all(len(row) == len(task.tsv_text) for row in train.texts[:50])
    assert all(all(isinstance(x, str) and x for x in row) for row in dev.texts)
    if task.task == "regression":
        # float scores 0..5, centred to [-1, 1] (glue.center_scores)
        assert dev.labels.dtype == np.float32 and dev.labels.min() == -1.0 and dev.labels.max() == 1.0
        assert len(np.unique(dev.labels)) > 20  # float scores, not binned
        raw = read_tsv(GLUE_DIR / "STS-B" / "dev.tsv", ("score",))["score"]
        np.testing.assert_allclose(dev.labels * 2.5 + 2.5, np.asarray(raw, dtype=np.float32), atol=1e-5)
    else:
        assert set(np.unique(train.labels)) == {0, 1} and train.label_names == list(task.label_names)


@needs_glue
def test_mrpc_bom_and_hash_columns():
    raw = (GLUE_DIR / "MRPC" / "train.tsv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # the quirk is really there
    cols = read_tsv(GLUE_DIR / "MRPC" / "train.tsv", ("Quality", "#1 String", "#2 String"))
    assert len(cols["Quality"]) == 3668 and set(cols["Quality"]) == {"0", "1"}
    assert cols["#1 String"][0].startswith("Amrozi accused his brother")


@needs_glue
def test_quotes_are_literal_text_not_field_delimiters():
    train, _ = load_glue("rte", str(GLUE_DIR))
    assert len(train) == 2490  # csv quoting would have merged rows that hold a lone '"'
    with_quotes = [t for t in train.texts if '"' in t[0] + t[1]]
    assert with_quotes and all("\t" not in t[0] and "\n" not in t[0] for t in with_quotes)
    _, mrpc_dev = load_glue("mrpc", str(GLUE_DIR))
    assert mrpc_dev.texts[0][1].startswith('"The foodservice pie business')  # an unbalanced quote, kept


@needs_glue
def test_string_labels_map_to_the_hub_ids(small_glue):
    folder = small_glue()
    for name in ("rte", "qnli"):
        _, dev = load_glue(name, str(folder))
        assert dev.label_names == ["entailment", "not_entailment"]  # hub: 0 entailment, 1 not_entailment
    raw = read_tsv(folder / "RTE" / "dev.tsv", ("label",))["label"]
    _, dev = load_glue("rte", str(folder))
    assert [["entailment", "not_entailment"][i] for i in dev.labels] == raw


def test_malformed_rows_and_missing_columns_are_clear_errors(tmp_path):
    bad = tmp_path / "RTE"
    bad.mkdir()
    (bad / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\tonly two\n")
    (bad / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n")
    with pytest.raises(DataError, match=r"train.tsv:2: 2 fields but the header has 4"):
        load_glue("rte", str(tmp_path))
    (bad / "train.tsv").write_text("idx\ttext\tlabel\n0\ta\t1\n")
    with pytest.raises(DataError, match=r"column\(s\) \['sentence1', 'sentence2'\] not found"):
        load_glue("rte", str(tmp_path))
    (bad / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n")
    (bad / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
    with pytest.raises(DataError, match="'maybe'.*not one of"):
        load_glue("rte", str(tmp_path))


def test_no_source_is_one_clear_error_naming_both_ways(tmp_path, monkeypatch):
    for var in ("FEDRANKLITE_GLUE_DIR", "GLUE_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError) as err:
        load_glue("sst2", None)
    msg = str(err.value)
    assert "data.data_dir" in msg and "FEDRANKLITE_GLUE_DIR" in msg and "nyu-mll/glue" in msg
    with pytest.raises(DataError, match="SST-2/train.tsv: not found.*data.data_dir.*hub"):
        load_glue("sst2", str(tmp_path))  # a folder without the task


def test_data_dir_from_config_key_beats_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FEDRANKLITE_GLUE_DIR", str(tmp_path / "env"))
    assert resolve_data_dir(str(tmp_path / "cfg")) == tmp_path / "cfg"
    assert resolve_data_dir(None) == tmp_path / "env"
    monkeypatch.delenv("FEDRANKLITE_GLUE_DIR")
    monkeypatch.setenv("GLUE_DIR", str(tmp_path / "g"))
    assert resolve_data_dir(None) == tmp_path / "g"


# ================================================================== the ten configs and their presets
@pytest.mark.parametrize("scheduler", ["cvx", "lite"])
@pytest.mark.parametrize("name", TASKS)
def test_ten_configs_resolve_from_the_one_table(name, scheduler, tmp_path):
    cfg = load_config(GLUE_CONFIGS / f"{name}_{scheduler}.yaml", [f"data.data_dir={tmp_path}"])
    task = GLUE_TASKS[name]
    assert cfg.experiment_name == f"glue_{name}_{scheduler}"
    assert cfg.federation.scheduler.type == scheduler
    assert cfg.data.source == "glue" and cfg.data.name == name and cfg.data.task == task.task
    assert cfg.num_clients == {"sst2": 12, "qnli": 12, "mrpc": 3, "stsb": 3, "rte": 3}[name]
    assert (
        cfg.evaluation.metric
        == {"sst2": "accuracy", "qnli": "accuracy", "mrpc": "f1", "stsb": "pearson", "rte": "accuracy"}[name]
    )
    assert cfg.evaluation.target == task.target
    if name == "stsb":
        assert cfg.data.num_labels == 1 and cfg.data.task == "regression"
    # the per-task values live in glue.py, not in the YAML files
    lines = (GLUE_CONFIGS / f"{name}_{scheduler}.yaml").read_text().splitlines()
    keys = " ".join(line for line in lines if not line.lstrip().startswith("#"))
    assert "text_columns" not in keys and "metric" not in keys and "num_clients" not in keys


def test_preset_is_overridable_and_errors_name_the_base(tmp_path):
    cfg = load_config(GLUE_CONFIGS / "rte_lite.yaml", ["federation.num_rounds=2", "evaluation.target=0.6"])
    assert cfg.federation.num_rounds == 2 and cfg.evaluation.target == 0.6
    bad = tmp_path / "x.yaml"
    bad.write_text(f"_base_: [{ROOT / 'configs/base.yaml'}, 'glue:cola']\n")
    with pytest.raises(ConfigError, match="glue:cola.*unknown GLUE task 'cola'"):
        load_config(bad)
    with pytest.raises(ConfigError, match="data.name: unknown name 'sts'.*did you mean 'stsb'"):
        load_config(GLUE_CONFIGS / "stsb_lite.yaml", ["data.name=sts"])
    with pytest.raises(ConfigError, match="data.task: GLUE stsb is a regression task"):
        load_config(GLUE_CONFIGS / "rte_lite.yaml", ["data.name=stsb"])
    with pytest.raises(ConfigError, match="data.data_dir: not a folder"):
        load_config(GLUE_CONFIGS / "rte_lite.yaml", [f"data.data_dir={tmp_path / 'nope'}"])


def test_smollm2_variants_resolve():
    for name in ("rte", "sst2"):
        cfg = load_config(GLUE_CONFIGS / "smollm2" / f"{name}_lite.yaml")
        assert cfg.model.name == "bundled:smollm2-135m"
        assert cfg.model.lora.target_modules == ["q_proj", "v_proj"] and cfg.data.name == name


@needs_glue
@pytest.mark.parametrize("name", TASKS)
def test_load_data_through_the_config(name, small_glue):
    folder = small_glue()
    cfg = load_config(GLUE_CONFIGS / f"{name}_lite.yaml", [f"data.data_dir={folder}"])
    data = load_data(cfg)
    assert len(data.train) == 120 and len(data.eval) == 60
    assert data.num_labels == (1 if name == "stsb" else 2) and data.task == GLUE_TASKS[name].task


# ================================================================== budgets, centralized, baselines
def test_budget_report_labels_what_was_capped(tmp_path):
    cfg = load_config(GLUE_CONFIGS / "sst2_lite.yaml")
    parts = [np.arange(400)] * 12  # 12 clients capped at 400 rows each
    rep = budget_report(cfg, train_rows=67349, eval_rows=872, partitions=parts)
    assert rep["train"]["capped"] and rep["train"]["train_rows_held_by_clients"] == 4800
    assert rep["local"]["capped"] and rep["local"]["steps_per_client_round"] == 8
    assert rep["local"]["steps_per_client_round_full"] == 25 and rep["local"]["samples_per_client_round"] == 128
    assert rep["eval"] == {"eval_rows_available": 872, "eval_rows_used": 400, "max_samples": 400, "capped": True}
    assert rep["total"]["max_training_samples"] == 5 * 4 * 128  # rounds x clients per round x samples
    assert rep["label"] == "capped: training data, local steps, evaluation"
    full = budget_report(
        cfg.model_copy(
            update={
                "evaluation": cfg.evaluation.model_copy(update={"max_samples": None}),
                "training": cfg.training.model_copy(update={"max_local_steps": None}),
            }
        ),
        train_rows=100,
        eval_rows=50,
        partition_rows=[50, 50],
    )
    assert full["label"].startswith("full data") and not full["eval"]["capped"]
    json.dumps(rep)  # plain data for metrics.json


def test_centralized_reference_matches_the_sample_budget():
    cfg = load_config(GLUE_CONFIGS / "qnli_cvx.yaml")
    c = centralized_config(cfg)
    assert c.experiment_name == "glue_qnli_cvx_centralized"
    assert c.num_clients == 1 and c.federation.clients_per_round == 1
    assert c.training.max_local_steps == 4 * 8  # clients_per_round x max_local_steps
    assert c.data.samples_per_client == 400 * 12  # the rows all 12 clients hold together
    assert c.federation.scheduler.type == "fixed" and c.federation.scheduler.rank == cfg.r_max
    assert c.model == cfg.model and c.training.lr == cfg.training.lr and c.training.batch_size == 16
    assert c.federation.num_rounds == cfg.federation.num_rounds and c.evaluation == cfg.evaluation
    assert c.deadline.seconds is None
    fed_samples = cfg.federation.num_rounds * cfg.federation.clients_per_round * 8 * 16
    assert c.federation.num_rounds * c.training.max_local_steps * 16 == fed_samples


def test_centralized_of_the_tiny_config(tiny_config):
    cfg = tiny_config()
    c = centralized_config(cfg)
    assert c.num_clients == 1 and c.training.max_local_steps == 3 * 3
    assert c.data == cfg.data.model_copy(update={"partition": cfg.data.partition})  # data unchanged (iid)


def test_trivial_baselines():
    dev = np.array([1, 0, 1, 1])
    mrpc = trivial_baseline("mrpc", dev)  # all 'equivalent': precision 3/4, recall 1 -> F1 6/7
    assert mrpc["metric"] == "f1" and mrpc["score"] == pytest.approx(2 * 3 / (2 * 3 + 1))
    assert mrpc["accuracy"] == 0.75 and "'equivalent'" in mrpc["predictor"]
    rte = trivial_baseline("rte", dev)  # the best single class on the dev labels, whatever train's majority
    assert rte["score"] == 0.75 and "'not_entailment'" in rte["predictor"]
    assert trivial_baseline("stsb", np.array([1.0, 2.0, 4.0]))["score"] == 0.0  # a constant has no correlation


@needs_glue
def test_tiny_glue_run_end_to_end(small_glue, tmp_path):
    """RTE through the CLI on 120 real rows with the tiny random model: the glue source, presets,
    secondary metrics, and the centralized reference through the same engine."""
    folder = small_glue()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "FEDRANKLITE_GLUE_DIR": str(folder)}
    sets = [
        "model.name=tiny:bert",
        "model.max_length=32",
        "federation.num_rounds=2",
        "training.max_local_steps=2",
        f"output_dir={tmp_path}",
        "evaluation.max_samples=32",
    ]
    for name in ("mrpc", "stsb"):
        args = [
            sys.executable,
            "-m",
            "fedranklite",
            "run",
            "--config",
            str(GLUE_CONFIGS / f"{name}_lite.yaml"),
            "--quiet",
        ] + [x for s in sets for x in ("--set", s)]
        proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        metrics = json.loads((tmp_path / f"glue_{name}_lite" / "metrics.json").read_text())
        ev = metrics["final_eval"]
        assert ev["num_samples"] == 32
        if name == "mrpc":
            assert metrics["metric"] == "f1" and "accuracy" in ev
        else:
            assert metrics["metric"] == "pearson" and "spearman" in ev
    from fedranklite.run.engine import build_engine

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    cfg = load_config(GLUE_CONFIGS / "rte_lite.yaml", [f"data.data_dir={folder}", *sets])
    engine = build_engine(centralized_config(cfg))
    summary = engine.run()
    assert summary.run["num_clients"] == 1 and summary.rounds_completed == 2
    assert all(c.steps == 6 for r in engine.state.records for c in r.clients.rows())  # 3 clients x 2 steps
