"""The results format's version: metrics.json and every rounds.jsonl line say which format they are in;
files without the key (written before it existed) read as version 1; a file from a newer FedRankLite is
refused in one line naming it. And the results-format page documents every field a run writes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from test_summary import fixture_json, fixture_records

from fedranklite.core.records import (
    CLIENT_FIELDS,
    SCHEMA_VERSION,
    UNVERSIONED,
    RoundRecord,
    RunSummary,
    SchemaVersionError,
    schema_version,
)
from fedranklite.core.results_io import (
    ROUNDS_FILE,
    SUMMARY_FILE,
    ResultsError,
    RoundLog,
    read_run,
    rewrite_round_log,
    write_json_atomic,
)
from fedranklite.run.engine import build_engine
from fedranklite.run.summary import summarize

ROOT = Path(__file__).resolve().parents[1]
RESULTS_PAGE = ROOT / "docs" / "reference" / "results.md"
LAYOUTS = ["full", "columns"]


def write_run(folder: Path, layout: str = "full") -> RunSummary:
    summary = summarize(fixture_records(), target=0.8, metric="accuracy", run={"experiment_name": "x"})
    write_json_atomic(folder / SUMMARY_FILE, summary)
    with RoundLog(folder / ROUNDS_FILE, layout=layout) as log:
        for rec in fixture_records():
            log.write(rec)
    return summary


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def one_line_refusal(folder: Path) -> str:
    with pytest.raises(ResultsError) as info:
        read_run(folder)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_the_version_is_a_positive_integer_newer_than_unversioned_files():
    assert isinstance(SCHEMA_VERSION, int) and SCHEMA_VERSION > UNVERSIONED >= 1


# ================================================================== writers
@pytest.mark.parametrize("layout", LAYOUTS)
def test_written_summary_and_round_lines_carry_the_version(tmp_path, layout):
    write_run(tmp_path, layout)
    summary = json.loads((tmp_path / SUMMARY_FILE).read_text())
    assert summary["schema_version"] == SCHEMA_VERSION
    assert list(summary)[0] == "schema_version"  # the first thing a reader of the file sees
    lines = lines_of(tmp_path / ROUNDS_FILE)
    assert len(lines) == 4 and all(line["schema_version"] == SCHEMA_VERSION for line in lines)


def test_a_rewritten_round_log_carries_the_version(tmp_path):
    rewrite_round_log(tmp_path / ROUNDS_FILE, fixture_records()[:2])
    assert [line["schema_version"] for line in lines_of(tmp_path / ROUNDS_FILE)] == [SCHEMA_VERSION] * 2


def test_the_version_is_not_part_of_the_runs_description():
    data = summarize(fixture_records(), target=0.8, metric="accuracy", run={"experiment_name": "x"}).to_json()
    back = RunSummary.from_json(data)
    assert back.run == {"experiment_name": "x"}
    # a summary read from an older file is written back in the current format, once
    old = {k: v for k, v in data.items() if k != "schema_version"}
    again = RunSummary.from_json(old).to_json()
    assert again["schema_version"] == SCHEMA_VERSION and list(again).count("schema_version") == 1


# ================================================================== older files
@pytest.mark.parametrize("layout", LAYOUTS)
def test_files_without_the_version_read_as_the_previous_one(tmp_path, layout):
    written = write_run(tmp_path, layout)
    summary = json.loads((tmp_path / SUMMARY_FILE).read_text())
    del summary["schema_version"]
    (tmp_path / SUMMARY_FILE).write_text(json.dumps(summary))
    lines = lines_of(tmp_path / ROUNDS_FILE)
    for line in lines:
        del line["schema_version"]
    (tmp_path / ROUNDS_FILE).write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert schema_version(summary) == UNVERSIONED and schema_version(lines[0]) == UNVERSIONED
    back, records = read_run(tmp_path)
    assert back == written
    assert [r.ranks for r in records] == [r.ranks for r in fixture_records()]


def test_hand_written_unversioned_round_lines_read():
    rows = fixture_json()
    assert all("schema_version" not in row for row in rows)
    assert [RoundRecord.from_json(row).round for row in rows] == [1, 2, 3, 4]


# ================================================================== newer files
def test_a_newer_metrics_json_is_refused_naming_the_file(tmp_path):
    write_run(tmp_path)
    summary = json.loads((tmp_path / SUMMARY_FILE).read_text())
    summary["schema_version"] = SCHEMA_VERSION + 7
    (tmp_path / SUMMARY_FILE).write_text(json.dumps(summary))
    message = one_line_refusal(tmp_path)
    assert message == (
        f"{tmp_path / SUMMARY_FILE}: schema_version {SCHEMA_VERSION + 7} is newer than this FedRankLite reads "
        f"({SCHEMA_VERSION}); upgrade fedranklite"
    )


@pytest.mark.parametrize("which", [0, 3])
def test_a_newer_round_line_is_refused_naming_the_file(tmp_path, which):
    write_run(tmp_path)
    lines = lines_of(tmp_path / ROUNDS_FILE)
    lines[which]["schema_version"] = SCHEMA_VERSION + 1
    (tmp_path / ROUNDS_FILE).write_text("".join(json.dumps(line) + "\n" for line in lines))
    message = one_line_refusal(tmp_path)
    assert message.startswith(f"{tmp_path / ROUNDS_FILE}: schema_version {SCHEMA_VERSION + 1} is newer")
    assert message.endswith("upgrade fedranklite")
    with pytest.raises(ResultsError, match=re.escape(str(tmp_path / ROUNDS_FILE))):
        RoundLog.read(tmp_path / ROUNDS_FILE)


def test_the_record_readers_refuse_a_newer_version_without_a_file():
    data = summarize(fixture_records(), target=0.8, metric="accuracy").to_json()
    with pytest.raises(SchemaVersionError, match="newer than this FedRankLite reads"):
        RunSummary.from_json({**data, "schema_version": SCHEMA_VERSION + 1})
    with pytest.raises(SchemaVersionError, match="newer than this FedRankLite reads"):
        RoundRecord.from_json({**fixture_json()[0], "schema_version": SCHEMA_VERSION + 1})


@pytest.mark.parametrize("bad", ["2", 0, -1, 1.5, True, None])
def test_a_version_that_is_not_a_positive_integer_is_not_a_run_summary(tmp_path, bad):
    write_run(tmp_path)
    summary = json.loads((tmp_path / SUMMARY_FILE).read_text())
    summary["schema_version"] = bad
    (tmp_path / SUMMARY_FILE).write_text(json.dumps(summary))
    message = one_line_refusal(tmp_path)
    assert "cannot be read as a run summary" in message and "schema_version" in message


# ================================================================== the results-format page
def documented_keys() -> set[str]:
    """Every `name` in backquotes on the results-format page."""
    return set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", RESULTS_PAGE.read_text()))


@pytest.fixture(scope="module")
def fresh_runs(tmp_path_factory):
    """Two real runs on the tiny backbone: per-client records (full) and columns (no per-client maps)."""
    from conftest import tiny_tree

    from fedranklite.config.files import validate

    out = []
    for layout in LAYOUTS:
        tmp = tmp_path_factory.mktemp(layout)
        cfg = validate(tiny_tree(tmp, experiment_name=f"doc_{layout}", metrics={"client_records": layout}))
        build_engine(cfg).run()
        out.append(cfg.results_dir)
    return out


def test_every_field_of_a_fresh_run_is_on_the_results_page(fresh_runs):
    documented = documented_keys()
    missing = {}
    for folder in fresh_runs:
        summary = json.loads((folder / SUMMARY_FILE).read_text())
        lines = lines_of(folder / ROUNDS_FILE)
        assert summary["schema_version"] == SCHEMA_VERSION and lines
        keys = {f"{SUMMARY_FILE}: {k}" for k in summary}
        keys |= {f"{SUMMARY_FILE} bytes: {k}" for k in summary["bytes"]}
        keys |= {f"{SUMMARY_FILE} time_to_target: {k}" for k in summary["time_to_target"]}
        keys |= {f"{SUMMARY_FILE} rounds[]: {k}" for line in summary["rounds"] for k in line}
        for line in lines:
            keys |= {f"{ROUNDS_FILE}: {k}" for k in line}
            keys |= {f"{ROUNDS_FILE} clients[]: {k}" for row in line.get("clients", []) for k in row}
            keys |= {f"{ROUNDS_FILE} client_columns: {k}" for k in line.get("client_columns", {})}
        for key in keys:
            if key.rsplit(": ", 1)[1] not in documented:
                missing.setdefault(key, folder.name)
    assert not missing, f"fields written by a run but not on {RESULTS_PAGE.name}: {sorted(missing)}"


def test_every_client_field_is_on_the_results_page():
    assert not set(CLIENT_FIELDS) - documented_keys()


def test_the_results_page_names_the_current_version():
    assert f'"schema_version": {SCHEMA_VERSION}' in RESULTS_PAGE.read_text()
