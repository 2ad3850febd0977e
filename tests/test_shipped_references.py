"""What the shipped text points at is in the repository, and every shipped setting is priced by a shipped profile.

- README.md and docs/**/*.md: every path they cite under benchmarks/, experiments/, configs/ or
  src/fedranklite/profiles/ (prose, links and code blocks; `{a,b}` alternatives and `<placeholder>` parts
  allowed) is a file or folder of the repository. A page that quotes a result whose file was removed, or a study
  that was renamed, fails here.
- Every shipped YAML (configs/, experiments/, benchmarks/): the same for the paths its values *and comments* cite
  (a comment such as "kept in benchmarks/results/glue.json" is a citation too); the folder a sweep writes into
  (`output_dir`) is an output, not a citation. tests/test_shipped_files.py checks the files the values name by
  key (bases, profiles, calibrations, data, traces).
- Every shipped config and every run of a shipped sweep spec (its `base:` with each cell's overrides) that prices
  compute with a rank profile finds that profile in the package (src/fedranklite/profiles/) on a fresh install:
  one measured at the start of a run depends on that machine and its load, and one measured on a device without
  a shipped counterpart cannot be converted to the tiers' reference device. KNOWN_UNSHIPPED would list the
  profiles that shipped settings still lack (none now); the test fails when one goes missing, and when a listed
  one ships.
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
from pathlib import Path
from typing import Iterator, Optional

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PREFIXES = ("benchmarks", "experiments", "configs", "src/fedranklite/profiles")  # results, studies, configs, profiles
# a repository path: one of PREFIXES at the start of a word (not inside configs/experiments/...), any ../ before it
CITED = re.compile(r"(?<![\w./<>-])(?:\.\./)*((?:" + "|".join(PREFIXES) + r")/[\w.{},<>*/-]*[\w}>*/])")
# made-up names in the documentation's examples (an error message about a config of the reader's)
ILLUSTRATIONS = {"configs/experiments/x.yaml"}
OUTPUT_KEYS = re.compile(r"^\s*output_dir\s*:.*$", re.MULTILINE)  # where a sweep writes: made by the run

# Profiles that shipped settings need and the package does not ship yet (file name -> the settings that need it).
KNOWN_UNSHIPPED: dict[str, str] = {}  # every profile a shipped setting needs ships; add a name here only with a reason


def tracked_files() -> set[str]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError):
        pytest.skip("not a git checkout: which files are in the repository is unknown")
    return {f for f in out.stdout.splitlines() if (ROOT / f).exists()}


def folders_of(files: set[str]) -> set[str]:
    return {"/".join(f.split("/")[:i]) for f in files for i in range(1, f.count("/") + 1)}


def expand(path: str) -> list[str]:
    """`a/{x,y}.md` -> a/x.md, a/y.md (each brace group in turn)."""
    match = re.search(r"\{([^{}]*)\}", path)
    if not match:
        return [path]
    return [q for alt in match.group(1).split(",") for q in expand(path[: match.start()] + alt + path[match.end() :])]


def cited_paths(text: str) -> list[str]:
    """Every repository path `text` cites (outputs named by an `output_dir:` line left out), as written."""
    return sorted(set(CITED.findall(OUTPUT_KEYS.sub("", text))))


def missing_citations(text: str, tracked: set[str]) -> list[str]:
    """The paths `text` cites that are neither a file nor a folder of the repository."""
    folders = folders_of(tracked)
    everything = tracked | folders
    missing = []
    for cited in cited_paths(text):
        for path in expand(cited):
            if path in ILLUSTRATIONS:
                continue
            pattern = re.sub(r"<[^<>]*>", "*", path).rstrip("/")
            if "*" in pattern:
                found = any(fnmatch.fnmatchcase(p, pattern) for p in everything)
            else:
                found = pattern in (folders if path.endswith("/") else everything)
            if not found:
                missing.append(path)
    return sorted(set(missing))


def documentation() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def shipped_yamls(tracked: set[str]) -> list[str]:
    """Tracked YAML files under configs/, experiments/ and benchmarks/, less what runs wrote into a study."""
    out = []
    for f in sorted(tracked):
        parts = f.split("/")
        if parts[0] in ("configs", "experiments", "benchmarks") and f.endswith((".yaml", ".yml")):
            if not any(p in ("_work", "runs") for p in parts) and not (ROOT / f).with_name("metrics.json").exists():
                out.append(f)
    return out


# ----------------------------------------------------------------------------- rank profiles behind settings
def is_sweep_spec(path: Path) -> bool:
    data = yaml.safe_load(path.read_text())
    return isinstance(data, dict) and "base" in data and "schedulers" in data


def shipped_settings(tracked: set[str]) -> Iterator[tuple[str, object]]:
    """(label, Config) of every shipped config (a file whose name starts with `_` is a partial base) and of every
    cell of every shipped sweep spec (one seed: the seed does not change the profile)."""
    from fedranklite.config.files import load_config
    from fedranklite.study.sweep.spec import load_spec

    for f in shipped_yamls(tracked):
        path = ROOT / f
        if path.name.startswith("_"):
            continue
        if is_sweep_spec(path):
            plan = load_spec(path, seeds_override=1)
            for run in plan.runs:
                yield f"{f}:{run.group}", load_config(plan.base, run.overrides)
        elif f.startswith("configs/"):
            yield f, load_config(path)


def profile_problem(cfg, tracked: set[str]) -> Optional[str]:
    """None when `cfg` is priced by a file of the repository (a named profile, the shipped profile of its
    setting, or a surrogate calibration); else the profile file it would measure at the start of the run."""
    from fedranklite.run.rank_profile import SHIPPED_DIR, key_file_name, profile_key

    if cfg.engine.backend == "surrogate" or cfg.timing.mode != "profile":
        return None  # the calibration's own time model, or analytic / measured time: no profile
    if cfg.timing.profile:
        named = Path(cfg.timing.profile)
        try:
            rel = (named if named.is_absolute() else ROOT / named).resolve().relative_to(ROOT).as_posix()
        except ValueError:
            rel = None
        return None if rel in tracked else f"timing.profile {cfg.timing.profile} (not in the repository)"
    if cfg.device == "auto":  # as a CPU machine (the shipped settings' target) sees it, whatever this one has
        cfg = cfg.model_copy(update={"device": "cpu"})
    name = key_file_name(profile_key(cfg))
    shipped = (SHIPPED_DIR / name).relative_to(ROOT).as_posix()
    return None if shipped in tracked else name


def unshipped_profiles(tracked: set[str]) -> dict[str, list[str]]:
    """Profile file name -> the shipped settings that would measure it at the start of a run."""
    out: dict[str, list[str]] = {}
    for label, cfg in shipped_settings(tracked):
        problem = profile_problem(cfg, tracked)
        if problem:
            out.setdefault(problem, []).append(label)
    return out


# ----------------------------------------------------------------------------- the checks fail when they should
def test_the_checks_catch_a_missing_citation_profile_and_results_file(tmp_path):
    from fedranklite.config.files import load_config

    tracked = tracked_files()
    page = (
        "See `experiments/regime_map/NOTES.md`, [the map](../benchmarks/results/regime_map.md), "
        "`benchmarks/results/{summary,glue}.md`, `experiments/<question>/`, `configs/experiments/glue/` and "
        "`benchmarks/results/nosuch.json`; `experiments/no_such_study/` and `benchmarks/results/{glue,gone}.md`."
    )
    assert missing_citations(page, tracked) == [
        "benchmarks/results/gone.md",
        "benchmarks/results/nosuch.json",
        "experiments/no_such_study/",
    ]
    assert "experiments/glue" not in cited_paths("configs/experiments/glue/rte_lite.yaml")  # one path, not two

    config = tmp_path / "x.yaml"
    config.write_text(
        f"_base_: {ROOT / 'configs' / 'base.yaml'}\n"
        "# measured in benchmarks/results/aggregators.json (a results file that is not there)\n"
        "output_dir: experiments/x/_work/out   # an output folder: not a citation\n"
        "model: {max_length: 99}               # a setting no shipped profile measured\n"
    )
    assert missing_citations(config.read_text(), tracked) == ["benchmarks/results/aggregators.json"]
    cfg = load_config(config)
    assert profile_problem(cfg, tracked) == "bundled-minilm-l6_none_b16_l99_query-value_cpu.json"
    shipped_json = sorted(f for f in tracked if f.startswith("src/fedranklite/profiles/") and f.endswith(".json"))
    copy = tmp_path / "profile.json"  # a profile on this machine only
    copy.write_text((ROOT / shipped_json[0]).read_text())
    named = load_config(config, [f"timing.profile={copy}"])
    assert profile_problem(named, tracked) == f"timing.profile {copy} (not in the repository)"
    shipped = load_config(config, ["model.max_length=64"])
    assert profile_problem(shipped, tracked) is None


# ----------------------------------------------------------------------------- the repository's own text
@pytest.mark.parametrize("page", documentation(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_path_the_documentation_cites_is_in_the_repository(page):
    missing = missing_citations(page.read_text(encoding="utf-8"), tracked_files())
    assert not missing, f"{page.relative_to(ROOT)} cites paths the repository lacks: {missing}"


def test_every_path_a_shipped_yaml_cites_is_in_the_repository():
    tracked = tracked_files()
    files = shipped_yamls(tracked)
    assert "configs/base.yaml" in files and any(f.startswith("experiments/") for f in files)
    problems = [f"{f}: {p}" for f in files for p in missing_citations((ROOT / f).read_text(), tracked)]
    assert not problems, "shipped YAML cites paths the repository lacks:\n  " + "\n  ".join(problems)


def test_every_profile_behind_a_shipped_config_or_sweep_cell_ships_with_the_package(monkeypatch, tmp_path):
    from fedranklite.run.rank_profile import CACHE_ENV

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))  # a fresh install: only the shipped profiles
    tracked = tracked_files()
    found = unshipped_profiles(tracked)
    new = {name: where for name, where in found.items() if name not in KNOWN_UNSHIPPED}
    assert not new, f"shipped settings priced by a profile the package lacks: {new}"
    shipped_now = sorted(set(KNOWN_UNSHIPPED) - set(found))
    assert not shipped_now, (
        f"these profiles ship (or no setting needs them) now: drop them from KNOWN_UNSHIPPED: {shipped_now}"
    )
