"""Config loading: `_base_` inheritance, deep merge, `--set` overrides, the typed schema and every
rejection case. Fast: no model, no data is loaded (that itself is asserted below)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fedranklite.config.files import apply_overrides, deep_merge, dump_config, load_config, parse_override
from fedranklite.config.schema import Config, ConfigError

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
BASE = CONFIGS / "base.yaml"

# A complete, valid stand-alone config (no `_base_`), small enough to reason about by hand.
MINIMAL = """\
experiment_name: minimal
seed: 1
federation:
  num_rounds: 3
  clients_per_round: 2
  scheduler: {type: fixed, r_min: 2, r_bar: 4}
model:
  lora: {r_max: 8, target_modules: [query, value]}
tiers:
  fast: {compute_factor: 1.0, num_clients: 2, memory_gb: 8}
  slow: {compute_factor: 0.5, num_clients: 1, memory_gb: 4}
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def leaf_on_base(tmp_path: Path, body: str, name: str = "leaf.yaml") -> Path:
    """A config in tmp_path that inherits the shipped base.yaml (by absolute path) and adds `body`."""
    return write(tmp_path / name, f"_base_: {BASE}\n" + textwrap.dedent(body))


def rejection(path: Path, overrides=None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return str(info.value)


def assert_names(message: str, where: str | Path, key: str) -> None:
    """The message names the file (or --set) and the dotted key, on the same line."""
    where = str(Path(where).resolve()) if isinstance(where, Path) else where
    lines = [line for line in message.splitlines() if where in line and key in line]
    assert lines, f"no line of the message names both {where!r} and {key!r}:\n{message}"


# ================================================================== deep merge
def test_deep_merge_dicts_merge_lists_and_scalars_replace():
    base = {"a": {"x": 1, "y": {"p": 1, "q": 2}, "l": [1, 2, 3]}, "s": "base", "keep": True}
    over = {"a": {"y": {"q": 20, "r": 30}, "l": [9]}, "s": "over", "new": None}
    merged = deep_merge(base, over)
    assert merged == {"a": {"x": 1, "y": {"p": 1, "q": 20, "r": 30}, "l": [9]}, "s": "over", "keep": True, "new": None}
    # the inputs are not modified
    assert base == {"a": {"x": 1, "y": {"p": 1, "q": 2}, "l": [1, 2, 3]}, "s": "base", "keep": True}
    assert over == {"a": {"y": {"q": 20, "r": 30}, "l": [9]}, "s": "over", "new": None}


def test_deep_merge_type_changes_replace_wholesale():
    assert deep_merge({"a": {"x": 1}}, {"a": 5}) == {"a": 5}
    assert deep_merge({"a": 5}, {"a": {"x": 1}}) == {"a": {"x": 1}}
    assert deep_merge({"a": [1, 2]}, {"a": {"x": 1}}) == {"a": {"x": 1}}
    assert deep_merge({"a": {"x": 1}}, {"a": None}) == {"a": None}
    assert deep_merge({}, {}) == {}


# ================================================================== inheritance
def test_chain_base_mid_leaf_relative_to_each_file_not_the_cwd(tmp_path, monkeypatch):
    write(tmp_path / "root" / "base.yaml", MINIMAL)
    write(
        tmp_path / "root" / "sub" / "mid.yaml",
        """\
        _base_: ../base.yaml
        experiment_name: mid
        federation:
          num_rounds: 5
        model:
          lora: {target_modules: [query, key, value]}
        """,
    )
    write(
        tmp_path / "elsewhere" / "deep" / "leaf.yaml",
        """\
        _base_: ../../root/sub/mid.yaml
        experiment_name: leaf
        model:
          lora: {target_modules: [dense]}
        tiers:
          slow: {num_clients: 3}
        """,
    )
    run_dir = tmp_path / "cwd"
    run_dir.mkdir()
    monkeypatch.chdir(run_dir)  # bases must resolve from each file, not from here
    cfg = load_config(Path("..") / "elsewhere" / "deep" / "leaf.yaml")
    assert cfg.experiment_name == "leaf"  # leaf beats mid and base
    assert cfg.federation.num_rounds == 5  # from mid
    assert cfg.federation.clients_per_round == 2  # from base, kept by the dict merge
    assert cfg.federation.scheduler.type == "fixed"  # from base
    assert cfg.seed == 1
    assert cfg.model.lora.target_modules == ["dense"]  # lists replace, they do not concatenate
    assert cfg.model.lora.r_max == 8
    assert cfg.model.lora.alpha == 32.0  # schema default, set nowhere
    # tiers merge per tier and per field
    assert cfg.tiers["slow"].num_clients == 3
    assert cfg.tiers["slow"].compute_factor == 0.5
    assert cfg.tiers["fast"].num_clients == 2
    assert cfg.num_clients == 5
    assert cfg.client_tiers() == ["fast", "fast", "slow", "slow", "slow"]


def test_list_of_bases_merge_in_order_then_the_file_itself(tmp_path):
    write(tmp_path / "common" / "a.yaml", MINIMAL)
    write(
        tmp_path / "common" / "b.yaml",
        """\
        experiment_name: from_b
        seed: 7
        training: {lr: 0.01, batch_size: 4}
        """,
    )
    leaf = write(
        tmp_path / "exp" / "leaf.yaml",
        """\
        _base_: [../common/a.yaml, ../common/b.yaml]
        training: {batch_size: 8}
        """,
    )
    cfg = load_config(leaf)
    assert cfg.experiment_name == "from_b"  # b is merged after a
    assert cfg.seed == 7
    assert cfg.training.lr == 0.01  # from b
    assert cfg.training.batch_size == 8  # the leaf beats both bases
    assert cfg.federation.num_rounds == 3  # from a
    assert set(cfg.tiers) == {"fast", "slow"}


def test_diamond_inheritance_is_not_a_cycle(tmp_path):
    write(tmp_path / "root.yaml", MINIMAL)
    write(tmp_path / "left.yaml", "_base_: root.yaml\nseed: 11\n")
    write(tmp_path / "right.yaml", "_base_: root.yaml\nfederation: {num_rounds: 9}\n")
    cfg = load_config(write(tmp_path / "top.yaml", "_base_: [left.yaml, right.yaml]\n"))
    assert cfg.federation.num_rounds == 9
    # right re-merges root after left: root's seed (1) comes back over left's 11 - a plain ordered merge
    assert cfg.seed == 1


def test_null_or_empty_base_list_means_no_base(tmp_path):
    cfg = load_config(write(tmp_path / "a.yaml", "_base_: []\n" + MINIMAL))
    assert cfg.experiment_name == "minimal"
    cfg = load_config(write(tmp_path / "b.yaml", "_base_: null\n" + MINIMAL))
    assert cfg.experiment_name == "minimal"


def test_absolute_and_relative_base_paths_to_the_shipped_base(tmp_path):
    by_abs = load_config(leaf_on_base(tmp_path, "experiment_name: abs\n"))
    rel = os.path.relpath(BASE, tmp_path / "nested")
    by_rel = load_config(write(tmp_path / "nested" / "leaf.yaml", f"_base_: {rel}\nexperiment_name: abs\n"))
    assert by_abs == by_rel
    assert by_abs.federation.num_rounds == 12


# ================================================================== shipped configs
def assert_base_defaults(cfg: Config) -> None:
    tiers = {name: (t.compute_factor, t.num_clients) for name, t in cfg.tiers.items()}
    assert tiers == {"gpu_fast": (1.2, 3), "gpu_medium": (0.23, 3), "cpu_slow": (0.15, 4)}  # x an H100 (base.yaml)
    assert list(cfg.tiers) == ["gpu_fast", "gpu_medium", "cpu_slow"]  # clients are numbered in this order
    assert all(t.memory_gb > 0 for t in cfg.tiers.values())
    assert cfg.num_clients == 10
    assert cfg.client_tiers() == ["gpu_fast"] * 3 + ["gpu_medium"] * 3 + ["cpu_slow"] * 4
    assert cfg.model.name == "bundled:minilm-l6"
    assert cfg.model.lora.r_max == 16 and cfg.r_max == 16
    assert cfg.model.lora.target_modules == ["query", "value"]
    assert cfg.federation.clients_per_round == 10 and cfg.federation.num_rounds == 12
    assert cfg.federation.aggregation.type == "fedavg"
    assert (cfg.training.max_local_steps, cfg.training.lr, cfg.training.head_lr) == (4, 2e-3, 1e-2)
    assert cfg.data.source == "embedded" and cfg.data.name == "sentiment"
    assert cfg.metrics.fairness_percentiles == [10.0, 50.0, 90.0]


def test_base_yaml_loads_with_the_documented_defaults():
    cfg = load_config(BASE)
    assert_base_defaults(cfg)
    assert cfg.experiment_name == "base"  # experiment_name: null -> the file's name
    assert cfg.deadline.seconds is None
    assert cfg.deadline.straggler_policy.type == "wait"
    assert cfg.federation.scheduler.type == "lite"


EXPERIMENTS = {
    "baseline_cvx": dict(name="baseline_cvx", scheduler="cvx", partition="iid", deadline=None),
    "baseline_fixed": dict(name="baseline_fixed", scheduler="fixed", partition="iid", deadline=None),
    "lite_iid": dict(name="lite_iid", scheduler="lite", partition="iid", deadline=None),
    "lite_noniid_deadline": dict(name="lite_noniid_deadline", scheduler="lite", partition="dirichlet", deadline=90.0),
}


WHATIF = {"whatif_100k"}  # surrogate-backend what-if configs (tests/test_surrogate.py)


def test_every_shipped_experiment_is_covered_here():
    shipped = {p.stem for p in (CONFIGS / "experiments").glob("*.yaml")}
    assert shipped == set(EXPERIMENTS) | WHATIF


@pytest.mark.parametrize("stem", sorted(EXPERIMENTS))
def test_shipped_experiment_resolves(stem):
    want = EXPERIMENTS[stem]
    # the headline experiment's training settings are base.yaml's defaults; it sets its own target
    headline = ["evaluation.target=0.9"]
    cfg = load_config(CONFIGS / "experiments" / f"{stem}.yaml", headline if stem == "lite_noniid_deadline" else [])
    assert_base_defaults(cfg)
    assert cfg.experiment_name == want["name"]
    assert cfg.results_dir == Path("results") / want["name"]
    assert cfg.federation.scheduler.type == want["scheduler"]
    assert cfg.data.partition.type == want["partition"]
    assert cfg.deadline.seconds == want["deadline"]


def test_lite_noniid_deadline_values():
    cfg = load_config(CONFIGS / "experiments" / "lite_noniid_deadline.yaml")
    assert cfg.experiment_name == "lite_noniid_deadline"
    assert cfg.data.partition.type == "dirichlet"
    assert cfg.data.partition.alpha == 0.1
    assert cfg.federation.scheduler.type == "lite"
    assert cfg.deadline.seconds == 90
    assert cfg.deadline.straggler_policy.type == "use_partial"
    assert cfg.timing.mode == "profile"  # the default: measured rank costs, deterministic
    # hidden per-client deviation and jitter on every tier; every client answers (availability is verdict c's)
    assert all(t.speed_sigma > 0 and t.jitter_sigma > 0 and t.availability == 1 for t in cfg.tiers.values())
    # settings that learn under Dirichlet 0.1 (experiments/headline_tuning/): every client every round
    assert cfg.federation.clients_per_round == cfg.num_clients == 10
    assert (cfg.training.max_local_steps, cfg.federation.num_rounds, cfg.evaluation.target) == (4, 12, 0.85)
    assert cfg.federation.aggregation.type == "fedavg"  # blockwise ended at one class with mixed ranks here


def test_every_shipped_experiment_uses_the_profile_time_model_unless_it_says_why():
    for path in sorted((CONFIGS / "experiments").rglob("*.yaml")):
        if path.name.startswith("_"):
            continue
        cfg = load_config(path)
        why = "timing" in path.read_text() or cfg.engine.backend == "surrogate"  # a comment or override says why
        assert cfg.timing.mode == "profile" or why, path


def test_baseline_fixed_rank():
    cfg = load_config(CONFIGS / "experiments" / "baseline_fixed.yaml")
    assert cfg.federation.scheduler.rank == 8


def test_config_is_frozen():
    cfg = load_config(BASE)
    with pytest.raises(Exception):
        cfg.seed = 5  # type: ignore[misc]


def test_dumped_config_loads_back_identical(tmp_path):
    cfg = load_config(CONFIGS / "experiments" / "lite_noniid_deadline.yaml", ["training.lr=0.0005"])
    dump_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert again.training.lr == 0.0005


# ================================================================== --set overrides
def test_parse_override_values_are_yaml():
    assert parse_override("federation.num_rounds=3") == (["federation", "num_rounds"], 3)
    assert parse_override("training.lr=0.25") == (["training", "lr"], 0.25)
    assert parse_override("model.lora.target_modules=[query, key]") == (
        ["model", "lora", "target_modules"],
        ["query", "key"],
    )
    assert parse_override("deadline.seconds=null") == (["deadline", "seconds"], None)
    assert parse_override("experiment_name=run=2") == (["experiment_name"], "run=2")  # split at the first '='
    assert parse_override(" federation . num_rounds = 4") == (["federation", "num_rounds"], 4)
    assert parse_override("a={x: 1}") == (["a"], {"x": 1})
    assert parse_override("x=true") == (["x"], True)


def test_overrides_typed_and_applied_after_the_files(tmp_path):
    cfg = load_config(
        CONFIGS / "experiments" / "lite_noniid_deadline.yaml",
        [
            "federation.num_rounds=3",  # int
            "training.lr=1e-4",  # YAML 1.1 reads this as a string; the schema makes it a float
            "evaluation.target=0.75",  # float
            "model.lora.target_modules=[query, key, value]",  # list replaces
            "deadline.seconds=null",  # null
            "experiment_name=from_cli",
            "data.partition.alpha=2",
            "tiers.cpu_slow.num_clients=2",
            "federation.clients_per_round=5",  # the headline takes all 10; 8 remain
            "federation.num_rounds=4",  # the later of two wins
        ],
    )
    assert cfg.federation.num_rounds == 4
    assert cfg.training.lr == pytest.approx(1e-4) and isinstance(cfg.training.lr, float)
    assert cfg.evaluation.target == 0.75
    assert cfg.model.lora.target_modules == ["query", "key", "value"]
    assert cfg.deadline.seconds is None
    assert cfg.experiment_name == "from_cli"
    assert cfg.data.partition.alpha == 2.0
    assert cfg.data.partition.type == "dirichlet"  # untouched siblings stay
    assert cfg.tiers["cpu_slow"].num_clients == 2 and cfg.tiers["cpu_slow"].compute_factor == 0.15
    assert cfg.num_clients == 8


def test_apply_overrides_records_the_source():
    sources: dict[str, str] = {}
    tree = apply_overrides({"a": {"b": 1, "c": 2}}, ["a.b=5", "a.d={e: 1}"], sources)
    assert tree == {"a": {"b": 5, "c": 2, "d": {"e": 1}}}
    assert sources["a.b"] == "--set" and sources["a.d"] == "--set" and sources["a.d.e"] == "--set"
    assert "a.c" not in sources


def test_override_of_a_new_nested_key_is_unknown():
    msg = rejection(BASE, ["model.lora.rank_max=4"])
    assert_names(msg, "--set", "model.lora.rank_max")
    assert "unknown key" in msg
    assert "did you mean 'r_max'" in msg


def test_override_of_a_new_section_is_unknown():
    msg = rejection(BASE, ["optimiser.lr=0.1"])
    assert_names(msg, "--set", "optimiser")
    assert "unknown key" in msg


def test_override_adding_a_tier_needs_every_tier_field():
    msg = rejection(BASE, ["tiers.edge.compute_factor=0.1"])
    assert_names(msg, "--set", "tiers.edge.num_clients")
    assert_names(msg, "--set", "tiers.edge.memory_gb")


@pytest.mark.parametrize(
    "item, key",
    [
        ("seed", "seed"),
        ("federation.num_rounds", "federation.num_rounds"),
        ("a..b=1", "a..b"),
        ("=3", "=3"),
        (".x=1", ".x"),
    ],
)
def test_bad_set_syntax(item, key):
    msg = rejection(BASE, [item])
    assert "--set" in msg and key in msg


def test_override_with_an_impossible_value_names_set():
    msg = rejection(BASE, ["federation.clients_per_round=20"])
    assert_names(msg, "--set", "federation.clients_per_round")


# ================================================================== rejections: schema
def test_unknown_key_with_suggestion(tmp_path):
    leaf = leaf_on_base(tmp_path, "federation:\n  clients_per_rnd: 3\n")
    msg = rejection(leaf)
    assert_names(msg, leaf, "federation.clients_per_rnd")
    assert "unknown key" in msg and "did you mean 'clients_per_round'" in msg


def test_unknown_top_level_key_with_suggestion(tmp_path):
    leaf = leaf_on_base(tmp_path, "experiment_nmae: x\n")
    msg = rejection(leaf)
    assert_names(msg, leaf, "experiment_nmae")
    assert "did you mean 'experiment_name'" in msg


def test_misspelt_base_key_is_suggested(tmp_path):
    leaf = write(tmp_path / "leaf.yaml", f"_base: {BASE}\n")
    msg = rejection(leaf)
    assert_names(msg, leaf, "_base")
    assert "did you mean '_base_'" in msg


def test_unknown_key_inside_a_tier_with_suggestion(tmp_path):
    leaf = leaf_on_base(tmp_path, "tiers:\n  gpu_fast: {compute_factr: 2}\n")
    msg = rejection(leaf)
    assert_names(msg, leaf, "tiers.gpu_fast.compute_factr")
    assert "did you mean 'compute_factor'" in msg


def test_unknown_key_without_any_close_match_has_no_suggestion(tmp_path):
    leaf = leaf_on_base(tmp_path, "training:\n  zzzzzz: 1\n")
    msg = rejection(leaf)
    assert_names(msg, leaf, "training.zzzzzz")
    assert "did you mean" not in msg


def test_error_in_a_middle_file_names_that_file(tmp_path):
    write(tmp_path / "base.yaml", MINIMAL)
    mid = write(tmp_path / "mid" / "mid.yaml", "_base_: ../base.yaml\nmodel:\n  lora: {alhpa: 4}\n")
    leaf = write(tmp_path / "leaf" / "leaf.yaml", "_base_: ../mid/mid.yaml\nseed: 3\n")
    msg = rejection(leaf)
    assert_names(msg, mid, "model.lora.alhpa")
    assert "did you mean 'alpha'" in msg
    assert str(leaf.resolve()) not in msg


def test_a_leaf_value_beats_the_base_in_error_attribution(tmp_path):
    # base.yaml sets clients_per_round 5; the leaf raises it past the 10 clients: the leaf is named
    leaf = leaf_on_base(tmp_path, "federation:\n  clients_per_round: 11\n")
    msg = rejection(leaf)
    assert_names(msg, leaf, "federation.clients_per_round")
    assert str(BASE) not in msg


@pytest.mark.parametrize(
    "body, key",
    [
        ("federation:\n  num_rounds: many\n", "federation.num_rounds"),
        ("federation:\n  num_rounds: 2.5\n", "federation.num_rounds"),
        ("federation:\n  num_rounds: true\n", "federation.num_rounds"),  # a YAML boolean is not a number
        ("deadline:\n  seconds: yes\n", "deadline.seconds"),
        ("experiment_name: [a, b]\n", "experiment_name"),
        ("model: 5\n", "model"),
        ("model:\n  lora:\n    target_modules: query\n", "model.lora.target_modules"),
        ("model:\n  quantization: 3bit\n", "model.quantization"),
        ("training:\n  optimizer: lamb\n", "training.optimizer"),
        ("data:\n  source: s3\n", "data.source"),
        ("tiers:\n  gpu_fast: {compute_factor: fast}\n", "tiers.gpu_fast.compute_factor"),
        ("tiers:\n  gpu_fast: {compute_factor: 0}\n", "tiers.gpu_fast.compute_factor"),
        ("tiers:\n  gpu_fast: {num_clients: 0}\n", "tiers.gpu_fast.num_clients"),
        ("tiers:\n  gpu_fast: 3\n", "tiers.gpu_fast"),
        ("federation:\n  scheduler:\n    ema: 1.5\n", "federation.scheduler.ema"),
        ("model:\n  lora:\n    r_max: 0\n", "model.lora.r_max"),
        ("data:\n  text_columns: [a, b, c]\n", "data.text_columns"),
    ],
)
def test_wrong_type_or_range(tmp_path, body, key):
    leaf = leaf_on_base(tmp_path, body)
    msg = rejection(leaf)
    assert_names(msg, leaf, key)


@pytest.mark.parametrize("seconds", [-5, 0])
def test_negative_or_zero_deadline(tmp_path, seconds):
    leaf = leaf_on_base(tmp_path, f"deadline:\n  seconds: {seconds}\n")
    msg = rejection(leaf)
    assert_names(msg, leaf, "deadline.seconds")


def test_negative_deadline_by_override():
    msg = rejection(BASE, ["deadline.seconds=-1"])
    assert_names(msg, "--set", "deadline.seconds")


def test_all_problems_are_reported_together(tmp_path):
    leaf = leaf_on_base(tmp_path, "seed: x\ntraining:\n  batchsize: 3\n")
    msg = rejection(leaf)
    assert_names(msg, leaf, "seed")
    assert_names(msg, leaf, "training.batchsize")


# ================================================================== rejections: semantics
def test_r_min_greater_than_r_max(tmp_path):
    leaf = leaf_on_base(tmp_path, "federation:\n  scheduler: {r_min: 20, r_bar: 8}\n")
    msg = rejection(leaf)
    assert_names(msg, leaf, "federation.scheduler.r_min")
    assert "20" in msg and "16" in msg


def test_r_min_greater_than_the_scheduler_r_max(tmp_path):
    leaf = leaf_on_base(tmp_path, "federation:\n  scheduler: {r_min: 6, r_max: 4, r_bar: 5}\n")
    msg = rejection(leaf)
    assert_names(msg, leaf, "federation.scheduler.r_min")


def test_scheduler_r_max_above_the_adapter_rank(tmp_path):
    leaf = leaf_on_base(tmp_path, "federation:\n  scheduler: {r_max: 32}\n")
    msg = rejection(leaf)
    assert_names(msg, leaf, "federation.scheduler.r_max")


@pytest.mark.parametrize("r_bar", [1, 17, 16.5])
def test_r_bar_outside_bounds(tmp_path, r_bar):
    leaf = leaf_on_base(tmp_path, f"federation:\n  scheduler: {{r_bar: {r_bar}}}\n")
    msg = rejection(leaf)
    assert_names(msg, leaf, "federation.scheduler.r_bar")


@pytest.mark.parametrize("r_bar", [2, 16, 7.5])
def test_r_bar_on_and_inside_the_bounds_is_fine(tmp_path, r_bar):
    cfg = load_config(leaf_on_base(tmp_path, f"federation:\n  scheduler: {{r_bar: {r_bar}}}\n"))
    assert cfg.federation.scheduler.r_bar == r_bar


def test_fixed_rank_outside_bounds(tmp_path):
    leaf = leaf_on_base(tmp_path, "federation:\n  scheduler: {type: fixed, rank: 64}\n")
    msg = rejection(leaf)
    assert_names(msg, leaf, "federation.scheduler.rank")


def test_clients_per_round_above_number_of_clients(tmp_path):
    leaf = leaf_on_base(tmp_path, "federation:\n  clients_per_round: 11\n")
    msg = rejection(leaf)
    assert_names(msg, leaf, "federation.clients_per_round")
    assert "10" in msg


def test_clients_per_round_equal_to_number_of_clients_is_fine(tmp_path):
    cfg = load_config(leaf_on_base(tmp_path, "federation:\n  clients_per_round: 10\n"))
    assert cfg.federation.clients_per_round == 10


def test_clients_per_round_checked_against_tiers_changed_by_override():
    cfg = load_config(BASE, ["tiers.cpu_slow.num_clients=1", "federation.clients_per_round=5"])  # 7 clients
    assert cfg.num_clients == 7
    msg = rejection(
        BASE, ["tiers.gpu_fast.num_clients=1", "tiers.gpu_medium.num_clients=1", "tiers.cpu_slow.num_clients=2"]
    )  # 4 clients < 10 per round (set in base.yaml)
    assert_names(msg, BASE, "federation.clients_per_round")
    assert "4 clients" in msg


@pytest.mark.parametrize(
    "body, key, wrong, hint",
    [
        ("federation:\n  scheduler: {type: lyte}\n", "federation.scheduler.type", "lyte", "lite"),
        ("federation:\n  aggregation: fedavgg\n", "federation.aggregation", "fedavgg", "fedavg"),
        ("data:\n  partition: {type: dirichlett}\n", "data.partition.type", "dirichlett", "dirichlet"),
        ("deadline:\n  straggler_policy: dropp\n", "deadline.straggler_policy", "dropp", "drop"),
        ("evaluation:\n  metric: acuracy\n", "evaluation.metric", "acuracy", "accuracy"),
        ("data:\n  name: sentimnt\n", "data.name", "sentimnt", "sentiment"),
    ],
)
def test_unknown_registry_names(tmp_path, body, key, wrong, hint):
    leaf = leaf_on_base(tmp_path, body)
    msg = rejection(leaf)
    assert_names(msg, leaf, key)
    assert repr(wrong) in msg
    assert f"did you mean '{hint}'" in msg


def test_unknown_name_by_override():
    msg = rejection(BASE, ["federation.scheduler.type=optimal"])
    assert_names(msg, "--set", "federation.scheduler.type")


def test_metric_of_the_wrong_task(tmp_path):
    leaf = leaf_on_base(tmp_path, "evaluation:\n  metric: pearson\n")
    msg = rejection(leaf)
    assert_names(msg, leaf, "evaluation.metric")
    cfg = load_config(
        leaf_on_base(
            tmp_path,
            "evaluation:\n  metric: pearson\ndata: {source: hub, name: glue, subset: stsb, task: regression}\n",
            name="ok.yaml",
        )
    )
    assert cfg.evaluation.metric == "pearson"


def test_empty_tiers(tmp_path):
    # dicts merge, so a leaf cannot empty its base's tiers: use a stand-alone file
    leaf = write(tmp_path / "leaf.yaml", "federation: {clients_per_round: 1}\ntiers: {}\n")
    msg = rejection(leaf)
    assert_names(msg, leaf, "tiers")


def test_no_tiers_at_all(tmp_path):
    leaf = write(tmp_path / "leaf.yaml", "experiment_name: x\n")
    msg = rejection(leaf)
    assert_names(msg, leaf, "tiers")


def test_federation_num_clients_must_match_the_tiers(tmp_path):
    leaf = leaf_on_base(tmp_path, "federation:\n  num_clients: 7\n")
    msg = rejection(leaf)
    assert_names(msg, leaf, "federation.num_clients")
    assert "7" in msg and "10" in msg
    cfg = load_config(leaf_on_base(tmp_path, "federation:\n  num_clients: 10\n", name="ok.yaml"))
    assert cfg.num_clients == 10


def test_missing_data_file(tmp_path):
    missing = tmp_path / "nope.csv"
    leaf = leaf_on_base(tmp_path, f"data:\n  source: files\n  train_file: {missing}\n")
    msg = rejection(leaf)
    assert_names(msg, leaf, "data.train_file")
    assert str(missing) in msg


def test_missing_eval_file(tmp_path):
    train = tmp_path / "train.csv"
    train.write_text("text,label\na,0\n")
    missing = tmp_path / "dev.csv"
    leaf = leaf_on_base(tmp_path, f"data:\n  source: files\n  train_file: {train}\n  eval_file: {missing}\n")
    msg = rejection(leaf)
    assert_names(msg, leaf, "data.eval_file")
    assert "data.train_file" not in msg


def test_files_source_needs_a_train_file(tmp_path):
    leaf = leaf_on_base(tmp_path, "data:\n  source: files\n")
    msg = rejection(leaf)
    assert_names(msg, leaf, "data.train_file")


def test_unsupported_data_file_type(tmp_path):
    train = tmp_path / "train.xlsx"
    train.write_text("x")
    leaf = leaf_on_base(tmp_path, f"data:\n  source: files\n  train_file: {train}\n")
    msg = rejection(leaf)
    assert_names(msg, leaf, "data.train_file")
    assert ".xlsx" in msg


def test_existing_data_file_is_accepted(tmp_path):
    train = tmp_path / "train.tsv"
    train.write_text("text\tlabel\na\t0\n")
    cfg = load_config(leaf_on_base(tmp_path, f"data:\n  source: files\n  train_file: {train}\n"))
    assert cfg.data.train_file == str(train)


def test_data_file_by_override(tmp_path):
    msg = rejection(BASE, ["data.source=files", f"data.train_file={tmp_path / 'x.csv'}"])
    assert_names(msg, "--set", "data.train_file")


@pytest.mark.parametrize(
    "body, key",
    [
        ("metrics:\n  fairness_percentiles: [10, 150]\n", "metrics.fairness_percentiles"),
        ("evaluation:\n  target: .inf\n", "evaluation.target"),
        ("data:\n  task: regression\n  num_labels: 3\n", "data.num_labels"),
        ("data:\n  num_labels: 1\n", "data.num_labels"),
        ("data:\n  label_names: [a, b, c]\n  num_labels: 2\n", "data.label_names"),
        ("data:\n  label_names: [a, a]\n", "data.label_names"),
        ("data:\n  task: regression\n", "data.task"),  # the embedded task is classification
        (
            "data:\n  num_labels: 2\n  partition: {type: label_skew, labels_per_client: 3}\n",
            "data.partition.labels_per_client",
        ),
    ],
)
def test_other_impossible_values(tmp_path, body, key):
    leaf = leaf_on_base(tmp_path, body)
    msg = rejection(leaf)
    assert_names(msg, leaf, key)


# ================================================================== rejections: files
def test_cyclic_base(tmp_path):
    a = write(tmp_path / "a.yaml", "_base_: sub/b.yaml\nseed: 1\n")
    b = write(tmp_path / "sub" / "b.yaml", "_base_: ../a.yaml\nseed: 2\n")
    msg = rejection(a)
    assert "_base_" in msg and "cyclic" in msg
    assert str(a.resolve()) in msg and str(b.resolve()) in msg


def test_self_referencing_base(tmp_path):
    a = write(tmp_path / "a.yaml", "_base_: a.yaml\n")
    msg = rejection(a)
    assert_names(msg, a, "_base_")
    assert "cyclic" in msg


def test_missing_base_file(tmp_path):
    leaf = write(tmp_path / "leaf.yaml", "_base_: ../nowhere/base.yaml\n")
    msg = rejection(leaf)
    assert_names(msg, leaf, "_base_")
    assert "nowhere" in msg and "not found" in msg


def test_missing_base_deeper_in_the_chain_names_that_file(tmp_path):
    mid = write(tmp_path / "mid.yaml", "_base_: gone.yaml\n")
    leaf = write(tmp_path / "leaf.yaml", "_base_: mid.yaml\n")
    msg = rejection(leaf)
    assert_names(msg, mid, "_base_")


def test_base_that_is_a_directory(tmp_path):
    (tmp_path / "dir").mkdir()
    leaf = write(tmp_path / "leaf.yaml", "_base_: dir\n")
    msg = rejection(leaf)
    assert_names(msg, leaf, "_base_")


@pytest.mark.parametrize("bases", ["3", "[a.yaml, 3]", "{x: 1}"])
def test_base_of_the_wrong_type(tmp_path, bases):
    leaf = write(tmp_path / "leaf.yaml", f"_base_: {bases}\n")
    msg = rejection(leaf)
    assert_names(msg, leaf, "_base_")


def test_missing_config_file(tmp_path):
    msg = rejection(tmp_path / "absent.yaml")
    assert str((tmp_path / "absent.yaml").resolve()) in msg and "not found" in msg


def test_invalid_yaml(tmp_path):
    leaf = write(tmp_path / "leaf.yaml", "seed: 1\nfederation:\n  num_rounds: [1, 2\n")
    msg = rejection(leaf)
    assert str(leaf.resolve()) in msg
    assert "YAML" in msg
    assert "line" in msg  # where in the file


def test_invalid_yaml_in_a_base(tmp_path):
    base = write(tmp_path / "base.yaml", "a: b: c\n")
    leaf = write(tmp_path / "leaf.yaml", "_base_: base.yaml\n")
    msg = rejection(leaf)
    assert str(base.resolve()) in msg and "YAML" in msg


@pytest.mark.parametrize("text, kind", [("- a\n- b\n", "list"), ("just a string\n", "str"), ("42\n", "int")])
def test_top_level_not_a_mapping(tmp_path, text, kind):
    leaf = write(tmp_path / "leaf.yaml", text)
    msg = rejection(leaf)
    assert str(leaf.resolve()) in msg
    assert "mapping" in msg and kind in msg


def test_empty_base_file_contributes_nothing(tmp_path):
    write(tmp_path / "empty.yaml", "# nothing here\n")
    cfg = load_config(write(tmp_path / "leaf.yaml", "_base_: empty.yaml\n" + MINIMAL))
    assert cfg.experiment_name == "minimal"


# ================================================================== before any model or data
def _boom(*args, **kwargs):
    raise AssertionError("a model was loaded while loading the config")


def test_rejection_happens_before_any_model_loads(tmp_path, monkeypatch):
    import fedranklite.data.load as data
    import fedranklite.model.fedmodel as fedmodel

    for name in ("load_backbone", "build_model"):  # load_backbone as build_model sees it
        monkeypatch.setattr(fedmodel, name, _boom)
    monkeypatch.setattr(data, "load_data", _boom)
    monkeypatch.setattr(data, "_load_file", _boom)
    bad = leaf_on_base(tmp_path, "federation:\n  scheduler: {r_min: 20}\n")
    with pytest.raises(ConfigError):
        load_config(bad)
    with pytest.raises(ConfigError):
        load_config(BASE, ["federation.clients_per_round=50"])
    assert load_config(CONFIGS / "experiments" / "lite_noniid_deadline.yaml").seed == 0


def test_config_loading_imports_no_model_or_data_library(tmp_path):
    bad = leaf_on_base(tmp_path, "federation:\n  scheduler: {type: nope}\n")
    code = textwrap.dedent(f"""
        import sys
        from fedranklite.config.schema import ConfigError
        from fedranklite.config.files import load_config
        load_config({str(CONFIGS / "experiments" / "lite_noniid_deadline.yaml")!r})
        try:
            load_config({str(bad)!r})
        except ConfigError:
            pass
        else:
            raise SystemExit("no ConfigError")
        heavy = sorted(m for m in sys.modules
                       if m
                       in ("fedranklite.model.backbones", "fedranklite.model.fedmodel",
                           "fedranklite.run.client", "fedranklite.run.engine")
                       or m.split(".")[0] in ("transformers", "peft", "datasets"))
        print("HEAVY", heavy)
        raise SystemExit(1 if heavy else 0)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    "key",
    [
        "timing.profile",
        "data.data_dir",
        "data.train_file",
        "data.subset",
        "model.cache_dir",
        "model.name",
        "federation.client_trace",
        "output_dir",
        "data.train_split",
    ],
)
def test_an_empty_text_value_is_refused_not_taken_as_the_default(tmp_path, key):
    # `--set timing.profile=` used to load as '' and then mean "no profile": a rank profile was measured under
    # the machine's load instead of the one the user thought they had passed
    msg = rejection(BASE, [f"{key}="])
    assert_names(msg, "--set", key)
    assert "is empty" in msg
    section, _, leaf = key.rpartition(".")
    body = f"{section}:\n  {leaf}: '   '\n" if section else f"{leaf}: '   '\n"
    msg = rejection(leaf_on_base(tmp_path, body))
    assert key in msg and "is empty" in msg


def test_null_still_means_the_default_for_an_optional_text_key():
    cfg = load_config(BASE, ["timing.profile=null", "data.data_dir=null"])
    assert cfg.timing.profile is None and cfg.data.data_dir is None


def test_an_empty_text_value_inside_a_plugin_section_is_refused():
    msg = rejection(BASE, ["engine.backend=surrogate", "engine.surrogate.calibration="])
    assert_names(msg, "--set", "engine.surrogate.calibration")
    assert "is empty" in msg


@pytest.mark.parametrize(
    "item", ["model.lora.target_modules=[query, ' ']", "data.text_columns=['']", "data.label_names=[a, '']"]
)
def test_an_empty_item_of_a_text_list_is_refused(item):
    msg = rejection(BASE, [item])
    key = item.split("=")[0]
    assert_names(msg, "--set", key)
    assert "is empty" in msg
