"""Label-word scoring of causal LMs (`model.head: verbalizer`) on a tiny random Llama: label-word token ids,
the score against an independent full-vocabulary computation (padding and the answer position), the loss,
what trains and what does not, prompt rendering and truncation, the choice of head, and config errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedranklite.data.textsplit import TextSplit
from fedranklite.model.backbones import load_backbone
from fedranklite.model.fedmodel import FedModel
from fedranklite.model.verbalizer import (
    Verbalizer,
    VerbalizerError,
    VerbalizerHead,
    check_template,
    choose_verbalizer,
    default_template,
    soft_targets,
    template_fields,
)
from fedranklite.run.client import TrainSettings, collate, encode, loss_fn, predictions, train_client

TEMPLATE = "review: {text_a} sentiment:"
WORDS = (" negative", " positive")


def tiny_model(verbalizer: Verbalizer | None = Verbalizer(TEMPLATE, WORDS), seed: int = 0) -> FedModel:
    bb = load_backbone("tiny:llama", seed=seed)
    torch.manual_seed(seed)
    return FedModel(bb, 2, 4, 8.0, 0.0, ["q_proj", "v_proj"], head_dropout=0.0, verbalizer=verbalizer)


def prompts_of(model: FedModel, rows: list[tuple[str, ...]], max_length: int = 64) -> list[list[int]]:
    texts = model.verbalizer.render(rows, model.tokenizer, max_length)
    return encode(
        TextSplit([(t,) for t in texts], np.zeros(len(rows), dtype=np.int64)), model.tokenizer, max_length
    ).input_ids


# ---------------------------------------------------------------- templates
def test_template_placeholders_are_checked():
    assert template_fields("Q: {text_a} A: {text_b} {{literal}}") == ["text_a", "text_b"]
    for bad in ("{text}", "{0}", "{text_a!r}", "{text_a:>10}", "{sentence}"):
        with pytest.raises(VerbalizerError, match="unknown placeholder"):
            template_fields(bad)
    with pytest.raises(VerbalizerError, match="template"):
        template_fields("unbalanced { brace")
    check_template("{text_a} / {text_b}", 2)
    with pytest.raises(VerbalizerError, match=r"\{text_b\}"):
        check_template("{text_a} only", 2)  # a pair task must place both texts
    with pytest.raises(VerbalizerError, match="once each"):
        check_template("{text_a} {text_a}", 1)
    with pytest.raises(VerbalizerError):
        check_template("{text_a} {text_b}", 1)


def test_label_words_are_first_token_ids_and_must_differ():
    model = tiny_model()
    tok = model.tokenizer
    ids = Verbalizer(TEMPLATE, WORDS).label_token_ids(tok)
    assert ids == [tok.convert_tokens_to_ids("negative"), tok.convert_tokens_to_ids("positive")]
    assert model.head.label_ids.tolist() == ids
    with pytest.raises(VerbalizerError, match="begin with the same token"):
        Verbalizer(TEMPLATE, (" great", " great film")).label_token_ids(tok)


# ---------------------------------------------------------------- the score
def test_score_is_the_lm_log_probability_of_each_label_word_at_the_answer_position():
    """Independently: the full causal LM's logits over the whole sequence, read at the last prompt token."""
    from transformers import LlamaForCausalLM

    model = tiny_model().eval()
    rows = [("the movie was great .",), ("the hotel was terrible and the staff was awful .",)]
    ids = prompts_of(model, rows)
    assert len(ids[0]) != len(ids[1])  # so the batch is padded on the right
    inputs, _ = collate(
        encode(
            TextSplit([(t,) for t in model.verbalizer.render(rows, model.tokenizer, 64)], np.zeros(2, dtype=np.int64)),
            model.tokenizer,
            64,
        ),
        [0, 1],
        model.tokenizer.pad_token_id,
        torch.device("cpu"),
        False,
    )
    with torch.no_grad():
        got = model(**inputs)
    lm = LlamaForCausalLM(model.backbone.base_model.model.config)
    lm.model = model.backbone.base_model.model  # the same weights (LoRA B is zero at init: the base model)
    lm.lm_head = model.head.lm_head
    word_ids = model.head.label_ids
    for k, row in enumerate(ids):
        with torch.no_grad():
            logits = lm(input_ids=torch.tensor([row])).logits[0, -1]
        want = torch.log_softmax(logits, -1)[word_ids]
        torch.testing.assert_close(got[k], want, atol=1e-5, rtol=1e-5)
    assert got.shape == (2, 2) and (got.exp().sum(-1) < 1).all()  # log-probabilities over the whole vocabulary


def test_regression_reads_the_expected_value_of_the_label_words():
    lm_head = torch.nn.Linear(8, 20, bias=False)
    values = [-1.0, 0.0, 3.0]
    head = VerbalizerHead(lm_head, [3, 7, 11], values)
    hidden = torch.randn(5, 8)
    p = torch.softmax(lm_head(hidden)[:, [3, 7, 11]], -1)
    scores = head(hidden)
    expected = (p * torch.tensor(values)).sum(-1)
    torch.testing.assert_close(head.predict(scores), expected)
    torch.testing.assert_close(predictions(scores, True, head), expected)  # what evaluation scores
    assert ((head.predict(scores) >= -1) & (head.predict(scores) <= 3)).all()
    assert not any(p.requires_grad for p in head.parameters())
    y = torch.tensor([0.5, -1.0, 2.0, 3.0, 0.0])
    torch.testing.assert_close(loss_fn(scores, y, True, head), ((expected - y) ** 2).mean())  # mse, the default


def test_soft_targets_split_each_value_between_its_two_neighbours():
    values = torch.tensor([(k - 2.5) / 2.5 for k in range(6)])  # STS-B's centred 0..5
    y = torch.tensor([-1.0, -0.2, 0.0, 0.36, 1.0, 7.0, -3.0])
    t = soft_targets(y, values)
    assert t.shape == (7, 6) and torch.all(t >= 0)
    torch.testing.assert_close(t.sum(-1), torch.ones(7))
    torch.testing.assert_close((t * values).sum(-1), y.clamp(-1, 1))  # its expected value is the target
    assert ((t > 0).sum(-1) <= 2).all()  # at most the two neighbours
    torch.testing.assert_close(t[0], torch.tensor([1.0, 0, 0, 0, 0, 0]))  # on a value: all of it there
    torch.testing.assert_close(t[1], torch.tensor([0, 0.0, 1.0, 0, 0, 0]), atol=1e-6, rtol=0)  # -0.2 is "2"
    torch.testing.assert_close(t[3, 3:5], torch.tensor([0.6, 0.4]))  # 0.36 = 3.4 on 0..5
    # values in any order: the same split, by value
    shuffled = torch.tensor([3.0, 0.0, 1.0])
    torch.testing.assert_close(
        soft_targets(torch.tensor([0.25, 2.0]), shuffled), torch.tensor([[0, 0.75, 0.25], [0.5, 0, 0.5]])
    )
    with pytest.raises(ValueError, match="differ"):
        VerbalizerHead(torch.nn.Linear(4, 9), [1, 2, 3], [0.0, 1.0, 1.0], regression_loss="soft_ce")
    with pytest.raises(ValueError, match="mse or soft_ce"):
        VerbalizerHead(torch.nn.Linear(4, 9), [1, 2], [0.0, 1.0], regression_loss="huber")


def test_soft_ce_is_the_cross_entropy_against_the_split_target_and_least_there():
    lm_head = torch.nn.Linear(8, 20, bias=False)
    values = [0.0, 1.0, 2.0]
    head = VerbalizerHead(lm_head, [3, 7, 11], values, regression_loss="soft_ce")
    scores = head(torch.randn(4, 8))
    y = torch.tensor([0.0, 0.5, 1.25, 2.0])
    target = soft_targets(y, torch.tensor(values))
    want = -(target * torch.log_softmax(scores, -1)).sum(-1).mean()
    torch.testing.assert_close(loss_fn(scores, y, True, head), want)
    # scores that put exactly the target's probabilities on the words give the least loss (the target's entropy)
    at_target = torch.log(target.clamp_min(1e-12))
    entropy = -(target * torch.log(target.clamp_min(1e-12))).sum(-1).mean()
    torch.testing.assert_close(head.loss(at_target, y), entropy, atol=1e-5, rtol=0)
    assert head.loss(scores, y) > entropy
    torch.testing.assert_close(head.predict(at_target), y)  # and then the prediction is the target


def test_soft_ce_regression_trains_the_expected_value_towards_the_targets():
    """A tiny causal LM on a regression task through soft_ce: the LoRA factors alone move the expected value."""
    values = (0.0, 1.0, 2.0)
    verbalizer = Verbalizer(
        "review: {text_a} score:", (" negative", " positive", " great"), values, regression_loss="soft_ce"
    )
    model = tiny_model(verbalizer)
    assert model.head.regression_loss == "soft_ce"
    rows = [("the movie was great .",)] * 8 + [("the movie was awful .",)] * 8
    y = np.array([1.8] * 8 + [0.2] * 8, dtype=np.float32)
    texts = model.verbalizer.render(rows, model.tokenizer, 64)
    enc = encode(TextSplit([(t,) for t in texts], y), model.tokenizer, 64)
    inputs, labels = collate(enc, list(range(16)), model.tokenizer.pad_token_id, torch.device("cpu"), True)
    with torch.no_grad():
        before = ((model.head.predict(model(**inputs)) - labels) ** 2).mean().item()
    settings = TrainSettings(
        local_epochs=30, max_local_steps=30, batch_size=16, lr=3e-2, probe_samples=16, regression=True
    )
    res = train_client(model, model.adapter_state(), 0, 4, enc, np.arange(16), settings, torch.device("cpu"), seed=0)
    assert res.loss_after < res.loss_before
    model.load_adapter_state(res.update)  # rank 4 = r_max: the whole adapter
    with torch.no_grad():
        after = ((model.head.predict(model(**inputs)) - labels) ** 2).mean().item()
    assert after < before * 0.5


def test_loss_is_cross_entropy_over_the_label_words_and_only_lora_trains():
    model = tiny_model()
    assert all("lora_" in n for n in model.trainable_names())  # nothing new to initialise
    assert model.memory_profile().head_params == 0
    split = TextSplit([("the movie was great .",)] * 8 + [("the movie was awful .",)] * 8, np.array([1] * 8 + [0] * 8))
    texts = model.verbalizer.render(split.texts, model.tokenizer, 64)
    enc = encode(TextSplit([(t,) for t in texts], split.labels), model.tokenizer, 64)
    inputs, labels = collate(enc, list(range(16)), model.tokenizer.pad_token_id, torch.device("cpu"), False)
    scores = model(**inputs)
    renorm = torch.log_softmax(scores, -1)  # the softmax restricted to the label words
    want = -renorm[torch.arange(16), labels].mean()
    torch.testing.assert_close(loss_fn(scores, labels, False), want)
    torch.testing.assert_close(loss_fn(scores, labels, False, model.head), want)  # the head's own loss: the same

    lm_head_before = model.head.lm_head.weight.detach().clone()
    state = model.adapter_state()
    settings = TrainSettings(local_epochs=30, max_local_steps=30, batch_size=16, lr=3e-2, probe_samples=16)
    res = train_client(model, state, 0, 4, enc, np.arange(16), settings, torch.device("cpu"), seed=0)
    assert res.loss_after < res.loss_before * 0.5  # label words learned through the LoRA factors alone
    assert set(res.update) == {n for n in model.trainable_names()}
    assert torch.equal(model.head.lm_head.weight, lm_head_before)  # the LM head (tied embedding) is frozen


# ---------------------------------------------------------------- rendering
def test_long_texts_are_cut_never_the_template():
    model = tiny_model()
    long_text = " ".join(["the movie was great ."] * 60)
    for max_length in (12, 20, 40):
        ids = prompts_of(model, [(long_text,), ("short .",)], max_length)
        assert len(ids[0]) <= max_length
        tail = model.tokenizer.convert_ids_to_tokens(ids[0][-2:])
        assert tail == ["sentiment", ":"]  # the answer cue still ends the prompt
    pair = Verbalizer("first: {text_a} second: {text_b} answer:", (" yes", " no"))
    texts = pair.render([(long_text, "the hotel .")], model.tokenizer, 24)
    assert texts[0].endswith("second: the hotel . answer:")  # the longer text lost tokens, the short one kept all
    with pytest.raises(VerbalizerError, match="max_length"):
        Verbalizer("review sentiment positive or negative or answer : {text_a} :", WORDS).render(
            [("great",)], model.tokenizer, 6
        )


# ---------------------------------------------------------------- which head
def test_choice_of_head():
    args = dict(template=None, label_words=None, label_values=None, num_texts=1, num_labels=2, regression=False)
    assert choose_verbalizer("auto", causal=False, label_names=None, **args) is None
    assert choose_verbalizer("linear", causal=True, label_names=None, **args) is None
    v = choose_verbalizer("auto", causal=True, label_names=["not_entailment", "yes"], **args)
    assert v.label_words == (" not entailment", " yes") and v.template == default_template(1, v.label_words)
    assert v.template.endswith("Answer (not entailment or yes):")
    with pytest.raises(VerbalizerError, match="causal"):
        choose_verbalizer("verbalizer", causal=False, label_names=None, **args)
    with pytest.raises(VerbalizerError, match="3 words for 2 classes"):
        choose_verbalizer("auto", causal=True, label_names=None, **{**args, "label_words": [" a", " b", " c"]})
    reg = {**args, "num_labels": 1, "regression": True}
    assert choose_verbalizer("auto", causal=True, label_names=None, **reg) is None  # no words: linear head
    with pytest.raises(VerbalizerError, match="label_values"):
        choose_verbalizer("verbalizer", causal=True, label_names=None, **reg)
    v = choose_verbalizer(
        "auto", causal=True, label_names=None, **{**reg, "label_words": ["0", "5"], "label_values": [0, 5]}
    )
    assert v.regression and v.label_values == (0.0, 5.0)


def test_pair_default_template_places_both_texts():
    v = choose_verbalizer("auto", None, None, None, True, 2, 2, ["entailment", "not_entailment"], False)
    assert "{text_a}" in v.template and "{text_b}" in v.template


# ---------------------------------------------------------------- through the engine and the command line
def _config(tmp_path, extra: str = "") -> str:
    path = tmp_path / "slm.yaml"
    base = (Path(__file__).resolve().parents[1] / "configs" / "base.yaml").as_posix()
    path.write_text(
        f"_base_: {base}\n"
        f"output_dir: {tmp_path.as_posix()}/out\n"
        "model: {name: 'tiny:llama', lora: {target_modules: [q_proj, v_proj]},\n"
        f"        verbalizer: {{template: '{TEMPLATE}', label_words: [' negative', ' positive']}}}}\n"
        "data: {embedded_train_size: 200, embedded_eval_size: 64}\n"
        "federation: {num_rounds: 2, clients_per_round: 3}\n"
        "training: {max_local_steps: 2, batch_size: 8}\n"
        "evaluation: {eval_initial: true}\n" + extra
    )
    return str(path)


def test_a_verbalizer_run_records_its_zero_shot_score_and_resumes(tmp_path):
    import json

    from fedranklite.cli import main as cli
    from fedranklite.run.checkpoint import CHECKPOINT_NAME, load_checkpoint

    config = _config(tmp_path)
    assert cli.main(["run", "--config", config, "--quiet", "--set", "federation.num_rounds=1"]) == 0
    folder = tmp_path / "out" / "slm"
    summary = json.loads((folder / "metrics.json").read_text())
    assert summary["head"] == "verbalizer" and summary["verbalizer"]["template"] == TEMPLATE
    initial = summary["initial_eval"]
    assert 0 <= initial["score"] <= 1 and initial["num_samples"] == 64
    # bytes: the LoRA factors alone (no head travels)
    assert summary["memory_profile"]["head_params"] == 0
    assert load_checkpoint(folder / CHECKPOINT_NAME)["initial_eval"] == initial
    # the same model scored independently gives the same zero-shot score
    from fedranklite.config.files import load_config
    from fedranklite.run.engine import build_engine

    engine = build_engine(load_config(config, ["federation.num_rounds=1"]))
    assert engine.evaluator(engine.state.global_state)["score"] == pytest.approx(initial["score"])

    # a checkpoint whose initial_eval is not an evaluation is refused before any round runs
    from fedranklite.run.checkpoint import ResumeError, save_checkpoint

    payload = load_checkpoint(folder / CHECKPOINT_NAME)
    payload["initial_eval"] = {"score": "abc"}
    save_checkpoint(folder / CHECKPOINT_NAME, payload)  # a correctly hashed, crafted checkpoint
    with pytest.raises(ResumeError, match="initial_eval"):
        load_checkpoint(folder / CHECKPOINT_NAME)


def test_a_word_clash_found_only_by_the_tokenizer_is_one_line(tmp_path, capsys):
    from fedranklite.cli import main as cli

    text = open(_config(tmp_path)).read()
    assert "[' negative', ' positive']" in text
    (tmp_path / "clash.yaml").write_text(text.replace("[' negative', ' positive']", "[' great', ' great film']"))
    code = cli.main(["run", "--config", str(tmp_path / "clash.yaml"), "--quiet"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "begin with the same token" in err and "Traceback" not in err


def test_verbalizer_on_an_encoder_is_refused(tmp_path, capsys):
    from fedranklite.cli import main as cli

    text = open(_config(tmp_path)).read()
    assert "name: 'tiny:llama'" in text
    text = text.replace("name: 'tiny:llama'", "head: verbalizer, name: 'tiny:bert'")
    (tmp_path / "enc.yaml").write_text(text.replace("[q_proj, v_proj]", "[query, value]"))
    code = cli.main(["run", "--config", str(tmp_path / "enc.yaml"), "--quiet"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "causal" in err, err


def test_a_linear_head_is_still_available_for_a_causal_lm():
    model = tiny_model(verbalizer=None)
    assert model.verbalizer is None and any(n.startswith("head.") for n in model.trainable_names())


# ---------------------------------------------------------------- hostile and careless inputs (review findings)
def test_rows_with_more_texts_than_the_template_places_are_refused():
    model = tiny_model()
    with pytest.raises(VerbalizerError, match="places 1 text"):
        model.verbalizer.render([("the movie .", "the hotel .")], model.tokenizer, 64)


def test_glue_data_without_its_preset_uses_the_task_prompt_and_both_texts(tmp_path):
    from fedranklite.config.files import load_config
    from fedranklite.data.glue import PROMPTS
    from fedranklite.run.prepare import prepare

    glue = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"
    if not (glue / "RTE" / "train.tsv").is_file():
        pytest.skip("needs the GLUE TSV files")
    base = (Path(__file__).resolve().parents[1] / "configs" / "base.yaml").as_posix()
    path = tmp_path / "rte.yaml"
    path.write_text(
        f"_base_: {base}\noutput_dir: {tmp_path.as_posix()}\n"
        "model: {name: 'tiny:llama', max_length: 128, lora: {target_modules: [q_proj, v_proj]}}\n"
        f"data: {{source: glue, name: rte, data_dir: {glue.as_posix()}, samples_per_client: 20}}\n"
    )
    prep = prepare(load_config(str(path)))  # data.text_columns is left at its default [text]
    assert prep.model.verbalizer.template == PROMPTS["rte"]["template"]
    first = prep.data.train.texts[0]
    prompt = prep.model.tokenizer.decode(prep.train.input_ids[0])
    assert len(first) == 2 and first[0].startswith("No Weapons") and first[1].startswith("Weapons")
    assert prompt.count("found in") == 2  # both sentences (the tiny vocabulary knows only a few of their words)


def test_label_names_with_braces_make_a_valid_default_template():
    v = choose_verbalizer("auto", None, None, None, True, 1, 2, ["good}", "{bad"], False)
    assert v.render([("the movie .",)], tiny_model().tokenizer, 64)[0].endswith("Answer (good} or {bad):")


def test_special_and_unknown_tokens_are_not_label_words():
    tok = tiny_model().tokenizer
    for words in (("[PAD]", " great"), (" great", " zzzunknownzzz")):
        with pytest.raises(VerbalizerError, match="special or unknown"):
            Verbalizer(TEMPLATE, words).label_token_ids(tok)
    derived = choose_verbalizer("auto", None, None, None, True, 1, 2, ["zzz", "great"], False)
    with pytest.raises(VerbalizerError, match="made from data.label_names"):
        derived.label_token_ids(tok)


def test_special_token_strings_in_a_row_do_not_reach_the_prompt():
    model = tiny_model()
    prompt = model.verbalizer.render([("the movie [PAD] was [UNK] great .",)], model.tokenizer, 64)[0]
    assert "[PAD]" not in prompt and "[UNK]" not in prompt and prompt.endswith("sentiment:")


def test_architecture_logit_transforms_are_applied():
    from transformers import Gemma2Config, LlamaConfig

    from fedranklite.model.verbalizer import logit_transform

    assert logit_transform(LlamaConfig()) == (1.0, None)
    assert logit_transform(Gemma2Config(final_logit_softcapping=30.0)) == (1.0, 30.0)
    lm_head = torch.nn.Linear(4, 10, bias=False)
    torch.nn.init.normal_(lm_head.weight, std=50.0)
    head = VerbalizerHead(lm_head, [1, 2], softcap=30.0)
    hidden = torch.randn(3, 4)
    capped = torch.tanh(lm_head(hidden) / 30.0) * 30.0
    torch.testing.assert_close(head(hidden), torch.log_softmax(capped, -1)[:, [1, 2]])


def test_checkpoints_from_before_model_head_resume_as_linear_heads():
    from fedranklite.config.files import load_config
    from fedranklite.run.checkpoint import with_defaults

    saved = load_config(str(Path(__file__).resolve().parents[1] / "configs" / "base.yaml")).to_dict()
    del saved["model"]["head"], saved["model"]["verbalizer"], saved["evaluation"]["eval_initial"]
    filled = with_defaults(saved)
    assert filled["model"]["head"] == "linear" and filled["evaluation"]["eval_initial"] is False


def test_cached_prompts_skip_the_rendering(tmp_path, monkeypatch):
    """The token cache is keyed on the raw rows and the prompt: a second run with the same data and verbalizer
    reads the ids without rendering (which tokenises every prompt); another template is another key."""
    from fedranklite.model.verbalizer import Verbalizer as V
    from fedranklite.run.token_cache import tokenise

    model = tiny_model()
    split = TextSplit([("the movie was great .",), ("the hotel was awful .",)], np.array([1, 0]))
    first = tokenise(split, model.tokenizer, 64, cache_dir=tmp_path, verbalizer=model.verbalizer)

    def must_not_render(*_a, **_k):
        raise AssertionError("rendered although the prompts' ids were cached")

    monkeypatch.setattr(V, "render", must_not_render)
    again = tokenise(split, model.tokenizer, 64, cache_dir=tmp_path, verbalizer=model.verbalizer)
    assert again.input_ids == first.input_ids and list(again.labels) == [1, 0]
    other = V("first: {text_a} answer:", WORDS)
    with pytest.raises(AssertionError, match="rendered"):
        tokenise(split, model.tokenizer, 64, cache_dir=tmp_path, verbalizer=other)
