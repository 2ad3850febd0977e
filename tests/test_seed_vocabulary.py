"""The seed document's config vocabulary (`data.partition.method`, `deadline.enabled`,
`evaluation.target_score`, `model.lora.r_min`, an eval frequency) in files, `_base_` chains and `--set`;
data paths relative to the config file; the seed's example config from the README, run for one round."""

from __future__ import annotations

import json
import logging
import re
import shutil
import textwrap
from pathlib import Path

import pytest
import yaml
from conftest import tiny_tree

from fedranklite.config.files import load_config, validate
from fedranklite.config.schema import ConfigError

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "configs" / "base.yaml"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def on_base(tmp_path: Path, body: str, name: str = "leaf.yaml") -> Path:
    return write(tmp_path / name, f"_base_: {BASE}\n" + textwrap.dedent(body))


def error_of(path: Path, overrides=None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return str(info.value)


def readme_seed_example() -> str:
    text = (ROOT / "README.md").read_text()
    found = re.search(r"<!-- seed-example -->\n```yaml\n(.*?)```", text, re.S)
    assert found, "the README quotes the seed's example config after <!-- seed-example -->"
    return found.group(1)


# Overrides that put the seed's example on the tiny model and a small embedded task (tests/conftest.py).
TINY = [
    "model.name=tiny:bert",
    "model.max_length=32",
    "model.lora={r_max: 8, alpha: 16}",
    "federation.num_rounds=1",
    "federation.clients_per_round=3",
    "federation.scheduler={r_min: 1, r_bar: 4}",
    "training={max_local_steps: 2, batch_size: 8}",
    "data={embedded_train_size: 240, embedded_eval_size: 64}",
    "timing={mode: analytic, sec_per_sample: 0.05, sec_per_sample_per_rank: 0.01}",
    "evaluation.max_samples=64",
    "device=cpu",
]


# -------------------------------------------------------------------------------- the seed's example
def test_the_seeds_example_config_loads_verbatim(tmp_path):
    shutil.copy(BASE, tmp_path / "base.yaml")  # `_base_: ../base.yaml` as in the seed's layout
    path = write(tmp_path / "experiments" / "seed.yaml", readme_seed_example())
    keys = yaml.safe_load(path.read_text())
    assert keys["data"]["partition"] == {"method": "dirichlet", "alpha": 0.1}
    assert set(keys) == {"_base_", "experiment_name", "data", "federation", "deadline"}
    cfg = load_config(path)
    assert cfg.data.partition.type == "dirichlet" and cfg.data.partition.alpha == 0.1
    assert cfg.federation.scheduler.type == "lite" and cfg.deadline.seconds == 90
    assert cfg.experiment_name == "lite_noniid_hard"


def test_the_seeds_example_config_runs_one_round_on_the_tiny_model(tmp_path):
    from fedranklite.backends import start

    shutil.copy(BASE, tmp_path / "base.yaml")
    path = write(tmp_path / "experiments" / "seed.yaml", readme_seed_example())
    cfg = load_config(path, [*TINY, f"output_dir={tmp_path / 'results'}"])
    assert cfg.data.partition.type == "dirichlet" and cfg.deadline.seconds == 90
    summary = start(cfg).run()
    assert summary.rounds_completed == 1 and summary.final_score is not None
    resolved = yaml.safe_load((tmp_path / "results" / "lite_noniid_hard" / "config.yaml").read_text())
    assert resolved["data"]["partition"]["type"] == "dirichlet"  # config.yaml records the project's names
    assert "method" not in resolved["data"]["partition"]


# -------------------------------------------------------------------------------- aliases
def test_seed_names_mean_the_project_names_and_resolve_identically(tmp_path):
    seed = on_base(
        tmp_path,
        """
        data: {partition: {method: dirichlet, alpha: 0.3}}
        evaluation: {target_score: 0.8, eval_frequency: 2}
        model: {lora: {r_min: 3}}
        """,
        "seed.yaml",
    )
    ours = on_base(
        tmp_path,
        """
        data: {partition: {type: dirichlet, alpha: 0.3}}
        evaluation: {target: 0.8, eval_every: 2}
        federation: {scheduler: {r_min: 3}}
        """,
        "ours.yaml",
    )
    a, b = load_config(seed).to_dict(), load_config(ours).to_dict()
    assert a.pop("experiment_name") == "seed" and b.pop("experiment_name") == "ours"
    assert a == b
    assert load_config(seed, ["evaluation.frequency=3"]).evaluation.eval_every == 3


def test_method_names_the_partition_plugin_in_the_plugin_aware_merge(tmp_path):
    mid = on_base(tmp_path, "data: {partition: {type: dirichlet, alpha: 0.2, min_partition_size: 3}}\n", "mid.yaml")
    # a later file picks another plugin with `method:`: dirichlet's parameters are dropped, as with `type:`
    leaf = write(tmp_path / "leaf.yaml", "_base_: mid.yaml\ndata: {partition: {method: label_skew}}\n")
    cfg = load_config(leaf)
    assert cfg.data.partition.type == "label_skew" and not hasattr(cfg.data.partition, "alpha")
    # the same plugin by `method:` keeps the inherited parameters
    same = write(tmp_path / "same.yaml", "_base_: mid.yaml\ndata: {partition: {method: dirichlet}}\n")
    assert load_config(same).data.partition.alpha == 0.2
    # and in --set, both as a key and inside a section
    assert load_config(mid, ["data.partition.method=iid"]).data.partition.type == "iid"
    cfg = load_config(BASE, ["data.partition={method: dirichlet, alpha: 0.1}"])
    assert cfg.data.partition.type == "dirichlet" and cfg.data.partition.alpha == 0.1


def test_an_alias_in_a_base_file_is_overridden_by_the_project_name_in_a_later_file(tmp_path):
    mid = on_base(tmp_path, "evaluation: {target_score: 0.7}\nmodel: {lora: {r_min: 4}}\n", "mid.yaml")
    leaf = write(
        tmp_path / "leaf.yaml", "_base_: mid.yaml\nevaluation: {target: 0.75}\nfederation: {scheduler: {r_min: 1}}\n"
    )
    cfg = load_config(leaf)
    assert cfg.evaluation.target == 0.75 and cfg.federation.scheduler.r_min == 1
    assert load_config(mid, ["federation.scheduler.r_min=2"]).federation.scheduler.r_min == 2
    assert load_config(leaf, ["model.lora.r_min=5"]).federation.scheduler.r_min == 5


def test_r_min_in_lora_reaches_a_scheduler_given_as_a_bare_name(tmp_path):
    leaf = on_base(tmp_path, "federation: {scheduler: fixed}\nmodel: {lora: {r_min: 4}}\n")
    cfg = load_config(leaf)
    assert cfg.federation.scheduler.type == "fixed" and cfg.federation.scheduler.r_min == 4


def test_both_names_in_one_file_must_agree(tmp_path):
    same = on_base(tmp_path, "evaluation: {target: 0.8, target_score: 0.8}\n", "same.yaml")
    assert load_config(same).evaluation.target == 0.8
    leaf = on_base(tmp_path, "model: {lora: {r_min: 3}}\nfederation: {scheduler: {r_min: 2}}\n")
    msg = error_of(leaf)
    assert len(msg.splitlines()) == 1
    assert str(leaf.resolve()) in msg and "model.lora.r_min" in msg and "federation.scheduler.r_min" in msg
    msg = error_of(BASE, ["data.partition={type: iid, method: dirichlet}"])
    assert "--set" in msg and "data.partition.method" in msg and len(msg.splitlines()) == 1


def test_errors_name_the_key_as_the_user_wrote_it(tmp_path):
    leaf = on_base(tmp_path, "data: {partition: {method: dirichlett}}\n")
    msg = error_of(leaf)
    assert f"{leaf.resolve()}: data.partition.method: unknown partitioner 'dirichlett'" in msg
    assert "did you mean 'dirichlet'" in msg
    msg = error_of(BASE, ["model.lora.r_min=40"])
    assert "--set: model.lora.r_min:" in msg
    msg = error_of(BASE, ["evaluation.target_score=.nan"])
    assert "--set: evaluation.target_score: Input should be a finite number" in msg
    # a misspelt seed name gets the seed name as its suggestion
    assert "did you mean 'method'" in error_of(BASE, ["data.partition.metod=iid"])
    assert "did you mean 'enabled'" in error_of(BASE, ["deadline.enable=true"])


def test_aliases_are_logged_once_each(tmp_path, caplog):
    leaf = on_base(tmp_path, "data: {partition: {method: iid}}\nevaluation: {target_score: 0.8}\n")
    with caplog.at_level(logging.INFO, logger="fedranklite.config.files"):
        load_config(leaf)
    lines = [r.getMessage() for r in caplog.records if r.name == "fedranklite.config.files"]
    assert len(lines) == 2
    assert any("data.partition.method is read as data.partition.type" in line for line in lines)


def test_aliases_in_a_tree_built_in_code(tmp_path):
    tree = tiny_tree(tmp_path)
    tree["evaluation"] = {"target_score": 0.7, "max_samples": 64}
    tree["data"]["partition"] = {"method": "dirichlet", "alpha": 0.5}
    cfg = validate(tree)
    assert cfg.evaluation.target == 0.7 and cfg.data.partition.type == "dirichlet"


# -------------------------------------------------------------------------------- deadline.enabled
def test_deadline_enabled_false_means_no_deadline_whatever_seconds_says(tmp_path):
    leaf = on_base(tmp_path, "deadline: {enabled: false, seconds: 90}\n")
    assert load_config(leaf).deadline.seconds is None
    # also an inherited or overriding seconds
    child = write(tmp_path / "child.yaml", "_base_: leaf.yaml\ndeadline: {seconds: 60}\n")
    assert load_config(child).deadline.seconds is None
    assert load_config(leaf, ["deadline.seconds=30"]).deadline.seconds is None
    # switching it back on uses the seconds
    assert load_config(leaf, ["deadline.enabled=true"]).deadline.seconds == 90
    # a lite time cap at the deadline needs a deadline: the switch counts
    msg = error_of(leaf, ["federation.scheduler.time_cap=deadline"])
    assert "time_cap" in msg


def test_deadline_enabled_true_needs_seconds_and_absent_lets_seconds_decide(tmp_path):
    leaf = on_base(tmp_path, "deadline: {enabled: true}\n")
    msg = error_of(leaf)
    assert f"{leaf.resolve()}: deadline.enabled: true needs deadline.seconds" in msg
    assert load_config(leaf, ["deadline.seconds=45"]).deadline.seconds == 45
    plain = on_base(tmp_path, "deadline: {seconds: 90}\n", "plain.yaml")
    assert load_config(plain).deadline.seconds == 90
    assert load_config(plain, ["deadline.enabled=null"]).deadline.seconds == 90
    assert "expected true or false" in error_of(plain, ["deadline.enabled=sometimes"])


def test_deadline_enabled_leaves_config_yaml_in_the_project_names(tmp_path):
    cfg = load_config(on_base(tmp_path, "deadline: {enabled: false, seconds: 90}\n"))
    assert "enabled" not in cfg.to_dict()["deadline"]
    assert cfg.to_dict() == load_config(on_base(tmp_path, "deadline: {seconds: null}\n")).to_dict()


# -------------------------------------------------------------------------------- paths
def test_data_paths_in_a_config_file_are_relative_to_the_file(tmp_path, monkeypatch):
    project = tmp_path / "project"
    write(project / "data" / "train.jsonl", '{"text": "good", "label": "pos"}\n{"text": "bad", "label": "neg"}\n')
    # a trace lists every client of the tiers (base.yaml's 10)
    write(project / "data" / "trace.csv", "cid,compute_factor\n" + "".join(f"{c},1.0\n" for c in range(10)))
    leaf = write(
        project / "configs" / "exp.yaml",
        f"""\
        _base_: {BASE}
        data: {{source: files, train_file: ../data/train.jsonl}}
        federation: {{client_trace: ../data/trace.csv}}
        """,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(leaf)
    assert Path(cfg.data.train_file).resolve() == (project / "data" / "train.jsonl").resolve()
    assert Path(cfg.federation.client_trace).resolve() == (project / "data" / "trace.csv").resolve()


def test_a_path_in_a_base_file_is_relative_to_that_base(tmp_path, monkeypatch):
    write(tmp_path / "shared" / "train.csv", "text,label\na,0\nb,1\n")
    write(tmp_path / "shared" / "base.yaml", f"_base_: {BASE}\ndata: {{source: files, train_file: train.csv}}\n")
    leaf = write(tmp_path / "exps" / "leaf.yaml", "_base_: ../shared/base.yaml\n")
    monkeypatch.chdir(tmp_path)
    assert Path(load_config(leaf).data.train_file) == (tmp_path / "shared" / "train.csv").resolve()


def test_set_paths_are_relative_to_the_current_directory(tmp_path, monkeypatch):
    write(tmp_path / "here" / "train.csv", "text,label\na,0\nb,1\n")
    monkeypatch.chdir(tmp_path / "here")
    cfg = load_config(BASE, ["data.source=files", "data.train_file=train.csv"])
    assert cfg.data.train_file == "train.csv" and Path(cfg.data.train_file).is_file()
    monkeypatch.chdir(tmp_path)
    msg = error_of(BASE, ["data.source=files", "data.train_file=train.csv"])
    assert "--set: data.train_file: file not found: train.csv" in msg and "current directory" in msg


def test_a_missing_relative_data_file_names_where_it_was_looked_for(tmp_path):
    leaf = on_base(tmp_path, "data: {source: files, train_file: nope.csv}\n")
    msg = error_of(leaf)
    assert f"{leaf.resolve()}: data.train_file: file not found: {tmp_path.resolve() / 'nope.csv'}" in msg


def test_bring_your_own_jsonl_pairs_with_string_labels_from_the_readme(tmp_path, monkeypatch):
    """The README's worked example: string labels numbered by label_names, paths relative to the config."""
    from fedranklite.data.load import load_data

    rows = [
        ("A man plays a guitar.", "A person plays music.", "entailment"),
        ("A man plays a guitar.", "The man is asleep.", "contradiction"),
        ("A man plays a guitar.", "The man is a professional.", "neutral"),
    ] * 4
    lines = "".join(json.dumps({"premise": p, "hypothesis": h, "label": y}) + "\n" for p, h, y in rows)
    write(tmp_path / "my_task" / "train.jsonl", lines)
    write(tmp_path / "my_task" / "dev.jsonl", lines)
    text = (ROOT / "README.md").read_text()
    block = re.search(r"saved as `my_task/train.jsonl`.*?```yaml\n(.*?)```", text, re.S).group(1)
    block = block.replace("../configs/base.yaml", str(BASE))
    path = write(tmp_path / "my_task" / "experiment.yaml", block)
    monkeypatch.chdir(tmp_path)
    cfg = load_config(path)
    data = load_data(cfg)
    assert data.num_labels == 3 and data.train.label_names == ["entailment", "neutral", "contradiction"]
    assert list(data.train.labels[:3]) == [0, 2, 1]
    assert len(data.train.texts[0]) == 2  # a sentence pair
    # without label_names: the sorted distinct labels
    unnamed = load_data(load_config(path, ["data.label_names=null"]))
    assert unnamed.train.label_names == ["contradiction", "entailment", "neutral"]
