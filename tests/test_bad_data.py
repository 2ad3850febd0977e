"""Bad data through the command line: a clear one-line error and exit 2, never a traceback."""

from __future__ import annotations

import json

import pytest
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


# ---- inputs checked by meaning: one line naming the file (and the row), exit 2
def one_line(code, err_lines, expect):
    assert code == 2, err_lines
    assert len(err_lines) == 1, err_lines
    assert expect in err_lines[0], err_lines[0]


def run_lines(tmp_path, capsys, name: str, data: bytes, **extra):
    (tmp_path / name).write_bytes(data)
    tree = tiny_tree(tmp_path, data={"source": "files", "train_file": str(tmp_path / name), **extra})
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tree))
    code = cli.main(["run", "--config", str(cfg), "--quiet"])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, [ln for ln in captured.err.splitlines() if ln.strip() and not ln.startswith("20")]


def test_labels_mixing_ids_and_names_are_refused_not_four_classes(tmp_path, capsys):
    rows = "text,label\n" + "".join(f"a film {i},{['0', '1', 'neg', 'pos'][i % 4]}\n" for i in range(40))
    code, lines = run_lines(tmp_path, capsys, "train.csv", rows.encode())
    one_line(code, lines, "train.csv: column 'label' mixes integer labels (0, 1) and label names ('neg', 'pos')")


def test_a_jsonl_row_whose_text_is_an_object_is_refused(tmp_path, capsys):
    rows = [{"text": f"a film {i}", "label": i % 2} for i in range(40)]
    rows[6]["text"] = {"title": "x", "body": "y"}
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    code, lines = run_lines(tmp_path, capsys, "train.jsonl", data)
    one_line(code, lines, "train.jsonl: data row 7: column 'text' holds a JSON object")


def test_a_null_text_is_refused_in_the_first_column(tmp_path, capsys):
    rows = [{"text": f"a film {i}", "label": i % 2} for i in range(40)]
    rows[3]["text"] = None
    code, lines = run_lines(tmp_path, capsys, "train.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
    one_line(code, lines, "data row 4: column 'text' is missing (null)")


@pytest.mark.parametrize(
    "name, data, expect",
    [
        ("train.csv", b"PAR1" + bytes(200), "train.csv: not a CSV file: it is a Parquet file"),
        ("train.csv", bytes(range(256)) * 40, "train.csv: not a CSV file: it holds binary data"),
        ("train.jsonl", b"PK\x03\x04" + bytes(100), "train.jsonl: not a JSONL file: it is a ZIP archive"),
        ("train.json", b"text,label\na,1\n", "train.json: not JSON: it starts with 't'"),
        ("train.parquet", b"text,label\na,1\n", "train.parquet: not a Parquet file"),
        ("train.csv", "text,label\ncaf\xe9,1\n".encode("latin-1"), "train.csv: not UTF-8 text"),
        ("train.jsonl", b'{"text": "a", "label": 1}\n{"text": "b", "lab', "train.jsonl: line 2: not JSON"),
        ("train.jsonl", b'{"text": "a", "label": 1}\n[1, 2]\n', "train.jsonl: line 2: a JSON list, not an object"),
    ],
)
def test_a_file_that_is_not_what_its_extension_says(tmp_path, capsys, name, data, expect):
    """Checked before the reader sees the file: one line naming it (and the line, for JSON lines)."""
    code, lines = run_lines(tmp_path, capsys, name, data)
    one_line(code, lines, expect)
