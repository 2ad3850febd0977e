"""`fedranklite init [DIR]`: a starter config that loads, a sweep spec the sweep accepts, example data the
config reads; never a replaced file."""

from __future__ import annotations

import csv

from fedranklite.cli import main as cli
from fedranklite.config.files import load_config
from fedranklite.study.sweep import load_spec


def test_init_writes_a_config_that_loads_and_a_spec_the_sweep_accepts(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the spec's default output_dir is relative to the working directory
    folder = tmp_path / "study"
    assert cli.main(["init", str(folder)]) == 0
    printed = capsys.readouterr().out.split()
    assert sorted(printed) == sorted(str(folder / n) for n in ("config.yaml", "sweep.yaml", "data/train.csv"))
    text = (folder / "config.yaml").read_text()
    assert text.count("#") > 20  # commented for a reader
    cfg = load_config(folder / "config.yaml")
    assert cfg.data.source == "files" and cfg.data.text_columns == ["text"] and cfg.data.label_column == "label"
    assert cfg.data.train_file == str(folder / "data" / "train.csv")  # relative to the config's folder
    with open(folder / "data" / "train.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 300 and set(rows[0]) == {"text", "label"} and len({r["label"] for r in rows}) == 2
    plan = load_spec(folder / "sweep.yaml")
    assert list(plan.cells) == ["fixed", "cvx", "lite"] and plan.seeds == [0, 1, 2] and plan.reference == "lite"
    assert len(plan.runs) == 9 and plan.base == (folder / "config.yaml").resolve()


def test_init_refuses_to_replace_any_file_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "sweep.yaml").write_text("mine\n")
    assert cli.main(["init", str(tmp_path)]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "sweep.yaml" in err[0] and "already exists" in err[0]
    assert (tmp_path / "sweep.yaml").read_text() == "mine\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.yaml"]


def test_init_into_a_file_or_an_unwritable_place_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    assert cli.main(["init", str(blocker)]) == 2
    assert cli.main(["init", str(blocker / "below")]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 2 and all(ln.startswith("error: ") and "afile" in ln for ln in err), err
    assert blocker.read_text() == "x"


def test_init_runs_as_a_dry_run_out_of_the_box(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FEDRANKLITE_CACHE", str(tmp_path / "cache"))
    assert cli.main(["init", str(tmp_path)]) == 0
    capsys.readouterr()
    assert cli.main(["run", "-c", str(tmp_path / "config.yaml"), "--set", "model.name=tiny:bert", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "clients: 8 (4 per round)" in out and "split by data.partition dirichlet" in out
