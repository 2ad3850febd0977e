"""Hostile and careless inputs beyond config files (those are tests/bad_configs/): `--set` values, this
machine's devices, the backbone's limits, giant texts and labels in data files, unwritable outputs, and the
CLI's net under every command. Each: exit code, one line, the named key or file, nothing earlier lost."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_tree

from fedranklite.cli import main as cli
from fedranklite.core.safeyaml import MAX_NODES, YamlError, load_yaml_text

BASE = str(Path(__file__).resolve().parents[1] / "configs" / "base.yaml")


def one_error_line(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


@pytest.fixture
def no_loading(monkeypatch):
    import fedranklite.model.fedmodel as fedmodel
    import fedranklite.run.engine as engine

    def must_not_load(*_a, **_k):
        raise AssertionError("a model or data was loaded for a problem known before")

    monkeypatch.setattr(engine, "build_engine", must_not_load)
    monkeypatch.setattr(fedmodel, "load_backbone", must_not_load)
    monkeypatch.setattr(logging.getLogger(), "handlers", [])


SET_CASES = [
    ("seed=-1", "--set: seed: Input should be greater than or equal to 0"),
    ("seed=1180591620717411303424", "--set: seed: Input should be less than or equal to 4294967295"),
    ("device=tpu", "--set: device: expected auto, cpu, cuda, cuda:N or mps"),
    ("device=cuda:x", "--set: device: expected auto, cpu, cuda, cuda:N or mps"),
    ("training.lr=inf", "--set: training.lr: Input should be a finite number"),
    ("training.lr=.nan", "--set: training.lr"),
    ("tiers.gpu_fast.compute_factor=.inf", "--set: tiers.gpu_fast.compute_factor: Input should be a finite number"),
    ("federation.max_update_norm_ratio=.inf", "--set: federation.max_update_norm_ratio"),
    ("federation.num_rounds=1e9", "--set: federation.num_rounds"),
    ("federation.num_rounds=10000000000", "--set: federation.num_rounds: Input should be less than or equal to"),
    ("model.max_length=1e20", "--set: model.max_length"),
    ("model.lora.r_max=1000000", "--set: model.lora.r_max: Input should be less than or equal to 65536"),
    ("tiers.cpu_slow.num_clients=1000000000", "--set: tiers.cpu_slow.num_clients"),
    ("data.num_labels=99999999999", "--set: data.num_labels"),
    ("federation.aggregation={type: fedavg, x: 1, x: 2}", "duplicate key 'x'"),
    ("experiment_name=" + "x" * 5000, "--set: experiment_name: has 5000 characters"),
]


@pytest.mark.parametrize("item,expect", SET_CASES, ids=[c[0][:40] for c in SET_CASES])
def test_hostile_set_value_is_one_line_before_loading(item, expect, capsys, no_loading, tmp_path):
    code = cli.main(["run", "--config", BASE, "--set", f"output_dir={tmp_path}", "--set", item])
    line = one_error_line(capsys)
    assert code == 2
    assert expect in line
    assert len(line) < 600  # a 5,000-character value is quoted cut short, not in full
    assert not any(tmp_path.iterdir())  # nothing was created


def test_an_oversized_config_file_is_refused_unread(tmp_path, capsys, no_loading):
    config = tmp_path / "huge.yaml"
    config.write_text(f"_base_: {BASE}\n" + ("# padding " + "x" * 100 + "\n") * 10_000)  # 1.1 MB
    assert cli.main(["run", "--config", str(config)]) == 2
    line = one_error_line(capsys)
    assert "huge.yaml: larger than 1024 kB" in line


def test_many_tiers_whose_total_is_too_many_clients(capsys, no_loading, tmp_path):
    sets = [f"tiers.t{i}={{compute_factor: 1, num_clients: 9000000, memory_gb: 8}}" for i in range(3)]
    code = cli.main(
        ["run", "--config", BASE, *sum((["--set", s] for s in sets), []), "--set", f"output_dir={tmp_path}"]
    )
    assert code == 2 and "clients in all; at most 10,000,000" in one_error_line(capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has CUDA: the request is valid here")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:7"])
def test_cuda_on_a_machine_without_it_is_refused_before_loading(device, capsys, no_loading, tmp_path):
    code = cli.main(["run", "--config", BASE, "--set", f"device={device}", "--set", f"output_dir={tmp_path}"])
    line = one_error_line(capsys)
    assert code == 2 and f"device: '{device}' asked for, but this machine has no usable CUDA device" in line
    assert "base.yaml" in line
    assert not any(tmp_path.iterdir())


def test_a_cuda_index_beyond_the_machine_is_refused(monkeypatch):
    from fedranklite.run import preflight

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert preflight.device_problem("cuda:1") is None
    assert "has 2 CUDA device(s)" in preflight.device_problem("cuda:2")
    assert preflight.device_problem("cpu") is None


def test_model_limits_come_from_a_local_models_config_json(tmp_path, capsys, no_loading):
    model = tmp_path / "my_model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "bert", "max_position_embeddings": 256, "hidden_size": 64}')
    code = cli.main(
        ["run", "--config", BASE, "--set", f"model.name={model}", "--set", "model.max_length=300"]
        + [
            "--set",
            "model.lora.r_max=80",
            "--set",
            "federation.scheduler.r_max=16",
            "--set",
            f"output_dir={tmp_path}/o",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "model.max_length: 300 is more than the 256 positions" in err
    assert "model.lora.r_max: 80 is more than" in err and "hidden size 64" in err


def test_model_limits_are_skipped_when_nothing_can_be_read_cheaply(tmp_path):
    from fedranklite.config.files import load_config
    from fedranklite.run import preflight

    for name in ("some-org/some-hub-model", str(tmp_path / "no_such_dir"), "bundled:smollm2-135m"):
        cfg = load_config(BASE, [f"model.name={name}", "model.max_length=100000"])
        assert preflight.model_problems(cfg) == []  # the loader reports what it finds, in its own words
    cfg = load_config(BASE, ["model.name=tiny:bert", "model.max_length=129"])
    assert [k for k, _ in preflight.model_problems(cfg)] == ["model.max_length"]


# ------------------------------------------------------------------ the YAML reader itself
def test_aliases_within_the_bound_still_work():
    text = "t: &t {compute_factor: 1, num_clients: 2, memory_gb: 8}\na: *t\nb: {<<: *t, num_clients: 3}\n"
    tree = load_yaml_text(text)
    assert tree["a"] == tree["t"] and tree["b"]["num_clients"] == 3 and tree["b"]["memory_gb"] == 8


def test_alias_bomb_is_measured_not_expanded():
    import time

    levels = ["x0: &x0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    levels += [f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}"] * 9) + "]" for i in range(1, 30)]  # 9^30 leaves
    began = time.perf_counter()
    with pytest.raises(YamlError, match=f"more than {MAX_NODES:,} values"):
        load_yaml_text("\n".join(levels))
    assert time.perf_counter() - began < 5


@pytest.mark.parametrize(
    "text,expect",
    [
        ("a: 1\nb:\n  c: 2\n  c: 3\n", "duplicate key 'c' on lines 3 and 4"),
        ("? [1, 2]\n: x\n", "a mapping key must be a plain value"),
        ("a: &a [*a]\n", "a recursive alias"),
        ("a: [1, 2\n", "not valid YAML"),
        ("a: *nowhere\n", "not valid YAML"),
    ],
)
def test_yaml_text_refusals(text, expect):
    with pytest.raises(YamlError, match=expect):
        load_yaml_text(text)


def test_a_parser_message_is_cut_to_one_short_line():
    with pytest.raises(YamlError) as info:
        load_yaml_text("a: [" + "x, " * 20000 + "\n  b: 1\n")
    assert "\n" not in str(info.value) and len(str(info.value)) <= 320


# ------------------------------------------------------------------ data files
def _run_files(tmp_path, capsys, rows: str):
    (tmp_path / "train.csv").write_text(rows)
    tree = tiny_tree(tmp_path, data={"source": "files", "train_file": str(tmp_path / "train.csv")})
    tree["federation"]["num_rounds"] = 1
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tree))
    code = cli.main(["run", "--config", str(cfg), "--quiet"])
    return code, capsys.readouterr().err


def test_a_label_id_that_would_need_a_terabyte_head_is_refused(tmp_path, capsys):
    rows = "text,label\n" + "".join(f"a fine film {i},{(i % 2) * 99999999999}\n" for i in range(40))
    code, err = _run_files(tmp_path, capsys, rows)
    flat = " ".join(err.split())
    assert code == 2 and "class label 99999999999 in column 'label' would make 100,000,000,000 classes" in flat
    assert "train.csv" in flat and "Traceback" not in err


def test_a_giant_text_is_cut_before_tokenising(tmp_path, capsys, caplog):
    giant = "word " * 400_000  # 2 MB in one field
    rows = "text,label\n" + "".join(f"a fine film {i},{i % 2}\n" for i in range(40)) + f'"{giant}",1\n'
    with caplog.at_level(logging.INFO, logger="fedranklite"):
        code, err = _run_files(tmp_path, capsys, rows)
    assert code == 0, err
    assert any("longer than" in r.getMessage() and "were cut" in r.getMessage() for r in caplog.records)


def test_cap_texts_keeps_short_texts_and_cuts_long_ones():
    import numpy as np

    from fedranklite.data.load import cap_texts
    from fedranklite.data.textsplit import TextSplit

    split = TextSplit([("short", "x" * 50), ("y" * 11, "ok")], np.array([0, 1]))
    out = cap_texts(split, 10, "here")
    assert out.texts == [("short", "x" * 10), ("y" * 10, "ok")] and list(out.labels) == [0, 1]
    assert cap_texts(split, 100, "here") is split


# ------------------------------------------------------------------ outputs and the net under every command
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("finished")
    tree = tiny_tree(base)
    tree["federation"]["num_rounds"] = 2
    cfg = base / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tree))
    assert cli.main(["run", "--config", str(cfg), "--quiet"]) == 0
    return Path(tree["output_dir"]) / tree["experiment_name"]


@pytest.mark.parametrize(
    "argv,option",
    [
        (["plot", "{run}", "--out", "/proc/not_here"], "--out /proc/not_here"),
        (["compare", "{run}", "--plot", "/proc/x.png"], "--plot /proc/x.png"),
    ],
)
def test_an_unwritable_output_is_one_line(argv, option, finished_run, capsys):
    before = sorted(p.name for p in finished_run.iterdir())
    code = cli.main([a.replace("{run}", str(finished_run)) for a in argv])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip() and "differ" not in ln]
    assert code == 2 and len(err) == 1 and option in err[0] and "cannot be written" in err[0], err
    assert sorted(p.name for p in finished_run.iterdir()) == before


def test_an_unexpected_error_is_one_line_with_a_hint_and_debug_shows_the_traceback(monkeypatch, capsys, tmp_path):
    import fedranklite.study.plots as plots

    def broken(*_a, **_k):
        raise KeyError("something nobody anticipated\nwith a second line")

    monkeypatch.setattr(plots, "plot_run", broken)
    assert cli.main(["plot", str(tmp_path)]) == 1
    line = one_error_line(capsys)
    assert line.startswith("error: KeyError:") and "--debug" in line and "(at fedranklite/cli/commands/plot.py:" in line
    assert "something nobody anticipated" in line and "with a second line" in line
    with pytest.raises(KeyError):
        cli.main(["--debug", "plot", str(tmp_path)])


def test_an_interrupt_is_one_line_and_exit_130(monkeypatch, capsys, tmp_path):
    import fedranklite.study.plots as plots

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(plots, "plot_run", interrupted)
    assert cli.main(["plot", str(tmp_path)]) == 130
    assert one_error_line(capsys) == "interrupted"


@pytest.mark.parametrize("kind", ["dev_zero", "directory", "duplicate", "too_big"])
def test_a_sweep_spec_is_read_with_the_same_care(kind, tmp_path, capsys):
    spec = {"dev_zero": Path("/dev/zero"), "directory": tmp_path}.get(kind, tmp_path / "spec.yaml")
    if kind == "duplicate":
        spec.write_text("base: x.yaml\nbase: y.yaml\nschedulers: [lite]\n")
    if kind == "too_big":
        spec.write_text("base: x.yaml\n" + "#" * (2 << 20) + "\n")
    assert cli.main(["sweep", str(spec)]) == 2
    line = one_error_line(capsys)
    expect = {
        "dev_zero": "not a regular file",
        "directory": "is a directory",
        "duplicate": "duplicate key 'base' on lines 1 and 2",
        "too_big": "larger than 1024 kB",
    }[kind]
    assert expect in line and str(spec) in line


def test_a_value_its_tag_cannot_hold_is_a_string_in_set_and_an_error_in_a_file():
    from fedranklite.config.files import parse_override

    assert parse_override("experiment_name=2024-02-30") == (["experiment_name"], "2024-02-30")
    for text in ("a: 2024-02-30\n", "a: " + "9" * 5000 + "\n", "a: !!bool maybe\n", "a: !!float abc\n"):
        with pytest.raises(YamlError, match="a value cannot be read"):
            load_yaml_text(text)


def test_a_config_from_a_pipe_is_read(tmp_path):
    import os
    import threading

    from fedranklite.config.files import load_config

    fifo = tmp_path / "cfg.yaml"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text(f"_base_: {BASE}\nseed: 7\n"))
    writer.start()
    try:
        assert load_config(fifo).seed == 7  # `-c <(envsubst < x.yaml)`
    finally:
        writer.join(5)


def test_surrogate_runs_need_no_device_or_model_check_and_mps_is_checked():
    from fedranklite.config.files import load_config
    from fedranklite.config.schema import ConfigError
    from fedranklite.run import preflight

    root = Path(BASE).parents[1]
    cfg = load_config(root / "configs" / "experiments" / "whatif_100k.yaml", ["device=cuda"])
    preflight.check(cfg)  # the surrogate loads no model and uses no device
    mps = load_config(BASE, ["device=mps"])
    if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        with pytest.raises(ConfigError, match="'mps' asked for"):
            preflight.check(mps)


def test_a_checkpoint_from_before_a_new_key_resumes_when_the_key_is_at_its_default(tmp_path):
    from fedranklite.config.files import load_config
    from fedranklite.run.checkpoint import ResumeError, check_config

    current = load_config(BASE).to_dict()
    saved = {**current, "federation": {k: v for k, v in current["federation"].items() if k != "clip_update_norm"}}
    check_config(tmp_path / "checkpoint.pt", saved, current)  # the key did not exist then: its default
    changed = load_config(BASE, ["federation.clip_update_norm=2.0"]).to_dict()
    with pytest.raises(ResumeError, match="federation.clip_update_norm"):
        check_config(tmp_path / "checkpoint.pt", saved, changed)


@pytest.mark.parametrize(
    "config_json,max_length,refused",
    [
        ('{"model_type": "roberta", "max_position_embeddings": 514, "hidden_size": 64}', 513, True),
        ('{"model_type": "roberta", "max_position_embeddings": 514, "hidden_size": 64}', 512, False),
        ('{"model_type": "deberta-v2", "max_position_embeddings": 512, "position_biased_input": false}', 2048, False),
        ('{"model_type": "gpt2", "n_positions": 1024, "n_embd": 64}', 1025, True),
        ("[1, 2, 3]", 100000, False),  # not a model config: left to the loader
    ],
)
def test_model_limits_read_the_common_config_json_shapes(tmp_path, config_json, max_length, refused):
    from fedranklite.config.files import load_config
    from fedranklite.run import preflight

    (tmp_path / "config.json").write_text(config_json)
    cfg = load_config(BASE, [f"model.name={tmp_path}", f"model.max_length={max_length}"])
    problems = [k for k, _ in preflight.model_problems(cfg)]
    assert ("model.max_length" in problems) == refused
