"""The converted-GGUF cache is keyed by content: a reinstalled file (new mtime) reuses its conversion, a
changed file does not, and a broken or unwritable hash memo only costs a rehash."""

import hashlib
import json
import os
from pathlib import Path

import pytest

from fedranklite.model.backbones import content_digest, converted_gguf


def _write(path: Path, data: bytes, mtime: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return path


def _fake_conversion(cache: Path, gguf: Path) -> Path:
    """What a finished conversion leaves (config + weights), under the key converted_gguf computes."""
    digest = hashlib.sha256(gguf.read_bytes()).hexdigest()
    target = cache / "gguf" / f"{gguf.stem}-{gguf.stat().st_size}-{digest[:16]}-fp32"
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    (target / "model.safetensors").write_bytes(b"weights")
    return target


def test_reinstalled_file_reuses_the_conversion(tmp_path):
    data = b"GGUF" + bytes(range(256)) * 4000
    first = _write(tmp_path / "venv1" / "m.gguf", data, 1_700_000_000)
    again = _write(tmp_path / "venv2" / "m.gguf", data, 1_800_000_000)  # a fresh install: same bytes, new mtime
    cache = tmp_path / "cache"
    target = _fake_conversion(cache, first)
    assert converted_gguf(first, str(cache)) == target
    assert converted_gguf(again, str(cache)) == target  # no second 540 MB copy
    assert sorted(p.name for p in (cache / "gguf").iterdir() if not p.name.startswith(".")) == [target.name]


def test_changed_content_gets_a_new_key(tmp_path):
    path = _write(tmp_path / "m.gguf", b"GGUF one", 1_700_000_000)
    memo = tmp_path / "memo"
    before = content_digest(path, memo)
    _write(path, b"GGUF two", 1_700_000_100)  # same size, new bytes, new mtime
    after = content_digest(path, memo)
    assert before != after
    assert after == hashlib.sha256(b"GGUF two").hexdigest()


def test_memo_is_used_and_a_broken_one_is_ignored(tmp_path):
    path = _write(tmp_path / "m.gguf", b"GGUF bytes", 1_700_000_000)
    memo = tmp_path / "memo"
    truth = hashlib.sha256(b"GGUF bytes").hexdigest()
    assert content_digest(path, memo) == truth
    (record,) = memo.iterdir()
    assert json.loads(record.read_text())["sha256"] == truth
    # the memo is what answers for an unchanged (size, mtime): a doctored one shows it was read
    fake = "f" * 64
    record.write_text(json.dumps({**json.loads(record.read_text()), "sha256": fake}))
    assert content_digest(path, memo) == fake
    for junk in ("not json", "[]", json.dumps({"size": 10}), json.dumps({"size": 10, "mtime_ns": 0, "sha256": 5})):
        record.write_text(junk)
        assert content_digest(path, memo) == truth
    record.write_text(json.dumps({"size": 10, "mtime_ns": path.stat().st_mtime_ns, "sha256": "../" * 21 + "x"}))
    assert content_digest(path, memo) == truth  # not 64 hex digits: never trusted into a folder name


def test_unwritable_memo_still_hashes(tmp_path):
    path = _write(tmp_path / "m.gguf", b"GGUF bytes", 1_700_000_000)
    blocker = tmp_path / "memo"
    blocker.write_text("a file where the memo folder should be")
    assert content_digest(path, blocker) == hashlib.sha256(b"GGUF bytes").hexdigest()


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        content_digest(tmp_path / "absent.gguf", tmp_path / "memo")
