"""Rank masking, truncate/pad on a real (tiny, random-init) peft model, and the LoRA scaling rule."""

from __future__ import annotations

import numpy as np
import peft
import pytest
import torch

from fedranklite.data.embedded import make_sentiment
from fedranklite.federation.memory import MemoryProfile
from fedranklite.federation.ranks import pad, rank_dim, truncate
from fedranklite.model.backbones import load_backbone
from fedranklite.model.fedmodel import FedModel, pool
from fedranklite.run.client import TrainSettings, encode, train_client


def make_model(r_max=8, alpha=16.0, seed=0, dropout=0.0):
    torch.manual_seed(seed)
    return FedModel(
        load_backbone("tiny:bert", seed=seed),
        num_labels=2,
        r_max=r_max,
        alpha=alpha,
        dropout=dropout,
        target_modules=["query", "value"],
        head_dropout=0.0,
    )


def randomize_lora(model: FedModel, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model._lora_params:
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def batch(model, n=6):
    split = make_sentiment(n, seed=3)
    enc = model.tokenizer([t[0] for t in split.texts], padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"], torch.as_tensor(split.labels)


def lora_pairs(model):
    return [(n, p) for n, p in model._lora_params]


def test_set_rank_zeroes_inactive_dims_and_blocks_their_gradients():
    model = make_model()
    randomize_lora(model)
    model.set_rank(3)
    ids, mask, labels = batch(model)
    loss = torch.nn.functional.cross_entropy(model(ids, mask), labels)
    loss.backward()
    assert lora_pairs(model), "LoRA parameters were not found"
    for name, p in lora_pairs(model):
        axis = rank_dim(name)
        inactive = p.narrow(axis, 3, model.r_max - 3)
        active_grad = p.grad.narrow(axis, 0, 3)
        assert torch.count_nonzero(inactive) == 0
        assert torch.count_nonzero(p.grad.narrow(axis, 3, model.r_max - 3)) == 0
        if "lora_A" in name:  # B is random too, so A's active rows do receive gradient
            assert torch.count_nonzero(active_grad) > 0


def test_gradient_mask_follows_the_model_when_it_moves_or_changes_dtype():
    """`.to(device)` replaces the rank_mask buffer with a new tensor; the gradient hooks must read the model's
    current one. They once held the tensor they were built with: on CUDA the backward pass then mixed devices,
    and set_rank after the move edited a mask no hook read. A dtype change replaces the buffer the same way, so
    this CPU test runs the code path a move to a GPU runs."""
    model = make_model().double()
    model.set_rank(3)
    randomize_lora(model)  # inactive dims nonzero too: only the mask keeps their gradient at zero
    ids, mask, labels = batch(model)
    torch.nn.functional.cross_entropy(model(ids, mask), labels).backward()
    for name, p in lora_pairs(model):
        assert p.grad.dtype == torch.float64
        assert torch.count_nonzero(p.grad.narrow(rank_dim(name), 3, model.r_max - 3)) == 0, name


@pytest.mark.parametrize("optimizer", ["adamw", "adam", "sgd"])
def test_inactive_dims_stay_exactly_zero_through_training(optimizer):
    model = make_model()
    randomize_lora(model)
    split = make_sentiment(64, seed=5)
    enc = encode(split, model.tokenizer, 32)
    global_state = model.adapter_state()
    settings = TrainSettings(
        max_local_steps=6, batch_size=8, lr=0.05, optimizer=optimizer, weight_decay=0.1, momentum=0.9, probe_samples=8
    )
    result = train_client(
        model,
        global_state,
        cid=0,
        rank=2,
        encoded=enc,
        rows=np.arange(64),
        settings=settings,
        device=torch.device("cpu"),
        seed=0,
    )
    assert result.steps == 6
    for name, p in lora_pairs(model):
        axis = rank_dim(name)
        assert torch.count_nonzero(p.narrow(axis, 2, model.r_max - 2)) == 0, name
        # the update that travels is rank 2 exactly, and its active block did change
        assert result.update[name].shape[axis] == 2
    changed = [not torch.equal(result.update[n], truncate(global_state, 2)[n]) for n, _ in lora_pairs(model)]
    assert any(changed)


def test_masked_forward_equals_forward_with_truncated_adapter_loaded():
    model = make_model()
    randomize_lora(model)
    full = model.adapter_state()
    ids, mask, _ = batch(model)
    model.eval()
    model.set_rank(3)
    masked = model(ids, mask)
    model.load_adapter_state(pad(truncate(full, 3), model.r_max))
    model.set_rank(model.r_max)
    padded = model(ids, mask)
    torch.testing.assert_close(masked, padded, rtol=0, atol=0)


def test_truncate_then_pad_is_identity_on_active_block_for_model_state():
    model = make_model()
    randomize_lora(model)
    full = model.adapter_state()
    for r in (1, 4, 8):
        back = pad(truncate(full, r), model.r_max)
        for name, t in full.items():
            axis = rank_dim(name)
            if axis is None:
                assert torch.equal(back[name], t)
            else:
                assert torch.equal(back[name].narrow(axis, 0, r), t.narrow(axis, 0, r))
                assert torch.count_nonzero(back[name].narrow(axis, r, model.r_max - r)) == 0


def test_scaling_rule_masked_rank_r_equals_genuine_rank_r_with_scaled_alpha():
    """A masked rank-r client with (alpha, r_max) is exactly a rank-r LoRA with alpha' = alpha*r/r_max."""
    r_max, alpha, r = 8, 16.0, 3
    model = make_model(r_max=r_max, alpha=alpha)
    randomize_lora(model)
    model.set_rank(r)
    model.eval()
    assert model.lora_scaling() == pytest.approx(alpha / r_max)
    ids, mask, _ = batch(model)
    expected = model(ids, mask)

    genuine = FedModel(
        load_backbone("tiny:bert", seed=0),
        num_labels=2,
        r_max=r,
        alpha=alpha * r / r_max,
        dropout=0.0,
        target_modules=["query", "value"],
        head_dropout=0.0,
    )
    genuine.load_state_dict({k: v for k, v in model.state_dict().items() if "lora_" not in k}, strict=False)
    genuine.load_adapter_state(truncate(model.adapter_state(), r))
    genuine.eval()
    assert genuine.lora_scaling() == pytest.approx(alpha * r / r_max / r)  # peft: alpha'/r = alpha/r_max
    torch.testing.assert_close(genuine(ids, mask), expected, rtol=1e-5, atol=1e-6)


def test_set_rank_reuses_the_same_parameters():
    model = make_model()
    before = {n: id(p) for n, p in model.named_parameters()}
    for r in (2, 8, 1, 5):
        model.set_rank(r)
    assert {n: id(p) for n, p in model.named_parameters()} == before
    with pytest.raises(ValueError):
        model.set_rank(0)
    with pytest.raises(ValueError):
        model.set_rank(9)


def test_only_lora_and_head_are_trainable():
    model = make_model()
    names = model.trainable_names()
    assert names and all(("lora_" in n) or n.startswith("head.") for n in names)
    assert any(n.startswith("head.") for n in names)
    assert isinstance(model.backbone, peft.PeftModel)


def test_pooling_mean_last_cls():
    hidden = torch.arange(2 * 3 * 2, dtype=torch.float32).view(2, 3, 2)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    torch.testing.assert_close(pool(hidden, mask, "mean"), torch.tensor([[1.0, 2.0], [8.0, 9.0]]))
    torch.testing.assert_close(pool(hidden, mask, "last"), torch.tensor([[2.0, 3.0], [10.0, 11.0]]))
    torch.testing.assert_close(pool(hidden, mask, "cls"), torch.tensor([[0.0, 1.0], [6.0, 7.0]]))


def test_memory_profile_caps_rank():
    prof = MemoryProfile(
        frozen_bytes=1000, lora_params_per_rank=10, head_params=5, hidden_size=4, num_layers=1, act_factor=1.0
    )
    # bytes_at(r) = 1000 + 16*(10 r + 5) + 1*b*s*4*1*4
    assert prof.bytes_at(2, batch_size=1, seq_len=1) == 1000 + 16 * 25 + 16
    gb = (1000 + 16 * 5 + 16 + 16 * 10 * 3) / 1024**3  # exactly rank 3 fits
    assert prof.max_rank(gb, r_max=8, batch_size=1, seq_len=1) == 3
    assert prof.max_rank(1.0, r_max=8, batch_size=1, seq_len=1) == 8
    assert prof.max_rank(1000 / 1024**3, r_max=8, batch_size=1, seq_len=1) == 0


# ---------------------------------------------------------------- sentence pairs: cross vs siamese
def _pair_split():
    from fedranklite.data.textsplit import TextSplit

    texts = [
        ("the film was great", "it was great"),
        ("awful plot", "the acting was not bad at all"),
        ("i liked it", "i liked it"),
    ]
    return TextSplit(texts, np.array([1, 0, 1]))


def test_siamese_encoding_keeps_the_two_texts_apart_and_cross_joins_them():
    model = make_model()
    split = _pair_split()
    cross = encode(split, model.tokenizer, 32)
    siamese = encode(split, model.tokenizer, 32, siamese=True)
    assert cross.pair_ids is None and siamese.pair_ids is not None
    single = [model.tokenizer(a)["input_ids"] for a, _ in split.texts]
    second = [model.tokenizer(b)["input_ids"] for _, b in split.texts]
    assert siamese.input_ids == single and siamese.pair_ids == second
    # the cross encoding is one sequence holding both texts ([CLS] a [SEP] b [SEP])
    assert all(len(c) == len(a) + len(b) - 1 for c, a, b in zip(cross.input_ids, single, second))


def test_siamese_forward_is_the_head_on_pair_features_of_the_two_embeddings():
    from fedranklite.model.fedmodel import COSINE_SCALE, pair_features
    from fedranklite.run.client import collate

    torch.manual_seed(0)
    model = FedModel(
        load_backbone("tiny:bert"),
        num_labels=2,
        r_max=8,
        alpha=16.0,
        dropout=0.0,
        target_modules=["query", "value"],
        head_dropout=0.0,
        siamese=True,
    ).eval()
    assert model.head[1].in_features == 2 * 32 + 2
    assert torch.count_nonzero(model.head[1].weight) == 0  # starts from a constant prediction
    torch.nn.init.normal_(model.head[1].weight)
    enc = encode(_pair_split(), model.tokenizer, 32, siamese=True)
    inputs, _ = collate(enc, [0, 1, 2], 0, torch.device("cpu"), False)
    with torch.no_grad():
        u = model.embed(inputs["input_ids"], inputs["attention_mask"])
        v = model.embed(inputs["pair_ids"], inputs["pair_mask"])
        feats = pair_features(u, v)
        torch.testing.assert_close(model(**inputs), model.head(feats))
    cos = torch.nn.functional.cosine_similarity(u, v)
    torch.testing.assert_close(feats[:, 0], COSINE_SCALE * cos)
    torch.testing.assert_close(feats[:, 1], COSINE_SCALE * (1 - cos))
    assert feats[2, 0].item() == pytest.approx(COSINE_SCALE, abs=1e-4)  # identical texts: cos 1, |u-v| 0
    assert feats[2, 2:34].abs().max().item() < 1e-5
    with pytest.raises(ValueError, match="pair_ids"):
        model(inputs["input_ids"], inputs["attention_mask"])


def test_siamese_client_trains_and_masks_ranks_like_cross():
    torch.manual_seed(0)
    model = FedModel(
        load_backbone("tiny:bert"),
        num_labels=2,
        r_max=8,
        alpha=16.0,
        dropout=0.0,
        target_modules=["query", "value"],
        head_dropout=0.0,
        siamese=True,
    )
    enc = encode(_pair_split(), model.tokenizer, 32, siamese=True)
    res = train_client(
        model,
        model.adapter_state(),
        0,
        3,
        enc,
        np.arange(3),
        TrainSettings(local_epochs=2, batch_size=2, lr=1e-2, probe_samples=3),
        torch.device("cpu"),
        seed=1,
    )
    assert res.steps == 4 and np.isfinite(res.loss_after)
    assert all(v.shape[rank_dim(k)] == 3 for k, v in res.update.items() if rank_dim(k) is not None)
    assert torch.count_nonzero(res.update["head.1.weight"]) > 0


def test_pair_encoding_auto_is_siamese_only_for_sentence_transformers_pairs():
    from fedranklite.model.backbones import Backbone
    from fedranklite.model.fedmodel import use_siamese

    st = Backbone(None, None, "mean", "x", sentence_encoder=True)
    plain = Backbone(None, None, "mean", "x", sentence_encoder=False)
    assert use_siamese("auto", st, 2) and not use_siamese("auto", plain, 2)
    assert not use_siamese("auto", st, 1) and not use_siamese("siamese", st, 1)
    assert use_siamese("siamese", plain, 2) and not use_siamese("cross", st, 2)
