"""Every file a shipped YAML (configs/, benchmarks/, experiments/) names is in the repository: its bases, the rank
profile, the surrogate calibration, data and trace files, sweep bases, and any other value that reads as a
file (.json, .jsonl, .csv, .tsv, .parquet, .yaml, .yml). A config that names a file the repository lacks runs on
the author's machine and nowhere else."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from fedranklite.config.files import FILE_PATH_KEYS

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("configs", "benchmarks", "experiments")
FILE_SUFFIXES = (".json", ".jsonl", ".csv", ".tsv", ".parquet", ".yaml", ".yml")
# read relative to the YAML file's own folder (config/files.py); every other path from the repository root, where
# the shipped configs are run from (timing.profile, engine.surrogate.calibration: the current directory)
FOLDER_RELATIVE = {".".join(k) for k in FILE_PATH_KEYS} | {"_base_", "base"}
FILE_KEYS = FOLDER_RELATIVE | {"timing.profile", "engine.surrogate.calibration"}


def tracked_files() -> set[str]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError):
        pytest.skip("not a git checkout: which files are in the repository is unknown")
    return set(out.stdout.splitlines())


def shipped_yamls(tracked: set[str]) -> list[str]:
    return sorted(f for f in tracked if f.split("/", 1)[0] in FOLDERS and f.endswith((".yaml", ".yml")))


def _values(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _values(value, (*path, str(key)))
    elif isinstance(node, list):
        for item in node:
            yield from _values(item, path)
    elif isinstance(node, str):
        yield ".".join(path), node


def named_files(text: str) -> list[tuple[str, str]]:
    """(dotted key, value) of every file a YAML text names: the known file keys (a `_base_` preset such as
    glue:sst2 is not a file) and any other one-word value with a file suffix."""
    out = []
    for dotted, value in _values(yaml.safe_load(text) or {}):
        value = value.strip()
        if not value or any(c.isspace() for c in value):
            continue
        leaf = dotted.rsplit(".", 1)[-1]
        if dotted in FILE_KEYS or leaf in ("_base_", "base"):
            if leaf == "_base_" and ":" in value:
                continue  # a named preset (glue:sst2), not a path
            out.append((dotted, value))
        elif value.lower().endswith(FILE_SUFFIXES):
            out.append((dotted, value))
    return out


def missing(yaml_file: str, tracked: set[str], root: Path = ROOT) -> list[str]:
    """'key: value' for every file `yaml_file` names that is not a tracked file of the repository."""
    folder = Path(yaml_file).parent
    problems = []
    for dotted, value in named_files((root / yaml_file).read_text()):
        if Path(os.path.expanduser(value)).is_absolute():
            problems.append(f"{dotted}: {value} (an absolute path: not in the repository)")
            continue
        leaf = dotted.rsplit(".", 1)[-1]
        relative = dotted in FOLDER_RELATIVE or leaf in ("_base_", "base")
        candidates = [folder / value] if relative else [Path(value), folder / value]
        if not any(os.path.normpath(c).replace(os.sep, "/") in tracked for c in candidates):
            problems.append(f"{dotted}: {value}")
    return problems


def test_the_scan_finds_a_named_file_that_is_not_there(tmp_path):
    """The check below fails on a config that names a profile or a results file the repository lacks."""
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "x.yaml").write_text(
        "_base_: [base.yaml, 'glue:sst2']\n"
        "timing: {profile: profiles/missing.json}\n"
        "engine: {surrogate: {calibration: configs/cal.json}}\n"
        "report: {inputs: [results/run/metrics.json]}\n"
        "tiers: {t: {compute_source: 'peak FP32 of a.json vs b.json'}}\n"
    )
    tracked = {"configs/x.yaml", "configs/base.yaml", "configs/cal.json"}
    assert missing("configs/x.yaml", tracked, tmp_path) == [
        "timing.profile: profiles/missing.json",
        "report.inputs: results/run/metrics.json",
    ]
    tracked |= {"profiles/missing.json", "results/run/metrics.json"}
    assert missing("configs/x.yaml", tracked, tmp_path) == []
    (tmp_path / "configs" / "y.yaml").write_text("_base_: ../base.yaml\n")  # relative to its own folder
    assert missing("configs/y.yaml", tracked, tmp_path) == ["_base_: ../base.yaml"]


def test_every_file_a_shipped_yaml_names_is_in_the_repository():
    tracked = tracked_files()
    files = shipped_yamls(tracked)
    assert "configs/base.yaml" in files and len(files) >= 10
    problems = [f"{f}: {p}" for f in files for p in missing(f, tracked)]
    assert not problems, "shipped YAML names files the repository lacks:\n  " + "\n  ".join(problems)


def test_every_shipped_rank_profile_is_in_the_repository():
    """The profiles timing.mode: profile finds by key ship as package data, tracked like code."""
    from fedranklite.run.rank_profile import SHIPPED_DIR

    tracked = tracked_files()
    shipped = sorted(SHIPPED_DIR.glob("*.json")) + sorted(SHIPPED_DIR.glob("devices/*.json"))  # and the device links
    assert shipped
    for path in shipped:
        assert path.relative_to(ROOT).as_posix() in tracked, path.name
