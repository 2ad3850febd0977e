"""`fedranklite run --dry-run`: the resolved config, where compute prices come from, every client's rows and
labels and a time estimate, without building a model or writing anything."""

from __future__ import annotations

import itertools
import json
import re

import numpy as np
import pytest
import yaml
from conftest import tiny_tree

from fedranklite.cli import main as cli
from fedranklite.cli.commands.dry_run import expected_max


@pytest.fixture
def no_model(monkeypatch, tmp_path):
    """Any model construction fails the test, and the profile cache is an empty folder of this test."""
    import transformers

    import fedranklite.model.backbones as backbones
    import fedranklite.model.fedmodel as fedmodel

    def refuse(*_a, **_k):
        raise AssertionError("a dry run built a model")

    monkeypatch.setattr(transformers.PreTrainedModel, "__init__", refuse)
    monkeypatch.setattr(fedmodel, "build_model", refuse)
    monkeypatch.setattr(backbones, "load_backbone", refuse)
    monkeypatch.setattr(backbones, "tiny_backbone", refuse)
    monkeypatch.setenv("FEDRANKLITE_CACHE", str(tmp_path / "cache"))


def dry(tmp_path, capsys, *sets, **sections):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_tree(tmp_path, **sections)))
    args = ["run", "--config", str(path), "--dry-run"] + [x for s in sets for x in ("--set", s)]
    code = cli.main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def comments(out: str) -> list[str]:
    return [ln[2:] for ln in out.splitlines() if ln.startswith("# ")]


def test_dry_run_prints_config_clients_and_estimate_without_a_model(tmp_path, capsys, no_model):
    code, out, err = dry(tmp_path, capsys)
    assert code == 0, err
    resolved = yaml.safe_load(out)  # the whole output is YAML: the config, the rest comment lines
    assert resolved["federation"]["num_rounds"] == 2 and resolved["model"]["name"] == "tiny:bert"
    assert resolved["timing"] == {"mode": "analytic", "sec_per_sample": 0.05, "sec_per_sample_per_rank": 0.01}
    text = comments(out)
    assert any("timing.mode analytic" in ln and "a = 0.05 s, b = 0.01 s per rank" in ln for ln in text)
    rows = [ln.split() for ln in text if re.match(r"\s+\d+\s+(fast|slow)\s", ln)]
    assert [r[1] for r in rows] == ["fast", "fast", "slow", "slow"]
    assert sum(int(r[2]) for r in rows) == 240  # every training row belongs to one client
    for r in rows:  # labels per client add up to its rows; 3 steps x batch 8 = 24 samples a round
        assert sum(int(x.split(":")[1]) for x in r[4:]) == int(r[2]) and r[3] == "24"
    # 24 samples x (0.05 + 0.01 x rank 4) / compute_factor: 2.16 s fast, 8.64 s slow; 3 of 4 clients per
    # round always include a slow one
    est = next(ln for ln in text if ln.startswith("simulated time"))
    assert "2.16 to 8.64 s" in est and "about 8.64 s per round, 17.28 s for 2 rounds" in est
    assert any(ln.startswith("wall time: no estimate without a rank profile") for ln in text)
    assert not (tmp_path / "results").exists()  # writes nothing


def test_dry_run_caps_rounds_at_a_stopping_deadline_and_counts_who_misses_it(tmp_path, capsys, no_model):
    code, out, err = dry(tmp_path, capsys, "deadline.seconds=5", "deadline.straggler_policy=drop")
    assert code == 0, err
    text = comments(out)
    assert any("at most the deadline 5 s: about 5 s per round, 10 s for 2 rounds" in ln for ln in text)
    assert "deadline 5 s: 2 of 4 clients would miss it at this rank" in text


def write_profile(path, key, intercept=0.01, slope=0.001):
    from fedranklite.run.rank_profile import SHIPPED_DIR

    data = json.loads(next(SHIPPED_DIR.glob("bundled-minilm-l6*.json")).read_text())
    data["key"] = key
    data["time_fit"] = {"intercept": intercept, "slope": slope, "r2": 1.0}
    data["sec_per_step"] = [key["batch_size"] * (intercept + slope * r) for r in data["ranks"]]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return data


def test_dry_run_names_the_profile_it_would_use_or_that_it_would_measure_one(tmp_path, capsys, no_model):
    from fedranklite.config.files import load_config
    from fedranklite.run.rank_profile import cache_dir, key_file_name, profile_key

    code, out, err = dry(tmp_path, capsys, "timing.mode=profile")
    assert code == 0, err
    text = comments(out)
    target = cache_dir() / "x"
    assert any("none yet; it would be measured and cached as" in ln and str(target.parent) in ln for ln in text)
    assert "simulated time: no estimate before the rank profile is measured" in text

    cfg = load_config(tmp_path / "tiny.yaml", ["timing.mode=profile"])
    saved = write_profile(cache_dir() / key_file_name(profile_key(cfg)), profile_key(cfg))
    code, out, err = dry(tmp_path, capsys, "timing.mode=profile")
    assert code == 0, err
    text = comments(out)
    assert any("cached on this machine" in ln for ln in text)
    assert "priced at a = 0.01 s, b = 0.001 s per rank (on the tiers' reference device)" in text
    assert "tiers:" in text and any(ln.startswith("  fast: ") for ln in text)
    # 24 samples x (0.01 + 0.001 x 4) = 0.336 s of compute for a fast client, plus the profile's bytes each way
    size = saved["bytes_fixed"] + 4 * saved["bytes_per_rank"]
    assert f"communication: {size:,} bytes each way per client at rank 4 (from the profile)" in text
    wall = next(ln for ln in text if ln.startswith("wall time"))
    assert "about 1.01 s per round, 2.016 s for 2 rounds" in wall  # 3 clients x 0.336 s, one after another


def test_dry_run_of_a_surrogate_run_prices_from_its_calibration_without_splitting_data(capsys, no_model):
    assert cli.main(["run", "-c", "configs/experiments/whatif_100k.yaml", "--dry-run"]) == 0
    text = comments(capsys.readouterr().out)
    assert any(ln.startswith("compute prices: engine.backend surrogate, the calibration") for ln in text)
    assert any(ln.startswith("clients: 100000 (10000 per round") and "no data is split" in ln for ln in text)
    assert any(ln.startswith("communication: ") and ln.endswith("(from the calibration)") for ln in text)
    est = next(ln for ln in text if ln.startswith("simulated time"))
    # 10,000 of 100,000 clients per round: a slowest-tier client is always among them
    slowest = re.search(r"to ([\d.]+) s;", est).group(1)
    assert f"about {slowest} s per round" in est
    assert "wall time: the surrogate trains no model; its wall time is the round loop's alone (not estimated)" in text


def test_dry_run_refuses_data_it_cannot_split_in_one_line(tmp_path, capsys, no_model):
    data = tmp_path / "rows.csv"
    data.write_text("sentence,label\nfine,1\nbad,0\n")  # no 'text' column
    code, out, err = dry(tmp_path, capsys, data={"source": "files", "train_file": str(data)})
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "text" in lines[0] and out == "", err


def test_expected_round_time_is_the_mean_slowest_of_every_possible_selection():
    rng = np.random.default_rng(0)
    for n, k in ((5, 2), (6, 6), (7, 1), (8, 3)):
        t = rng.random(n) * 10
        brute = np.mean([max(c) for c in itertools.combinations(t, k)])
        assert expected_max(t, k) == pytest.approx(brute)
    assert expected_max(np.full(10_000, 2.0), 5_000) == pytest.approx(2.0)  # large n stays finite
