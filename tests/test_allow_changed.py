"""`run --resume --allow-changed KEY`: the command line passes the accepted input changes to the resume."""

from __future__ import annotations

import json

import yaml
from conftest import tiny_tree

from fedranklite.cli import main as cli


def rows(n: int, flip: bool = False) -> str:
    words = ["good fine great", "bad awful poor"]
    lines = ["text,label"] + [f"{words[(i + flip) % 2]} {i},{i % 2}" for i in range(n)]
    return "\n".join(lines) + "\n"


def one_line(capsys) -> list[str]:
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.strip() and "warning" not in ln.lower()]


def test_allow_changed_reaches_the_resume_and_only_with_resume(tmp_path, capsys):
    data = tmp_path / "rows.csv"
    data.write_text(rows(120))
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_tree(tmp_path, data={"source": "files", "train_file": str(data)})))
    base = ["run", "-c", str(path), "-q"]
    assert cli.main(base + ["--allow-changed", "data"]) == 2  # without --resume
    err = one_line(capsys)
    assert len(err) == 1 and "--allow-changed" in err[0] and "--resume" in err[0]
    assert not (tmp_path / "results").exists()

    assert cli.main(base + ["--set", "federation.num_rounds=1"]) == 0
    capsys.readouterr()
    data.write_text(rows(120, flip=True))  # the same file, other rows: the data fingerprint changes
    assert cli.main(base + ["--resume"]) == 2
    err = one_line(capsys)
    assert len(err) == 1 and "data" in err[0] and "--allow-changed" in err[0], err
    assert cli.main(base + ["--resume", "--allow-changed", "weights"]) == 2
    err = one_line(capsys)
    assert len(err) == 1 and "'weights'" in err[0] and "backbone" in err[0], err
    assert cli.main(base + ["--resume", "--allow-changed", "data"]) == 0
    metrics = json.loads((tmp_path / "results" / "tiny" / "metrics.json").read_text())
    assert metrics["rounds_completed"] == 2
