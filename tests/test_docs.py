"""The documentation: the generated configuration reference is up to date and covers every key of base.yaml,
the README stays short, the pages the site names exist, the examples shared by the README and the docs agree,
and no user-facing text (README, docs, configs, the command line's help) tells how the work went or names a
machine's paths."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference" / "configuration.md"

# Development history and machine paths, which user-facing text must not carry.
HISTORY = [
    r"\bsessions?\W{1,6}\d+",  # "session 14", "(session\n  # 14", "sessions 13-14"
    r"\bsession-\d+",  # "the session-15 rows"
    r"\bthis session\b",
    r"\blater sessions?\b",
    r"\bwork periods?\b",
    r"\blent (?:a |the )?GPU",
    r"/tmp/",
    r"/work/",
    r"/root/",
    r"\b(?:read_file|find_string|search corpora|fetch snapshots?)\b",
]
PATTERN = re.compile("|".join(f"(?:{p})" for p in HISTORY), re.IGNORECASE)


def offenders(text: str) -> list[str]:
    return [m.group(0) for m in PATTERN.finditer(text)]


def user_files() -> list[Path]:
    files = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
    files += [p for p in sorted((ROOT / "configs").rglob("*")) if p.is_file()]
    return files


# ------------------------------------------------------------------------------------- history and paths
@pytest.mark.parametrize(
    "text",
    [
        "MRPC met its bar only in session 14, with lr 1e-3",
        "by a rule set before the pilots ran (slm_mrpc_pilots.md, session\n  # 14, which also says",
        "These are the session-15 rows on the fp32 clock",
        "the 2-core AVX2 machine of session 17, and run on from their checkpoints in later sessions",
        "or in parallel on a lent GPU",
        "measured on this session's machine",
        "in work period 3",
        '"results_dir": "/tmp/x/cal/lite_noniid_hard"',
        "see /work/main/docs or /root/.cache",
        "the `search` corpora (pages/docs/issues/code), `read_file`, and `fetch` snapshots of FedScale",
    ],
)
def test_the_history_patterns_catch_what_they_are_meant_to(text):
    assert offenders(text), text


@pytest.mark.parametrize(
    "text",
    [
        "Ray gets every CPU for one worker; a Flower session ends when the run does",
        "fedranklite run --config configs/experiments/lite_iid.yaml --set seed=1",
        "cached under ~/.cache/fedranklite/profiles/ (or $FEDRANKLITE_CACHE)",
        "measured on one NVIDIA H100 80GB (torch 2.11 + CUDA 13.0) and a 2-core CPU",
    ],
)
def test_the_history_patterns_leave_ordinary_text_alone(text):
    assert not offenders(text), text


def test_no_user_facing_file_tells_how_the_work_went():
    found = {}
    for path in user_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        hits = offenders(text)
        if hits:
            found[str(path.relative_to(ROOT))] = sorted(set(hits))
    assert not found, f"development history or machine paths in user-facing files: {found}"


def _help_texts() -> dict[str, str]:
    """`fedranklite --help` and every subcommand's --help, from the parser the command line builds."""
    from fedranklite.cli.parser import build_parser

    parser = build_parser()
    texts = {"fedranklite": parser.format_help()}
    for action in parser._subparsers._group_actions:  # the subcommands
        for name, sub in action.choices.items():
            texts[f"fedranklite {name}"] = sub.format_help()
    return texts


def test_no_help_text_tells_how_the_work_went():
    texts = _help_texts()
    assert len(texts) > 5, sorted(texts)
    found = {name: offenders(text) for name, text in texts.items() if offenders(text)}
    assert not found, found


@pytest.mark.slow
def test_the_installed_command_prints_the_same_clean_help():
    out = subprocess.run(
        [sys.executable, "-m", "fedranklite", "--help"], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    assert "run" in out.stdout and not offenders(out.stdout)


# ------------------------------------------------------------------------------------- README and site
def test_the_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= 220, f"README.md has {lines} lines; the guide belongs in docs/"


def test_the_readme_links_only_to_files_that_exist():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    missing = [t for t in targets if not t.startswith("http") and not (ROOT / t).exists()]
    assert not missing, missing


def _nav_pages(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [p for item in node for p in _nav_pages(item)]
    if isinstance(node, dict):
        return [p for value in node.values() for p in _nav_pages(value)]
    return []


def test_every_page_is_in_the_nav_and_every_nav_entry_exists():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    nav = _nav_pages(config["nav"])
    assert not [p for p in nav if not (DOCS / p).is_file()], "nav entries without a page"
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert pages <= set(nav), f"pages missing from the nav: {sorted(pages - set(nav))}"


def _yaml_block_after(text: str, marker: str) -> str:
    found = re.search(re.escape(marker) + r".*?```yaml\n(.*?)```", text, re.S)
    assert found, marker
    return found.group(1)


def test_the_bring_your_own_data_example_is_the_same_in_the_readme_and_the_docs():
    marker = "saved as `my_task/train.jsonl`"
    readme = _yaml_block_after((ROOT / "README.md").read_text(encoding="utf-8"), marker)
    docs = _yaml_block_after((DOCS / "your-data.md").read_text(encoding="utf-8"), marker)
    assert readme == docs


def test_every_command_is_on_the_command_line_page():
    page = (DOCS / "reference" / "cli.md").read_text(encoding="utf-8")
    commands = [name.split(" ", 1)[1] for name in _help_texts() if " " in name]
    missing = [c for c in commands if f"`fedranklite {c}" not in page]
    assert not missing, f"commands not described in docs/reference/cli.md: {missing}"


# ------------------------------------------------------------------------------------- configuration reference
def test_the_committed_configuration_reference_is_the_generated_one():
    from fedranklite.config.reference import generate

    assert REFERENCE.read_text(encoding="utf-8") == generate(), (
        "docs/reference/configuration.md is out of date: "
        "python -m fedranklite.config.reference --out docs/reference/configuration.md"
    )


def _dotted_keys(tree: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        keys.append(dotted)
        if isinstance(value, dict):
            keys += _dotted_keys(value, dotted + ".")
    return keys


def test_every_key_of_base_yaml_is_in_the_reference():
    base = yaml.safe_load((ROOT / "configs" / "base.yaml").read_text(encoding="utf-8"))
    tiers = set(base.get("tiers", {}))
    page = REFERENCE.read_text(encoding="utf-8")
    missing = []
    for key in _dotted_keys(base):
        parts = key.split(".")
        if parts[0] == "tiers" and len(parts) > 1 and parts[1] in tiers:
            if len(parts) == 2:
                continue  # a tier's own name is the user's
            key = ".".join(["tiers", "<name>", *parts[2:]])
        if f"`{key}`" not in page and f"# {key} {{#" not in page:  # a key, or a section's heading
            missing.append(key)
    assert not missing, f"keys of configs/base.yaml missing from the configuration reference: {missing}"


def test_the_reference_check_mode_tells_an_out_of_date_page(tmp_path):
    from fedranklite.config.reference import main

    stale = tmp_path / "configuration.md"
    stale.write_text("# Configuration reference\n", encoding="utf-8")
    assert main(["--check", str(stale)]) == 1
    assert main(["--out", str(stale)]) == 0
    assert main(["--check", str(stale)]) == 0
    assert main(["--check", str(tmp_path / "absent.md")]) == 2


def test_the_reference_documents_every_plugin_with_its_parameters():
    from fedranklite.config.reference import builtin_names, generate
    from fedranklite.config.schema import PLUGIN_SLOTS

    page = generate()
    for path, slot in PLUGIN_SLOTS.items():
        key = ".".join(path)
        for name in builtin_names(slot.registry):
            assert f"### {key}: {name} " in page, (key, name)
            for param in slot.registry.config_class(name).model_fields:
                if param != slot.registry.key:
                    assert f"`{key}.{param}" in page, (key, name, param)


# ------------------------------------------------------------------------------------- the site builds
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="mkdocs is not installed")
def test_the_site_builds_without_warnings(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
