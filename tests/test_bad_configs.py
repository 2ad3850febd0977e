"""A corpus of broken configs (tests/bad_configs/*.yaml, each naming the expected key in its first
line): every one is rejected by the CLI before any model or data loads, with the file and the key in
the message and no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedranklite.cli import main as cli

CORPUS = sorted((Path(__file__).parent / "bad_configs").glob("*.yaml"))


def expected(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name}: first line must be '# expect: <key>'"
    return first[len("# expect: ") :]


def test_corpus_is_large_enough():
    assert len(CORPUS) >= 30


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_broken_config_is_rejected_before_loading(path, capsys, monkeypatch):
    import fedranklite.model.fedmodel as fedmodel
    import fedranklite.run.engine as engine

    def must_not_load(*_a, **_k):
        raise AssertionError("a model or data was loaded for a broken config")

    monkeypatch.setattr(engine, "build_engine", must_not_load)
    monkeypatch.setattr(fedmodel, "load_backbone", must_not_load)
    code = cli.main(["run", "--config", str(path)])
    err = capsys.readouterr().err
    flat = " ".join(err.split())  # the console wraps long lines
    assert code == 2
    assert expected(path) in flat, err
    assert path.name in flat, err  # the file that holds the problem is named
    assert "Traceback" not in err
