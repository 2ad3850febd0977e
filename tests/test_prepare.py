"""One set-up path for every backend (prepare.py): the local engine, the Flower ClientApp and the surrogate
build their partitions, model and token ids through the same functions, and the tokenised inputs come from
an on-disk cache that hits when nothing they depend on changed and misses when something did."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_tree

from fedranklite.config.files import validate
from fedranklite.run import prepare as prep_mod
from fedranklite.run import token_cache
from fedranklite.run.engine import build_engine

SRC = Path(__file__).resolve().parents[1] / "src" / "fedranklite"


def tiny(tmp_path, **sections):
    tree = tiny_tree(tmp_path, **sections)
    tree["model"]["cache_dir"] = str(tmp_path / "cache")
    return validate(tree)


def test_partition_model_and_tokenising_are_each_called_in_one_module_only():
    allowed = {"split_clients": "prepare.py", "build_model": "prepare.py", "encode": "token_cache.py"}
    seen = {name: [] for name in allowed}
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                f = node.func  # `encode(...)`, `partitioners.split_clients(...)`; not a string's `.encode()`
                name = (
                    f.id
                    if isinstance(f, ast.Name)
                    else f.attr
                    if isinstance(f, ast.Attribute) and f.attr != "encode"
                    else None
                )
                if name in seen:
                    seen[name].append(path.name)
    assert {name: sorted(set(files)) for name, files in seen.items()} == {
        name: [module] for name, module in allowed.items()
    }


def counting(monkeypatch, name):
    """Counts the calls of `name` in the module that makes them (`encode` in the token cache, the rest in prepare)."""
    calls = []
    module = token_cache if name == "encode" else prep_mod
    real = getattr(module, name)

    def wrapper(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


def test_local_engine_and_flower_client_side_get_identical_partitions_tokens_and_model(tmp_path, monkeypatch):
    pytest.importorskip("flwr")
    from fedranklite.backends.flower import task

    cfg = tiny(tmp_path, data={"partition": {"type": "dirichlet", "alpha": 0.3}, "samples_per_client": 50})
    partitions, models = counting(monkeypatch, "split_clients"), counting(monkeypatch, "build_model")
    monkeypatch.setenv(token_cache.TOKEN_CACHE_ENV, "0")  # the local engine tokenises afresh...
    engine = build_engine(cfg)
    monkeypatch.delenv(token_cache.TOKEN_CACHE_ENV)
    cold = task._build(task.config_json(cfg))  # ...the ClientApp side writes the token cache...
    warm = task._build(task.config_json(cfg))  # ...and a later ClientApp process reads it
    assert len(partitions) == 3 and len(models) == 3  # each through prepare's one call
    assert not list((tmp_path / "cache" / "tokens").glob("*.tmp.npz"))
    local = engine.runner
    for side in (cold, warm):
        assert len(side.partitions) == len(local.partitions) == cfg.num_clients
        assert all(np.array_equal(a, b) for a, b in zip(side.partitions, local.partitions))
        assert side.train.input_ids == local.train.input_ids and side.train.pair_ids == local.train.pair_ids
        assert np.array_equal(side.train.labels, local.train.labels)
        assert all(type(i) is int for row in side.train.input_ids[:5] for i in row)
        start, ours = side.model.adapter_state(), engine.model.adapter_state()
        assert start.keys() == ours.keys() and all(torch.equal(start[k], ours[k]) for k in ours)
        assert np.array_equal(side.max_rank, engine.fed.max_rank)
        assert (side.head_bytes, side.bytes_per_rank) == (engine.fed.bytes_fixed, engine.fed.bytes_per_rank)
    assert "tokenise_eval" not in cold.timings  # the ClientApp never tokenises the evaluation split


def test_surrogate_partition_sizes_come_from_stage_one_without_a_model(tmp_path, monkeypatch):
    from fedranklite.backends.surrogate.engine import CalibrationError, partition_sizes

    cfg = tiny(tmp_path, data={"samples_per_client": 40})
    models = counting(monkeypatch, "build_model")
    rows = partition_sizes(cfg)
    assert rows.tolist() == prep_mod.plan(cfg).rows.tolist() and len(rows) == cfg.num_clients
    assert models == []
    # more clients than rows: the hint names the surrogate's way out; a plain DataError elsewhere
    many = tiny(tmp_path, tiers={"fast": {"num_clients": 300}})
    with pytest.raises(CalibrationError, match="rows_per_client"):
        partition_sizes(many)
    with pytest.raises(prep_mod.DataError):
        build_engine(many)


# ---------------------------------------------------------------------------------------- the token cache
def test_token_cache_hits_on_the_second_build_and_misses_when_a_relevant_field_changes(tmp_path, monkeypatch):
    encodes = counting(monkeypatch, "encode")
    cache = tmp_path / "cache" / "tokens"

    def build(**sections):
        before = len(encodes)
        p = prep_mod.prepare(tiny(tmp_path, **sections))
        enc = p.train
        return enc, len(encodes) - before, p

    first, n, p = build()
    assert n == 1 and len(list(cache.glob("*.npz"))) == 1
    fresh = token_cache.encode(p.data.train, p.model.tokenizer, p.cfg.model.max_length, p.model.siamese)
    second, n, _ = build()
    assert n == 0  # hit: no tokenizer call
    assert second.input_ids == first.input_ids == fresh.input_ids
    assert np.array_equal(second.labels, fresh.labels)
    _, n, _ = build(training={"lr": 0.1}, federation={"num_rounds": 7})  # fields the token ids do not depend on
    assert n == 0
    _, n, _ = build(data={"partition": {"type": "label_skew"}})  # the partition is not part of the tokenised rows
    assert n == 0
    _, n, _ = build(model={"max_length": 8})  # truncation changes
    assert n == 1 and len(list(cache.glob("*.npz"))) == 2
    _, n, _ = build(data={"embedded_train_size": 200})  # other texts
    assert n == 1
    _, n, _ = build(seed=3)  # the embedded task's texts depend on the seed
    assert n == 1
    # the evaluation split goes through the same cache (its own key)
    p = prep_mod.prepare(tiny(tmp_path))
    before = len(encodes)
    assert (
        p.eval.input_ids
        == token_cache.encode(prep_mod.eval_split(p.cfg, p.data), p.model.tokenizer, p.cfg.model.max_length).input_ids
    )
    assert len(encodes) - before == 2  # the miss that wrote it, and the reference above
    assert prep_mod.prepare(tiny(tmp_path)).eval.input_ids == p.eval.input_ids and len(encodes) - before == 2


def test_token_cache_key_covers_the_tokenizer_and_survives_a_damaged_file(tmp_path, monkeypatch):
    p = prep_mod.prepare(tiny(tmp_path))
    split, tok = p.data.train, p.model.tokenizer
    key = token_cache.token_cache_key(split, tok, 32, False)
    assert key == token_cache.token_cache_key(split, tok, 32, False)
    tok(["the movie was great"], truncation=True, max_length=5)  # per-call truncation state is not part of it
    assert key == token_cache.token_cache_key(split, tok, 32, False)
    assert key != token_cache.token_cache_key(split, tok, 32, True)  # siamese pairs
    assert key != token_cache.token_cache_key(split.subset([0, 1, 2]), tok, 32, False)
    tok.add_tokens(["zzzword"])  # a different vocabulary
    assert key != token_cache.token_cache_key(split, tok, 32, False)

    encodes = counting(monkeypatch, "encode")
    cache = tmp_path / "tokens"
    good = token_cache.tokenise(split, tok, 32, cache_dir=cache)
    (path,) = cache.glob("*.npz")
    path.write_bytes(b"not a numpy file")
    assert token_cache.tokenise(split, tok, 32, cache_dir=cache).input_ids == good.input_ids  # re-tokenised
    assert len(encodes) == 2
    assert token_cache.tokenise(split, tok, 32, cache_dir=cache).input_ids == good.input_ids and len(encodes) == 2
    monkeypatch.setenv(token_cache.TOKEN_CACHE_ENV, "0")
    assert token_cache.token_cache_dir(p.cfg) is None


def test_token_cache_round_trips_siamese_pairs_and_empty_rows(tmp_path):
    from fedranklite.data.load import TextSplit

    p = prep_mod.prepare(tiny(tmp_path))
    split = TextSplit([("the movie was great", "it was bad"), ("", "the app"), ("fine", "")], np.array([1, 0, 1]))
    for siamese in (False, True):
        fresh = token_cache.encode(split, p.model.tokenizer, 16, siamese)
        token_cache.tokenise(split, p.model.tokenizer, 16, siamese, cache_dir=tmp_path / "t")
        cached = token_cache.tokenise(split, p.model.tokenizer, 16, siamese, cache_dir=tmp_path / "t")
        assert cached.input_ids == fresh.input_ids and cached.pair_ids == fresh.pair_ids
