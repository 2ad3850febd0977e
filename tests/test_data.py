"""Data: the embedded task, local-file loading (csv/tsv/json/jsonl/parquet) with clear errors, and the
seeded client partitions. No model is loaded."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from fedranklite.config.files import load_config
from fedranklite.data.embedded import EMBEDDED_TASKS, make_sentiment, vocabulary
from fedranklite.data.load import _load_file, load_data
from fedranklite.data.partitioners import PARTITIONERS, label_distribution, partition_labels, split_clients
from fedranklite.data.textsplit import DataError, TextSplit

BASE = Path(__file__).resolve().parents[1] / "configs" / "base.yaml"
KINDS = ["iid", "dirichlet", "label_skew"]


# ================================================================== embedded task
def test_embedded_registry():
    assert "sentiment" in EMBEDDED_TASKS
    assert EMBEDDED_TASKS["sentiment"] is make_sentiment


def test_embedded_task_is_deterministic_per_seed():
    a, b = make_sentiment(300, seed=4), make_sentiment(300, seed=4)
    assert a.texts == b.texts
    assert np.array_equal(a.labels, b.labels)
    c = make_sentiment(300, seed=5)
    assert a.texts != c.texts
    assert sum(x == y for x, y in zip(a.texts, c.texts)) < 150  # not just a shifted copy


def test_embedded_vocabulary_covers_every_generated_word():
    words = set(vocabulary())
    for (text,) in make_sentiment(2000, seed=0).texts:
        assert set(re.sub(r"[.,!?']", " ", text.lower()).split()) <= words, text


def test_embedded_task_shape():
    split = make_sentiment(200, seed=0)
    assert len(split) == 200
    assert all(isinstance(t, tuple) and len(t) == 1 and isinstance(t[0], str) for t in split.texts)
    assert split.labels.dtype == np.int64
    assert set(np.unique(split.labels)) == {0, 1}
    assert split.label_names == ["negative", "positive"]


def test_embedded_task_has_real_words():
    split = make_sentiment(1000, seed=1)
    vocab: set[str] = set()
    for (text,) in split.texts:
        assert text[0].isupper() and text.endswith(".")
        words = re.findall(r"[^\s,.]+", text.lower())
        assert 3 <= len(words) <= 30
        assert all(w.isalpha() for w in words), text  # words, not random tokens or ids
        vocab.update(words)
    assert len(vocab) >= 60
    # common English words appear, and sentiment-bearing adjectives too
    assert {"the", "was", "not", "but"} <= vocab
    assert len(vocab & {"great", "good", "excellent", "wonderful", "terrible", "awful", "boring", "bad"}) >= 4


def test_embedded_task_labels_roughly_balanced():
    for seed in range(3):
        frac = make_sentiment(2000, seed=seed).labels.mean()
        assert 0.45 <= frac <= 0.55


def test_embedded_label_noise_flips_a_few_labels_of_the_same_texts():
    clean, noisy = make_sentiment(4000, seed=2, label_noise=0.0), make_sentiment(4000, seed=2, label_noise=0.05)
    assert clean.texts == noisy.texts
    assert 0.03 <= np.mean(clean.labels != noisy.labels) <= 0.07


def _naive_bayes_accuracy(train: TextSplit, test: TextSplit) -> float:
    tok = lambda t: re.findall(r"[a-z]+", t[0].lower())  # noqa: E731
    vocab = {w: i for i, w in enumerate(sorted({w for t in train.texts for w in tok(t)}))}
    counts = np.ones((2, len(vocab)))  # Laplace smoothing
    for t, y in zip(train.texts, train.labels):
        for w in tok(t):
            counts[y, vocab[w]] += 1
    logp = np.log(counts / counts.sum(1, keepdims=True))
    prior = np.log(np.bincount(train.labels, minlength=2) / len(train))
    pred = [int(np.argmax(prior + sum(logp[:, vocab[w]] for w in tok(t) if w in vocab))) for t in test.texts]
    return float(np.mean(np.asarray(pred) == test.labels))


def test_embedded_task_is_learnable_from_the_words():
    # a bag-of-words naive Bayes (which cannot read negation) already beats chance clearly
    acc = _naive_bayes_accuracy(make_sentiment(1500, seed=0), make_sentiment(500, seed=99))
    assert acc > 0.65


def test_load_data_embedded():
    cfg = load_config(BASE, ["data.embedded_train_size=120", "data.embedded_eval_size=40", "seed=3"])
    a, b = load_data(cfg), load_data(cfg)
    assert (len(a.train), len(a.eval)) == (120, 40)
    assert a.num_labels == 2 and a.task == "classification"
    assert a.train.texts == b.train.texts and np.array_equal(a.eval.labels, b.eval.labels)
    assert a.train.texts[:40] != a.eval.texts  # the evaluation split is drawn separately


# ================================================================== local files
def files_config(train: Path, eval_file: Path | None = None, *extra: str):
    overrides = ["data.source=files", f"data.train_file={train}", *extra]
    if eval_file is not None:
        overrides.append(f"data.eval_file={eval_file}")
    return load_config(BASE, overrides)


def test_csv_single_sentence(tmp_path):
    train = tmp_path / "train.csv"
    pd.DataFrame({"text": ["good, very good", "bad", "meh", "fine"], "label": [1, 0, 2, 1]}).to_csv(train, index=False)
    dev = tmp_path / "dev.csv"
    pd.DataFrame({"text": ["ok"], "label": [2]}).to_csv(dev, index=False)
    data = load_data(files_config(train, dev))
    assert data.train.texts == [("good, very good",), ("bad",), ("meh",), ("fine",)]
    assert data.train.labels.tolist() == [1, 0, 2, 1] and data.train.labels.dtype == np.int64
    assert data.eval.texts == [("ok",)] and data.eval.labels.tolist() == [2]
    assert data.num_labels == 3  # inferred: largest id + 1
    assert data.task == "classification"


def test_tsv_sentence_pair_with_string_labels(tmp_path):
    train = tmp_path / "train.tsv"
    train.write_text(
        "idx\tsentence1\tsentence2\tlabel\n"
        '0\tHe said "hi\tA greeting.\tentailment\n'
        "1\tCats bark.\tDogs meow.\tnot_entailment\n"
        "2\tIt rains.\tIt is wet.\tentailment\n"
    )
    dev = tmp_path / "dev.tsv"
    dev.write_text("idx\tsentence1\tsentence2\tlabel\n0\tA\tB\tnot_entailment\n")
    data = load_data(files_config(train, dev, "data.text_columns=[sentence1, sentence2]"))
    assert data.train.texts == [
        ('He said "hi', "A greeting."),
        ("Cats bark.", "Dogs meow."),
        ("It rains.", "It is wet."),
    ]  # a quote inside a TSV field is text
    assert data.train.label_names == ["entailment", "not_entailment"]  # sorted names
    assert data.train.labels.tolist() == [0, 1, 0]
    assert data.eval.labels.tolist() == [1]  # the training names map the evaluation labels
    assert data.num_labels == 2


def test_json_array_with_configured_label_names(tmp_path):
    train = tmp_path / "train.json"
    rows = [
        {"premise": f"p{i}", "hypothesis": f"h{i}", "gold": g}
        for i, g in enumerate(["entailment", "not_entailment", "not_entailment", "entailment"])
    ]
    train.write_text(json.dumps(rows))
    data = load_data(
        files_config(
            train,
            None,
            "data.text_columns=[premise, hypothesis]",
            "data.label_column=gold",
            "data.label_names=[not_entailment, entailment]",
        )
    )
    # no eval file: a seeded 10 % (here 1 row) is held out
    assert len(data.train) == 3 and len(data.eval) == 1
    everything = {t: y for split in (data.train, data.eval) for t, y in zip(split.texts, split.labels.tolist())}
    assert everything == {("p0", "h0"): 1, ("p1", "h1"): 0, ("p2", "h2"): 0, ("p3", "h3"): 1}
    assert data.train.label_names == ["not_entailment", "entailment"]


def test_jsonl_with_integral_float_labels(tmp_path):
    train = tmp_path / "train.jsonl"
    labels = [0.0, 1.0, 2.0, 10.0, 1.0, 2.0, 0.0, 10.0, 1.0, 2.0, 0.0]
    train.write_text("".join(json.dumps({"text": f"t{i}", "label": y}) + "\n" for i, y in enumerate(labels)))
    dev = tmp_path / "dev.jsonl"
    dev.write_text(json.dumps({"text": "d", "label": 10.0}) + "\n")
    data = load_data(files_config(train, dev))
    # 0.0/1.0/... are class ids, not names sorted as strings ("10.0" < "2.0")
    assert data.train.labels.tolist() == [0, 1, 2, 10, 1, 2, 0, 10, 1, 2, 0]
    assert data.train.label_names is None
    assert data.eval.labels.tolist() == [10]
    assert data.num_labels == 11


def test_parquet_regression_sentence_pair(tmp_path):
    train = tmp_path / "train.parquet"
    pd.DataFrame({"s1": ["a", "b", "c"], "s2": ["x", "y", "z"], "score": [0.5, 2.25, 4.0]}).to_parquet(train)
    dev = tmp_path / "dev.parquet"
    pd.DataFrame({"s1": ["d"], "s2": ["w"], "score": [3.5]}).to_parquet(dev)
    data = load_data(
        files_config(train, dev, "data.text_columns=[s1, s2]", "data.label_column=score", "data.task=regression")
    )
    assert data.task == "regression" and data.num_labels == 1
    assert data.train.texts == [("a", "x"), ("b", "y"), ("c", "z")]
    assert data.train.labels.dtype == np.float32
    assert data.train.labels.tolist() == [0.5, 2.25, 4.0]
    assert data.eval.labels.tolist() == [3.5]


def test_held_out_split_is_seeded_and_disjoint(tmp_path):
    train = tmp_path / "train.csv"
    pd.DataFrame({"text": [f"row {i}" for i in range(50)], "label": [i % 2 for i in range(50)]}).to_csv(
        train, index=False
    )
    a, b = load_data(files_config(train)), load_data(files_config(train))
    assert (len(a.train), len(a.eval)) == (45, 5)
    assert a.eval.texts == b.eval.texts
    assert set(a.train.texts).isdisjoint(a.eval.texts)
    assert set(a.train.texts) | set(a.eval.texts) == {(f"row {i}",) for i in range(50)}
    other = load_data(load_config(BASE, ["data.source=files", f"data.train_file={train}", "seed=1"]))
    assert other.eval.texts != a.eval.texts


def test_missing_column_lists_the_columns(tmp_path):
    train = tmp_path / "train.csv"
    pd.DataFrame({"sentence": ["a", "b"], "label": [0, 1]}).to_csv(train, index=False)
    with pytest.raises(DataError) as info:
        load_data(files_config(train))  # text_columns defaults to [text]
    msg = str(info.value)
    assert str(train) in msg and "'text'" in msg and "['sentence', 'label']" in msg


def test_missing_label_column(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text('{"text": "a", "y": 0}\n{"text": "b", "y": 1}\n')
    with pytest.raises(DataError, match=r"'label'.*\['text', 'y'\]"):
        load_data(files_config(train))


def test_empty_file(tmp_path):
    train = tmp_path / "train.csv"
    train.write_text("")
    with pytest.raises(DataError, match="empty"):
        load_data(files_config(train))


def test_header_only_file_has_no_rows(tmp_path):
    train = tmp_path / "train.csv"
    train.write_text("text,label\n")
    with pytest.raises(DataError) as info:
        load_data(files_config(train))
    assert str(train) in str(info.value) and "no rows" in str(info.value)


def test_labels_out_of_range_for_num_labels(tmp_path):
    train = tmp_path / "train.csv"
    pd.DataFrame({"text": list("abcd"), "label": [0, 1, 2, 1]}).to_csv(train, index=False)
    dev = tmp_path / "dev.csv"
    pd.DataFrame({"text": ["e"], "label": [0]}).to_csv(dev, index=False)
    with pytest.raises(DataError) as info:
        load_data(files_config(train, dev, "data.num_labels=2"))
    msg = str(info.value)
    assert str(train) in msg and "num_labels=2" in msg and "[0, 1]" in msg and "0..2" in msg


def test_evaluation_labels_out_of_range(tmp_path):
    train = tmp_path / "train.csv"
    pd.DataFrame({"text": list("abcd"), "label": [0, 1, 0, 1]}).to_csv(train, index=False)
    dev = tmp_path / "dev.csv"
    pd.DataFrame({"text": ["e", "f"], "label": [1, 3]}).to_csv(dev, index=False)
    with pytest.raises(DataError) as info:
        load_data(files_config(train, dev))
    msg = str(info.value)
    assert str(dev) in msg and "num_labels=2" in msg


def test_unknown_string_label_for_configured_names(tmp_path):
    train = tmp_path / "train.csv"
    pd.DataFrame({"text": ["a", "b"], "label": ["pos", "neutral"]}).to_csv(train, index=False)
    with pytest.raises(DataError, match="'neutral'.*not one of"):
        load_data(files_config(train, None, "data.label_names=[neg, pos]"))


def test_evaluation_label_unseen_in_training(tmp_path):
    train = tmp_path / "train.csv"
    pd.DataFrame({"text": ["a", "b"], "label": ["entailment", "not_entailment"]}).to_csv(train, index=False)
    dev = tmp_path / "dev.csv"
    pd.DataFrame({"text": ["c"], "label": ["contradiction"]}).to_csv(dev, index=False)
    with pytest.raises(DataError, match="contradiction"):
        load_data(files_config(train, dev))


def test_negative_label(tmp_path):
    train = tmp_path / "train.csv"
    pd.DataFrame({"text": ["a", "b"], "label": [-1, 1]}).to_csv(train, index=False)
    with pytest.raises(DataError, match="negative"):
        load_data(files_config(train))


def test_missing_label_value(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": null}\n')
    with pytest.raises(DataError, match="missing"):
        load_data(files_config(train))


def test_single_class_is_not_a_classification_task(tmp_path):
    train = tmp_path / "train.csv"
    pd.DataFrame({"text": list("abcdefghijkl"), "label": ["same"] * 12}).to_csv(train, index=False)
    with pytest.raises(DataError, match="two classes"):
        load_data(files_config(train))


def test_regression_needs_numbers(tmp_path):
    train = tmp_path / "train.csv"
    pd.DataFrame({"text": ["a", "b"], "label": ["high", "low"]}).to_csv(train, index=False)
    with pytest.raises(DataError, match="numbers"):
        load_data(files_config(train, None, "data.task=regression"))


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        _load_file(str(tmp_path / "absent.csv"))
    other = tmp_path / "train.txt"
    other.write_text("a\n")
    with pytest.raises(DataError, match="unsupported"):
        _load_file(str(other))


def test_hub_failure_is_a_data_error(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    cfg = load_config(BASE, ["data.source=hub", "data.name=glue", "data.subset=sst2", "data.eval_split=validation"])
    with pytest.raises(DataError, match=r"'glue' \(sst2\).*ConnectionError"):
        load_data(cfg)


# ================================================================== partitions
# (fedranklite.data.partitioners; the split algorithms are flwr-datasets' partitioners)
PARAMS = {"iid": {}, "dirichlet": {"alpha": 0.5}, "label_skew": {"labels_per_client": 2}}


def split(labels, num_clients, kind, seed, *, task="classification", max_per_client=None, **params):
    return split_clients(labels, num_clients, {"type": kind, **params}, seed, task=task, max_per_client=max_per_client)


def class_labels(n=2000, classes=10, seed=0):
    return np.random.default_rng(seed).integers(classes, size=n)


def assert_exact_cover(parts, n):
    for p in parts:
        assert p.dtype == np.int64
        assert np.all(np.diff(p) > 0)  # sorted, no duplicates within a client
    together = np.sort(np.concatenate(parts))
    assert np.array_equal(together, np.arange(n))  # every row exactly once


@pytest.mark.parametrize("kind", KINDS)
def test_partition_covers_every_row_once_and_no_client_is_empty(kind):
    labels = class_labels()
    parts = split(labels, 10, kind, seed=0, **PARAMS[kind])
    assert len(parts) == 10
    assert all(len(p) > 0 for p in parts)
    assert_exact_cover(parts, len(labels))


@pytest.mark.parametrize("kind", KINDS)
def test_partition_is_reproducible_and_seed_dependent(kind):
    labels = class_labels()
    a = split(labels, 8, kind, seed=11, **PARAMS[kind])
    b = split_clients(labels, 8, PARTITIONERS.parse({"type": kind, **PARAMS[kind]}), 11)  # a parsed config
    c = split(labels, 8, kind, seed=12, **PARAMS[kind])
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(len(x) == len(y) and np.array_equal(x, y) for x, y in zip(a, c))


def test_iid_sizes_differ_by_at_most_one():
    parts = split(class_labels(n=1003), 10, "iid", seed=0)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == 1003


def test_iid_is_flowers_contiguous_shards_of_the_seeded_shuffle():
    # what FederatedDataset(shuffle=True, seed) + IidPartitioner gives a Flower baseline
    perm = np.random.default_rng(5).permutation(103)
    parts = split(class_labels(n=103), 4, "iid", seed=5)
    assert all(np.array_equal(p, np.sort(s)) for p, s in zip(parts, np.array_split(perm, 4)))


def mean_tv_distance(labels, parts, classes):
    overall = np.bincount(labels, minlength=classes) / len(labels)
    tvs = []
    for p in parts:
        local = np.bincount(labels[p], minlength=classes) / len(p)
        tvs.append(0.5 * np.abs(local - overall).sum())
    return float(np.mean(tvs))


def test_dirichlet_skew_grows_as_alpha_shrinks():
    labels = class_labels(n=3000, classes=5)
    skew = {}
    for alpha in (100.0, 1.0, 0.1):
        skew[alpha] = np.mean(
            [mean_tv_distance(labels, split(labels, 10, "dirichlet", seed=s, alpha=alpha), 5) for s in range(5)]
        )
    assert skew[100.0] < skew[1.0] < skew[0.1]
    assert skew[100.0] < 0.1  # close to IID
    assert skew[0.1] > 0.45  # most clients dominated by one or two classes
    iid = np.mean([mean_tv_distance(labels, split(labels, 10, "iid", seed=s), 5) for s in range(5)])
    assert iid < skew[1.0]


def test_label_distribution_by_hand():
    labels = np.array([0, 0, 1, 2, 2, 2])
    dist = label_distribution(labels, [np.array([0, 1, 2]), np.array([3, 4, 5])], 3)
    assert dist.tolist() == [[2 / 3, 1 / 3, 0.0], [0.0, 0.0, 1.0]]


@pytest.mark.parametrize("k", [1, 2, 3])
def test_label_skew_gives_each_client_exactly_k_labels(k):
    labels = class_labels(classes=10)
    for seed in range(3):
        parts = split(labels, 10, "label_skew", seed=seed, labels_per_client=k)
        held = [set(np.unique(labels[p]).tolist()) for p in parts]
        assert all(len(h) == k for h in held)  # every class has plenty of rows: exactly k
        assert [i in h for i, h in enumerate(held)] == [True] * 10  # first-deterministic: client i holds class i
        assert set().union(*held) == set(range(10))
        assert_exact_cover(parts, len(labels))


def test_label_skew_deterministic_assignment():
    labels = class_labels(classes=10)
    parts = split(labels, 4, "label_skew", seed=0, labels_per_client=3, class_assignment_mode="deterministic")
    held = [sorted(np.unique(labels[p]).tolist()) for p in parts]
    assert held == [[0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5]]  # client i: classes i, i+1, i+2


def test_label_skew_leaves_out_classes_no_client_holds_with_a_warning(caplog):
    labels = class_labels(classes=10)
    with caplog.at_level(logging.WARNING, logger="fedranklite.data.partitioners"):
        parts = split(labels, 2, "label_skew", seed=0, labels_per_client=2)
    held = [set(np.unique(labels[p]).tolist()) for p in parts]
    assert all(len(h) == 2 for h in held)
    used = np.concatenate(parts)
    assert len(np.unique(used)) == len(used)  # still no row twice
    assert np.array_equal(np.sort(used), np.flatnonzero(np.isin(labels, list(set().union(*held)))))
    assert "of the 10 classes" in caplog.text and "not used" in caplog.text


def test_label_skew_k_above_the_number_of_classes_is_all_classes():
    labels = class_labels(classes=3)
    parts = split(labels, 4, "label_skew", seed=0, labels_per_client=5)
    assert all(len(np.unique(labels[p])) == 3 for p in parts)
    assert_exact_cover(parts, len(labels))


def test_label_skew_checks_labels_per_client_against_num_labels():
    params = PARTITIONERS.parse({"type": "label_skew", "labels_per_client": 3})
    cfg = SimpleNamespace(data=SimpleNamespace(task="classification", num_labels=2))
    assert params.problems(cfg) == [("labels_per_client", "3 exceeds num_labels=2")]
    assert params.problems(SimpleNamespace(data=SimpleNamespace(task="classification", num_labels=None))) == []
    assert params.problems(SimpleNamespace(data=SimpleNamespace(task="regression", num_labels=1))) == []
    assert PARTITIONERS.parse("dirichlet").problems(cfg) == []


def test_regression_targets_are_binned_into_quantiles():
    targets = np.random.default_rng(0).permutation(np.arange(100, dtype=np.float32))
    bins = partition_labels(targets, "regression", num_bins=4)
    # quartile edges 24.75, 49.5, 74.25: values 0..24 -> 0, 25..49 -> 1, 50..74 -> 2, 75..99 -> 3
    assert np.array_equal(bins, (targets // 25).astype(np.int64))
    assert np.bincount(bins).tolist() == [25, 25, 25, 25]
    classes = np.array([3, 1, 2])
    assert partition_labels(classes, "classification", 4).tolist() == [3, 1, 2]


def test_label_partition_of_regression_targets_uses_the_bins():
    targets = np.random.default_rng(1).permutation(np.arange(200, dtype=np.float32)) / 40.0  # 0 .. 4.975
    parts = split(targets, 4, "label_skew", seed=0, task="regression", num_bins=4, labels_per_client=1)
    quartile = (targets * 40 // 50).astype(int)  # 50 values per quartile
    assert sorted(len(set(quartile[p].tolist())) for p in parts) == [1, 1, 1, 1]
    assert sorted(int(quartile[p][0]) for p in parts) == [0, 1, 2, 3]
    assert_exact_cover(parts, 200)
    parts = split(targets, 5, "dirichlet", seed=0, task="regression", num_bins=5, alpha=0.5)
    assert_exact_cover(parts, 200)
    assert all(len(p) > 0 for p in parts)


@pytest.mark.parametrize("kind", KINDS)
def test_max_per_client_caps(kind):
    labels = class_labels(n=1000)
    params = {"iid": {}, "dirichlet": {"alpha": 1.0}, "label_skew": {"labels_per_client": 4}}[kind]
    full = split(labels, 5, kind, seed=3, **params)
    capped = split(labels, 5, kind, seed=3, max_per_client=50, **params)
    for f, c in zip(full, capped):
        assert len(c) == min(50, len(f))
        assert np.isin(c, f).all()
        assert np.all(np.diff(c) > 0)
    assert all(len(f) > 50 for f in full)


def test_more_clients_than_rows_is_a_data_error():
    with pytest.raises(DataError, match="data.partition: 5 clients but only 4"):
        split(np.array([0, 1, 0, 1]), 5, "iid", seed=0)


def test_label_skew_leaving_a_client_empty_is_a_data_error():
    labels = np.array([0] * 10 + [1])  # class 1 has one row but two holders (clients 1 and 3)
    with pytest.raises(DataError, match=r"data.partition: label_skew.*without data"):
        split(labels, 4, "label_skew", seed=0, labels_per_client=1)


def test_dirichlet_impossible_is_a_data_error():
    labels = np.arange(10) % 2
    with pytest.raises(DataError, match="data.partition: dirichlet.*alpha"):
        split(labels, 10, "dirichlet", seed=0, alpha=0.001)


def test_dirichlet_with_few_rows_per_client():
    # min_partition_size (2) is lowered to rows // clients; with 3 rows per client Flower's split works ...
    labels = np.arange(30) % 3
    parts = split(labels, 10, "dirichlet", seed=0, alpha=100.0)
    assert all(len(p) >= 1 for p in parts)
    assert_exact_cover(parts, 30)
    # ... with 1.5 it cannot: each class is cut at the rounded-down cumulative shares in the same client
    # order, so the first client gets no row of any class at any alpha; one DataError line says what to do
    with pytest.raises(DataError, match=r"^data.partition: dirichlet.*more data or fewer clients[^\n]*$"):
        split(np.arange(15) % 3, 10, "dirichlet", seed=0, alpha=100.0)


def test_one_client_gets_everything():
    labels = class_labels(n=50)
    for kind in KINDS:
        parts = split(labels, 1, kind, seed=0, **({"labels_per_client": 10} if kind == "label_skew" else {}))
        assert_exact_cover(parts, 50)


def test_unknown_partitioner():
    assert set(PARTITIONERS) == set(KINDS)
    with pytest.raises(ValueError, match="unknown partitioner 'dirichlett' .*did you mean 'dirichlet'"):
        split(class_labels(), 2, "dirichlett", seed=0)


def test_unknown_partitioner_parameter_names_the_plugin():
    with pytest.raises(ValidationError, match=r"(?s)partitioner 'iid'.*alpha.*Extra inputs"):
        PARTITIONERS.parse({"type": "iid", "alpha": 0.1})
    with pytest.raises(ValidationError, match=r"(?s)partitioner 'dirichlet'.*labels_per_client"):
        PARTITIONERS.parse({"type": "dirichlet", "labels_per_client": 2})
    assert PARTITIONERS.parse({"type": "dirichlet", "alpha": 0.1, "num_bins": 3}).alpha == 0.1


def test_text_split_subset():
    split = TextSplit([("a",), ("b",), ("c",)], np.array([0, 1, 0]), ["n", "p"])
    sub = split.subset([2, 0])
    assert sub.texts == [("c",), ("a",)] and sub.labels.tolist() == [0, 0] and sub.label_names == ["n", "p"]


def test_dirichlet_redraws_beyond_flowers_eleven_until_every_client_has_rows():
    # alpha 0.1, 2 classes, 10 clients: a client is left (almost) empty in about 1 draw of 4, so Flower's own
    # 11 draws fail for many seeds; the redraws make every seed usable, with the same minimum size
    labels = class_labels(n=3000, classes=2)
    flower_only = 0
    for seed in range(6):
        try:
            split(labels, 10, "dirichlet", seed=seed, alpha=0.1, max_draws=11)
        except DataError:
            flower_only += 1
        parts = split(labels, 10, "dirichlet", seed=seed, alpha=0.1)
        assert min(len(p) for p in parts) >= 2
        assert_exact_cover(parts, 3000)
        again = split(labels, 10, "dirichlet", seed=seed, alpha=0.1)
        assert all(np.array_equal(a, b) for a, b in zip(parts, again))  # the redraws are seeded
    assert flower_only > 0  # the case the redraws exist for
    with pytest.raises(DataError, match="in each of 11 draws"):  # one seed's worth: Flower draws 11 times
        split(class_labels(n=30, classes=2), 10, "dirichlet", seed=0, alpha=0.01, max_draws=1)
    with pytest.raises(DataError, match="20 clients but only 10 training rows"):
        split(class_labels(n=10, classes=2), 20, "dirichlet", seed=0, alpha=0.5)  # refused before any draw


# ================================================================== inputs checked by meaning
def test_the_class_count_and_names_are_logged_at_set_up(tmp_path, caplog):
    train = tmp_path / "train.csv"
    pd.DataFrame({"text": ["a", "b", "c", "d", "e"], "label": ["pos", "neg", "pos", "pos", "neg"]}).to_csv(
        train, index=False
    )
    with caplog.at_level(logging.INFO, logger="fedranklite.data.load"):
        data = load_data(files_config(train, train))
    assert data.num_labels == 2
    line = next(r.getMessage() for r in caplog.records if "classes" in r.getMessage())
    assert f"{train}: 2 classes, names neg=0, pos=1; training rows per class 2/3" == line


def test_integer_labels_are_logged_as_ids(tmp_path, caplog):
    train = tmp_path / "train.csv"
    pd.DataFrame({"text": list("abcd"), "label": [0, 2, 1, 2]}).to_csv(train, index=False)
    with caplog.at_level(logging.INFO, logger="fedranklite.data.load"):
        load_data(files_config(train, train))
    assert any("3 classes, ids 0..2; training rows per class 1/1/2" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "labels, names, expect",
    [
        ([0, 1, "neg", "pos"], None, "mixes integer labels (0, 1) and label names ('neg', 'pos')"),
        (["pos", "neg", "pos", 1], None, "first differing at data row 4"),
        ([1.0, 0.0, "neg", "neg"], None, "mixes integer labels"),
        (["neg", "pos", "0", "1"], ["neg", "pos"], "mixes integer labels (0, 1) and label names"),
        ([{"a": 1}, 0, 1, 0], None, "data row 1: the label in column 'label' is a JSON object, not a class"),
        ([[0], 0, 1, 0], None, "is a JSON array"),
    ],
)
def test_a_label_column_holds_one_kind(labels, names, expect):
    from fedranklite.data.textsplit import class_ids

    with pytest.raises(DataError) as err:
        class_ids(labels, names, "label", "f.jsonl")
    assert expect in str(err.value) and str(err.value).startswith("f.jsonl: ")


def test_one_kind_of_label_still_loads():
    from fedranklite.data.textsplit import class_ids

    assert class_ids(["0", "1", 1, 0.0], None, "label", "w")[0].tolist() == [0, 1, 1, 0]
    ids, names = class_ids(["b", "a", "b"], None, "label", "w")
    assert ids.tolist() == [1, 0, 1] and names == ["a", "b"]
    assert class_ids(["x", "y"], ["x", "y"], "label", "w")[0].tolist() == [0, 1]
    assert class_ids([1, 0], ["x", "y"], "label", "w")[0].tolist() == [1, 0]


def test_texts_must_be_strings_and_only_a_pair_column_may_be_null():
    from fedranklite.data.textsplit import check_texts

    assert check_texts({"s1": ["a", "b"], "s2": ["c", None]}, "w", optional=["s2"]) == [("a", "c"), ("b", "")]
    with pytest.raises(DataError, match=r"^w: data row 2: column 's1' is missing \(null\)"):
        check_texts({"s1": ["a", None], "s2": ["c", "d"]}, "w", optional=["s2"])
    with pytest.raises(DataError, match=r"^w: data row 1: column 's1' holds a number \(5\), not text"):
        check_texts({"s1": [5, "x"]}, "w")
    with pytest.raises(DataError, match=r"column 's2' holds a JSON array"):
        check_texts({"s1": ["a"], "s2": [["x"]]}, "w", optional=["s2"])


def test_a_jsonl_pair_with_a_null_second_sentence_loads(tmp_path):
    train = tmp_path / "train.jsonl"
    rows = [{"a": f"p{i}", "b": None if i == 1 else f"h{i}", "label": i % 2} for i in range(4)]
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = load_data(files_config(train, train, "data.text_columns=[a, b]"))
    assert data.train.texts[1] == ("p1", "")


def test_the_file_type_is_checked_by_content(tmp_path):
    from fedranklite.data.load import sniff

    (tmp_path / "a.csv").write_text("text,label\nx,1\n")
    assert sniff(tmp_path / "a.csv", "csv") is None
    (tmp_path / "a.json").write_text('\ufeff  [{"text": "x", "label": 1}]')
    assert sniff(tmp_path / "a.json", "json") is None
    (tmp_path / "b.csv").write_bytes(b"\x1f\x8b\x08" + bytes(50))
    assert sniff(tmp_path / "b.csv", "csv") == "not a CSV file: it is a gzip archive"
    long = tmp_path / "long.csv"
    long.write_bytes(b"text,label\n" + ("\u00e9" * 40000).encode() + b",1\n")  # a character across 64 KiB
    assert sniff(long, "csv") is None
