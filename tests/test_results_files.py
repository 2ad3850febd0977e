"""Benchmarks and studies keep their provenance: every results file names the script that wrote it, run_all.py
runs every benchmark, every study folder has its notes and its script, no results or notes file speaks of how
the work went or of one machine's paths, and no script imports another script's private names."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
EXPERIMENTS = ROOT / "experiments"
sys.path.insert(0, str(BENCH))

import run_all  # noqa: E402

RESULT_DIRS = [BENCH / "results", EXPERIMENTS]
FORBIDDEN = [
    r"\bsession \d+",
    r"\bwork period",
    r"lent (a )?GPU",
    r"/tmp/",
    r"/work/",
    r"/root/",
    r"\bthis session\b",
]
SCRIPT_REF = re.compile(r"`((?:benchmarks|experiments)/[\w./-]+\.py)`")


def repository_files() -> list[Path] | None:
    """The files git would commit under the results folders (tracked, or new and not ignored); None outside a
    git checkout."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", *map(str, RESULT_DIRS)],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return [ROOT / name for name in out.decode().split("\0") if name]


def results_files(suffix: str) -> list[Path]:
    listed = repository_files()
    found = listed if listed is not None else [p for d in RESULT_DIRS for p in d.rglob("*")]
    return sorted(p for p in found if p.is_file() and p.name.endswith(suffix))


def engine_output(path: Path) -> bool:
    """A file of a `fedranklite run` results folder kept inside a study (metrics.json beside rounds.jsonl): the
    engine wrote it, with its own schema; the study's script and notes name it."""
    return (path.parent / "metrics.json").is_file() and (path.parent / "rounds.jsonl").is_file()


NOTES = ("NOTES.md", "SPEC.md")  # a study's notes and plan: they name its script anywhere (see the study test)


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def scripts() -> list[Path]:
    return sorted(p for p in [*BENCH.glob("*.py"), *EXPERIMENTS.rglob("*.py")] if p.is_file())


def named_script(path: Path) -> str | None:
    """The script a results file names: a JSON's top-level "script" (a rank profile, which the package loads
    field by field, keeps it in its provenance), a Markdown file's first or last non-empty line."""
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            return None
        return data.get("script") or (data.get("provenance") or {}).get("script")
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    for line in (lines[0], lines[-1]) if lines else ():
        found = SCRIPT_REF.search(line)
        if found:
            return found.group(1)
    return None


def test_there_are_results_files_to_check():
    assert len(results_files(".json")) >= 20 and len(results_files(".md")) >= 10


@pytest.mark.parametrize(
    "path",
    [p for p in results_files(".json") + results_files(".md") if p.name not in NOTES and not engine_output(p)],
    ids=rel,
)
def test_every_results_file_names_an_existing_script(path):
    script = named_script(path)
    assert script, f"{rel(path)}: names no script (JSON: a top-level 'script'; Markdown: first or last line)"
    assert (ROOT / script).is_file(), f"{rel(path)}: names {script}, which does not exist"
    assert script.startswith(("benchmarks/", "experiments/")) and script.endswith(".py")


@pytest.mark.parametrize(
    "path", [p for p in results_files("") if p.suffix in (".json", ".md", ".txt", ".yaml")], ids=rel
)
def test_no_results_or_notes_file_speaks_of_the_work_or_of_a_machine(path):
    text = path.read_text()
    hits = [m.group(0) for pattern in FORBIDDEN for m in re.finditer(pattern, text, flags=re.IGNORECASE)]
    assert not hits, f"{rel(path)}: {sorted(set(hits))}"


def test_run_all_runs_every_benchmark_in_the_folder_and_nothing_else():
    """Every bench_*.py here, plus study scripts named from the repository root that only read committed runs."""
    on_disk = sorted(p.name for p in BENCH.glob("bench_*.py"))
    here = [b.script for b in run_all.BENCHES.values() if "/" not in b.script]
    assert sorted(here) == on_disk
    studies = [b.script for b in run_all.BENCHES.values() if "/" in b.script]
    assert studies == ["experiments/regime_map/analyze.py", "experiments/regime_cells/verdict.py"]
    for name in run_all.BENCHES:
        cmd = run_all.command(name, quick=True, results=Path("R"))
        script = run_all.BENCHES[name].script
        assert Path(cmd[1]) == (ROOT / script if "/" in script else BENCH / script) and cmd[0] == sys.executable
        assert Path(cmd[1]).is_file()
        assert all("{" not in arg for arg in cmd), cmd  # every placeholder filled


def test_run_all_list_names_every_benchmark_and_its_script():
    proc = subprocess.run([sys.executable, str(BENCH / "run_all.py"), "--list"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == len(run_all.BENCHES)
    for line, (name, bench) in zip(lines, run_all.BENCHES.items()):
        assert line.split()[0] == name and run_all.script_of(name) in line
        assert (ROOT / run_all.script_of(name)).is_file()


def test_run_all_refuses_an_unknown_name_and_runs_nothing(tmp_path):
    cmd = [sys.executable, str(BENCH / "run_all.py"), "overhead", "nosuch", "--results", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 2 and "nosuch" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("committed", [False, True], ids=["regenerated", "committed"])
def test_the_summary_names_the_script_of_every_figure(committed):
    summary = BENCH / "results" / "summary.md"
    text = summary.read_text() if committed else run_all.summary_markdown(BENCH / "results")
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| figure")]
    rows = [r for r in rows if not r.startswith("| experiment")]
    table = [r for r in rows if r.count("|") == 6]  # the figure table: figure, measured, target, verdict, script
    assert len(table) >= 8
    for row in table:
        script = SCRIPT_REF.search(row.split("|")[-2])
        assert script and (ROOT / script.group(1)).is_file(), row


def test_a_quick_summary_says_it_is_not_a_result(tmp_path):
    (tmp_path / "memory.json").write_text(
        json.dumps({"peak_rss_mb": {"10_clients": 100.0, "100_clients": 110.0}, "ratio": 1.1, "met": True})
    )
    text = run_all.summary_markdown(tmp_path, quick=True)
    assert "not a result" in text
    assert (
        "| peak RSS, 100 vs 10 clients | 110 MB vs 100 MB: 1.100 | <= 1.2 | met | `benchmarks/bench_memory.py` |"
        in text
    )


def test_the_summary_shows_scheduler_quality_only_from_results_that_record_their_pricing(tmp_path):
    """Scheduler quality reports simulated time: a quality.json without the tiers' pricing was measured under an
    earlier clock, and the summary names it as such instead of tabulating it."""
    row = {
        "experiment": "lite_iid",
        "scheduler": "lite",
        "final_score_mean": 0.8,
        "final_score_std": 0.01,
        "reached_target": "0/1",
        "ttt_sim_seconds_mean": None,
        "compliance_pct_mean": 100.0,
        "sim_time_total_mean": 12.0,
        "kb_up_per_client_round": 291.0,
        "client_loss_p50_mean": 0.5,
        "client_loss_p90_mean": 0.6,
    }
    quality = {"settings": {"seeds": [0]}, "table": [row]}
    (tmp_path / "quality.json").write_text(json.dumps(quality))
    text = run_all.summary_markdown(tmp_path)
    assert "Scheduler quality" not in text and "| lite_iid |" not in text
    assert "measured under an earlier clock" in text
    (tmp_path / "quality.json").write_text(json.dumps({**quality, "pricing": {"lite_iid": {"gpu_fast": {}}}}))
    text = run_all.summary_markdown(tmp_path)
    assert "## Scheduler quality (mean over seeds 0)" in text and "| lite_iid | lite | 0.800 ± 0.010 |" in text


def test_no_superseded_scheduler_or_aggregator_results_are_shipped():
    """The scheduler-quality and aggregator results are shipped only with the pricing of the clock they were
    measured under (each run records metrics.json's `pricing`)."""
    quality = load_json(BENCH / "results" / "quality.json")
    assert quality is None or quality.get("pricing"), "benchmarks/results/quality.json: no pricing (earlier clock)"
    aggregators = load_json(BENCH / "results" / "aggregators.json")
    if aggregators is not None:
        stale = [r for r in aggregators["runs"] if not r.get("pricing") or not r.get("settings")]
        assert not stale, f"benchmarks/results/aggregators.json: {len(stale)} runs without pricing or settings"


def test_the_glue_table_is_the_committed_results_rendered_with_each_rows_clock():
    from bench_glue import markdown

    results = load_json(BENCH / "results" / "glue.json")
    if results is None:
        pytest.skip("no GLUE results")
    table = (BENCH / "results" / "glue.md").read_text()
    assert table == markdown(results) + "\nWritten by `benchmarks/bench_glue.py`.\n"
    earlier = any(not r.get("pricing") for r in results["runs"])
    assert ("rows marked `earlier`" in table) == earlier


def load_json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


STUDIES = sorted(p for p in EXPERIMENTS.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))


def test_there_are_studies():
    assert len(STUDIES) >= 9


@pytest.mark.parametrize("study", STUDIES, ids=lambda p: p.name)
def test_every_study_has_notes_a_script_and_its_results_inside_it(study):
    notes = study / "NOTES.md"
    assert notes.is_file(), f"{rel(study)}: no NOTES.md"
    text = notes.read_text()
    for heading in ("## Question", "## Setup", "## Result", "## Date"):
        assert heading in text, f"{rel(notes)}: no '{heading}'"
    own = sorted(study.glob("*.py"))
    assert own, f"{rel(study)}: no script"
    assert any(f"`{rel(s)}`" in text for s in own), f"{rel(notes)}: names none of its scripts"
    for path in results_files(".json") + results_files(".md"):
        if path.is_relative_to(study) and path.name not in NOTES and not engine_output(path):
            assert (named_script(path) or "").startswith(rel(study) + "/"), f"{rel(path)}: not from this study's script"


def private_imports(path: Path) -> list[str]:
    """`from <script> import _name` (or `import <script>` then `<script>._name`) where <script> is another
    benchmark or study script (common.py is the shared module and has no private API either)."""
    names = {p.stem for p in scripts()}
    tree = ast.parse(path.read_text())
    bad = []
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in names:
            bad += [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
        elif isinstance(node, ast.Import):
            modules |= {a.asname or a.name for a in node.names if a.name in names}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            if node.attr.startswith("_") and not node.attr.startswith("__"):
                bad.append(f"{node.value.id}.{node.attr}")
    return bad


@pytest.mark.parametrize("path", scripts(), ids=rel)
def test_no_script_imports_another_scripts_private_names(path):
    assert not private_imports(path), f"{rel(path)}: {private_imports(path)}"


def test_the_private_import_check_sees_both_forms(tmp_path):
    fake = BENCH / "bench_glue.py"
    assert fake.is_file()
    probe = tmp_path / "probe.py"
    probe.write_text("from bench_glue import _fmt, markdown\nimport bench_glue\nx = bench_glue._baseline\n")
    assert private_imports(probe) == ["bench_glue._fmt", "bench_glue._baseline"]
    probe.write_text("from bench_glue import markdown\nimport common\nx = common.mean_sd\n")
    assert private_imports(probe) == []


def test_the_committed_scheduler_verdict_is_what_its_script_writes_from_the_committed_reports(tmp_path):
    """benchmarks/results/verdict.{md,json} are regenerated from the studies' committed report.json files, not
    edited by hand; every finished cell carries its per-seed paired differences."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "regime_cells" / "verdict.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    for name in ("verdict.md", "verdict.json"):
        assert (tmp_path / name).read_text() == (BENCH / "results" / name).read_text(), name
    verdict = json.loads((BENCH / "results" / "verdict.json").read_text())
    assert "positive_control" in verdict["cells"] and len(verdict["cells"]) >= 5
    for cell in verdict["cells"].values():
        for arm in cell["arms"]:
            diffs = arm["auc"]["differences"]
            assert len(diffs) == arm["n"] == cell["pairs"] >= 10
            assert abs(sum(diffs.values()) / len(diffs) - arm["auc"]["mean"]) < 1e-9
