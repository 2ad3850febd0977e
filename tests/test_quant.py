"""QLoRA: model.quantization 4bit (NF4, double quantization, fp32 compute) and 8bit through bitsandbytes on
the bundled MiniLM, with k-bit training preparation, LoRA adapters in fp32 and only adapters + head
exchanged; and the clear error (no traceback) where bitsandbytes cannot quantize."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import torch

has_bnb = importlib.util.find_spec("bitsandbytes") is not None


def _quantizes() -> bool:
    if not has_bnb:
        return False
    try:
        from fedranklite.model.backbones import load_backbone

        load_backbone("bundled:minilm-l6", quantization="4bit")
        return True
    except Exception:
        return False


@pytest.mark.skipif(not has_bnb, reason="bitsandbytes not installed (pip install 'fedranklite[quant]')")
@pytest.mark.parametrize("quant", ["4bit", "8bit"])
def test_qlora_trains_fp32_adapters_on_a_quantized_base(quant):
    if not _quantizes():
        pytest.skip("bitsandbytes cannot quantize on this platform (the error path is tested below)")
    from fedranklite.data.embedded import make_sentiment
    from fedranklite.model.backbones import load_backbone
    from fedranklite.model.fedmodel import FedModel
    from fedranklite.run.client import TrainSettings, encode, train_client

    plain = load_backbone("bundled:minilm-l6")
    bb = load_backbone("bundled:minilm-l6", quantization=quant)
    kind = {"4bit": "Linear4bit", "8bit": "Linear8bitLt"}[quant]
    query = bb.model.encoder.layer[0].attention.self.query
    assert type(query).__name__ == kind
    if quant == "4bit":
        assert query.weight.quant_state.quant_type == "nf4" and query.weight.quant_state.nested  # double quant
    assert bb.model.get_memory_footprint() < 0.7 * plain.model.get_memory_footprint()
    torch.manual_seed(0)
    model = FedModel(bb, 2, r_max=8, alpha=16, dropout=0.0, target_modules=["query", "value"], quantized=True)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert all("lora_" in n or n.startswith("head.") for n in trainable)
    assert all(p.dtype == torch.float32 for p in trainable.values())
    split = make_sentiment(32, 0)
    enc = encode(split, bb.tokenizer, 32)
    state = model.adapter_state()
    res = train_client(
        model,
        state,
        0,
        4,
        enc,
        np.arange(32),
        TrainSettings(max_local_steps=2, batch_size=8, probe_samples=8),
        torch.device("cpu"),
        seed=0,
    )
    assert res.steps == 2 and np.isfinite(res.loss_after)
    # only adapters and head travel: same keys as the fp32 model's adapter state, never base weights
    assert set(res.update) == set(trainable)
    assert all(v.dtype == torch.float32 for v in res.update.values())
    assert res.bytes_up == sum(v.numel() * 4 for v in res.update.values())


@pytest.mark.skipif(not has_bnb, reason="bitsandbytes not installed (pip install 'fedranklite[quant]')")
def test_a_4bit_layer_computes_exactly_its_dequantized_weights_forward_and_backward():
    """4-bit RTE learns less than fp32 (docs/glue-slm.md). This rules out the kernel: on this CPU a loaded NF4 layer is
    F.linear with its dequantized weights, in the forward pass and in the gradient LoRA's inputs receive, so what
    4-bit training sees differently is NF4's rounding of the weights, not arithmetic of the backend."""
    if not _quantizes():
        pytest.skip("bitsandbytes cannot quantize on this platform (the error path is tested below)")
    from bitsandbytes.functional import dequantize_4bit

    from fedranklite.model.backbones import load_backbone

    plain = load_backbone("bundled:minilm-l6").model.encoder.layer[0].attention.self.query
    layer = load_backbone("bundled:minilm-l6", quantization="4bit").model.encoder.layer[0].attention.self.query
    weight = dequantize_4bit(layer.weight.data, layer.weight.quant_state).float()
    assert weight.shape == plain.weight.shape
    rounding = float((weight - plain.weight).norm() / plain.weight.norm())
    assert 0.01 < rounding < 0.2  # NF4 rounds the weights, by a few percent, not to garbage
    torch.manual_seed(0)
    x = torch.randn(4, 16, weight.shape[1], requires_grad=True)
    ref_x = x.detach().clone().requires_grad_(True)
    y, ref = layer(x), torch.nn.functional.linear(ref_x, weight, layer.bias)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    upstream = torch.randn_like(ref)
    (grad,) = torch.autograd.grad((y * upstream).sum(), x)
    (ref_grad,) = torch.autograd.grad((ref * upstream).sum(), ref_x)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-5)


def test_missing_bitsandbytes_is_a_clear_error(monkeypatch):
    from fedranklite.model.backbones import ModelError, load_backbone

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import fails as if not installed
    with pytest.raises(ModelError, match=r"model.quantization='4bit' needs bitsandbytes: pip install"):
        load_backbone("bundled:minilm-l6", quantization="4bit")


def test_platform_that_cannot_quantize_is_a_clear_error(monkeypatch):
    pytest.importorskip("bitsandbytes")
    import transformers

    from fedranklite.model.backbones import ModelError, load_backbone

    def refuse(*args, **kwargs):
        raise RuntimeError("no kernel for this device")

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", refuse)
    with pytest.raises(
        ModelError,
        match=r"model.quantization='8bit': bitsandbytes could not quantize.*"
        r"no kernel for this device.*Use model.quantization: none",
    ):
        load_backbone("bundled:minilm-l6", quantization="8bit")


def test_cli_reports_it_without_a_traceback(monkeypatch, tmp_path, capsys):
    from fedranklite.cli import main as cli

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    cfg = tmp_path / "q.yaml"
    from pathlib import Path

    base = Path(__file__).resolve().parents[1] / "configs" / "base.yaml"
    cfg.write_text(
        f"_base_: {base}\nmodel: {{quantization: 4bit}}\noutput_dir: {tmp_path}\n"
        "data: {embedded_train_size: 100, embedded_eval_size: 20}\n"
    )
    rc = cli.main(["run", "--config", str(cfg), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "needs bitsandbytes" in err and "Traceback" not in err
