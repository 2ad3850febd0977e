"""Bad data through the command line: a clear one-line error and exit 2, never a traceback."""

from __future__ import annotations

import yaml
from conftest import tiny_tree

from fedranklite.cli import main as cli


def run_with_data(tmp_path, capsys, files: dict[str, str], **data):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    tree = tiny_tree(tmp_path, data={"source": "files", **data})
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tree))
    code = cli.main(["run", "--config", str(cfg), "--quiet"])
    err = " ".join(capsys.readouterr().err.split())
    assert "Traceback" not in err
    return code, err


GOOD_ROWS = "text,label\n" + "".join(f"the movie was great number {i},{i % 2}\n" for i in range(40))


def test_missing_text_column(tmp_path, capsys):
    code, err = run_with_data(
        tmp_path, capsys, {"train.csv": GOOD_ROWS}, train_file=str(tmp_path / "train.csv"), text_columns=["sentence"]
    )
    assert code == 2 and "'sentence' not found" in err and "text" in err


def test_missing_label_column(tmp_path, capsys):
    code, err = run_with_data(
        tmp_path, capsys, {"train.csv": GOOD_ROWS}, train_file=str(tmp_path / "train.csv"), label_column="gold"
    )
    assert code == 2 and "'gold' not found" in err


def test_empty_file(tmp_path, capsys):
    code, err = run_with_data(tmp_path, capsys, {"train.csv": ""}, train_file=str(tmp_path / "train.csv"))
    assert code == 2 and "empty" in err


def test_header_only_file(tmp_path, capsys):
    code, err = run_with_data(tmp_path, capsys, {"train.csv": "text,label\n"}, train_file=str(tmp_path / "train.csv"))
    assert code == 2 and "no rows" in err


def test_labels_out_of_range(tmp_path, capsys):
    rows = "text,label\n" + "".join(f"a fine film {i},{i % 3}\n" for i in range(40))
    code, err = run_with_data(
        tmp_path, capsys, {"train.csv": rows}, train_file=str(tmp_path / "train.csv"), num_labels=2
    )
    assert code == 2 and "labels must lie in [0, 1]" in err


def test_partition_that_leaves_a_client_empty(tmp_path, capsys):
    rows = "text,label\n" + "".join(f"a fine film {i},{i % 2}\n" for i in range(3))  # 3 rows, 4 clients
    code, err = run_with_data(
        tmp_path,
        capsys,
        {"train.csv": rows, "eval.csv": rows},
        train_file=str(tmp_path / "train.csv"),
        eval_file=str(tmp_path / "eval.csv"),
    )
    assert code == 2 and "every client needs data" in err
