"""run/pricing.py: which device a tier's compute is priced as, the measured conversion between a profile's device
and the tiers' reference device, the time model that uses it, and the warning for GPU tiers priced as a CPU."""

from __future__ import annotations

import json
import logging
import statistics

import pytest

from fedranklite.config.files import load_config
from fedranklite.run import pricing as pricing_module
from fedranklite.run.pricing import (
    ProfileTime,
    conversion_to,
    device_matches,
    pricing,
    pricing_lines,
)
from fedranklite.run.rank_profile import SHIPPED_DIR, LinearFit, RankProfile, fit_line, key_file_name, profile_key

ROOT = SHIPPED_DIR.parents[2]
BASE = ROOT / "configs" / "base.yaml"
CPU_SMOLLM = SHIPPED_DIR / "bundled-smollm2-135m_none_b8_l64_q_proj-v_proj_cpu.json"
GPU_SMOLLM = SHIPPED_DIR / "bundled-smollm2-135m_none_b8_l64_q_proj-v_proj_cuda.json"
CPU_MINILM = SHIPPED_DIR / "bundled-minilm-l6_none_b16_l64_query-value_cpu.json"

TEST_CPU = {"kind": "cpu", "name": "Test CPU", "threads": 2}
TEST_GPU = {"kind": "cuda", "name": "Test GPU 40GB"}


def make_profile(folder, key, device, a=0.01, b=0.001, ranks=(1, 2, 4, 8)) -> RankProfile:
    key = {**key, "device": device["kind"]}
    batch = key["batch_size"]
    steps = [batch * (a + b * r) for r in ranks]
    prof = RankProfile(
        key=key,
        ranks=list(ranks),
        sec_per_step=steps,
        sec_per_step_iqr=[1e-5] * len(ranks),
        peak_memory_mb=[None] * len(ranks),
        bytes_per_rank=512,
        bytes_fixed=128,
        time_fit=fit_line(ranks, [s / batch for s in steps]),
        memory_fit=None,
        noise_sec_per_sample=1e-6,
        device=device,
    )
    path = prof.save(folder / key_file_name(key))
    return RankProfile.load(path)


def test_device_names_match_by_words():
    h100 = {"kind": "cuda", "name": "NVIDIA H100 80GB HBM3"}
    assert device_matches("NVIDIA H100", h100) and device_matches("nvidia  h100", h100)
    assert not device_matches("NVIDIA H10", h100) and not device_matches("NVIDIA H200", h100)
    epyc = {"kind": "cpu", "name": "AMD EPYC", "threads": 2}
    assert device_matches("AMD EPYC (2 threads)", epyc) and not device_matches("AMD EPYC (1 thread)", epyc)
    assert not device_matches("", epyc)


def test_the_shipped_h100_profile_converts_the_shipped_cpu_profiles():
    """11.35 = the median SmolLM2-135M step on the 2-thread CPU / on the H100 (batch 8 x 64 tokens), from the files."""
    cpu, gpu = RankProfile.load(CPU_SMOLLM), RankProfile.load(GPU_SMOLLM)
    expected = statistics.median(cpu.sec_per_step) / statistics.median(gpu.sec_per_step)
    assert expected == pytest.approx(11.35, abs=0.01)
    same = conversion_to("NVIDIA H100", cpu)
    assert same.factor == pytest.approx(expected) and not same.assumed
    assert "1.78 s on AMD EPYC (2 threads) vs 0.157 s on NVIDIA H100 80GB HBM3" in same.source
    # MiniLM has no H100 profile: the SmolLM2 ratio is borrowed (same CPU, same threads) and marked as assumed
    borrowed = conversion_to("NVIDIA H100", RankProfile.load(CPU_MINILM))
    assert borrowed.factor == pytest.approx(expected) and borrowed.assumed
    assert "assumed to hold for bundled:minilm-l6" in borrowed.source
    # a profile measured on the reference device needs no conversion; another CPU has none
    assert conversion_to("NVIDIA H100", gpu).factor == 1.0
    one_thread = RankProfile.load(SHIPPED_DIR / "bundled-smollm2-135m_none_b8_l128_q_proj-v_proj_cpu.json")
    assert conversion_to("NVIDIA H100", one_thread) is None
    assert conversion_to(None, cpu) is None


def test_conversions_prefer_the_runs_own_setting(tmp_path):
    key_a = {"backbone": "a", "quantization": "none", "batch_size": 4, "max_length": 32, "target_modules": ["q"]}
    key_b = {**key_a, "backbone": "b"}
    make_profile(tmp_path, key_a, TEST_CPU, a=0.04)
    make_profile(tmp_path, key_a, TEST_GPU, a=0.01)  # 4x on backbone a (b is small next to a)
    make_profile(tmp_path, key_b, TEST_CPU, a=0.02)
    make_profile(tmp_path, key_b, TEST_GPU, a=0.01)  # 2x on backbone b
    run_b = make_profile(tmp_path / "other", key_b, TEST_CPU, a=0.03)
    got = conversion_to("Test GPU", run_b, tmp_path)
    own_ratio = (0.02 + 0.001 * 3) / (0.01 + 0.001 * 3)  # medians at ranks 1, 2, 4, 8: a + 3b
    assert got.factor == pytest.approx(own_ratio) and not got.assumed
    key_c = {**key_a, "backbone": "c"}
    run_c = make_profile(tmp_path / "other", key_c, TEST_CPU)
    assert conversion_to("Test GPU", run_c, tmp_path).assumed
    other_cpu = make_profile(tmp_path / "other", key_c, {**TEST_CPU, "threads": 8})
    assert conversion_to("Test GPU", other_cpu, tmp_path) is None  # 8 threads is another device


def test_base_yaml_prices_every_gpu_tier_by_a_stated_conversion_not_at_1x_this_cpu():
    cfg = load_config(BASE, ["device=cpu"])
    table = pricing(cfg)
    ratio = conversion_to("NVIDIA H100", RankProfile.load(CPU_MINILM)).factor
    for name, entry in table.items():
        tier = cfg.tiers[name]
        assert entry["device"] and entry["compute_source"] and entry["relative_to"] == "NVIDIA H100"
        assert entry["profile"] == f"profiles/{CPU_MINILM.name}" and entry["profile_device"] == "AMD EPYC (2 threads)"
        assert entry["conversion"] == pytest.approx(ratio) and entry["conversion_assumed"]
        assert entry["x_profile_device"] == pytest.approx(tier.compute_factor * ratio)
        assert "/work" not in str(entry)  # no machine paths in what metrics.json shows
    assert table["gpu_fast"]["device"] == "NVIDIA GeForce RTX 4090" and table["gpu_fast"]["x_profile_device"] > 10
    lines = pricing_lines(table)
    assert len(lines) == 3 and lines[0].startswith("gpu_fast: NVIDIA GeForce RTX 4090 = 1.2 x NVIDIA H100 = 13.6 x")
    # and the time model prices seconds on the H100: the profile's fit / the conversion
    model = ProfileTime.from_config(cfg.timing, cfg)
    fit = RankProfile.load(CPU_MINILM).time_fit
    assert model.sec_per_sample == pytest.approx(fit.intercept / ratio)
    assert model.sec_per_sample_per_rank == pytest.approx(max(fit.slope, 0.0) / ratio)


def _tiny_with_profile(tiny_config, tmp_path, tiers, **extra):
    cfg = tiny_config()
    path = tmp_path / "cpu.json"
    make_profile(tmp_path / "p", {k: v for k, v in profile_key(cfg).items() if k != "device"}, TEST_CPU, a=0.02)
    (tmp_path / "p" / key_file_name(profile_key(cfg))).rename(path)
    return tiny_config(timing={"mode": "profile", "profile": str(path)}, tiers=tiers, **extra)


def test_the_engine_prices_compute_on_the_reference_device(tiny_config, tmp_path, monkeypatch):
    from fedranklite.run.engine import build_engine

    shipped = tmp_path / "shipped"
    key = {k: v for k, v in profile_key(tiny_config()).items() if k != "device"}
    make_profile(shipped, key, TEST_CPU, a=0.02)
    make_profile(shipped, key, TEST_GPU, a=0.002, b=0.0001)  # the GPU: 10x the CPU at every rank
    monkeypatch.setattr(pricing_module, "SHIPPED_DIR", shipped)
    ref = {"compute_reference": "Test GPU"}
    cfg = _tiny_with_profile(tiny_config, tmp_path, {"fast": ref, "slow": {"device": "a slow GPU"}})
    engine = build_engine(cfg)
    assert engine.time_model.sec_per_sample == pytest.approx(0.002)
    engine.run()
    for rec in engine.state.records:
        for c in rec.clients:
            tier = cfg.tiers[c.tier]
            compute = c.samples * (0.02 + 0.001 * c.rank) / 10 / tier.compute_factor
            comm = (c.bytes_up + c.bytes_down) * 8 / (tier.bandwidth_mbps * 1e6)
            assert c.sim_seconds == pytest.approx(compute + comm)
    assert pricing(cfg)["slow"]["relative_to"] == "Test GPU"  # a tier without a reference takes the others'


def test_a_gpu_tier_priced_from_an_unconverted_cpu_profile_is_warned_about_once(tiny_config, tmp_path, caplog):
    gpu_tiers = {"gpu_fast": {"compute_factor": 1.0, "num_clients": 2, "memory_gb": 8, "device": "NVIDIA RTX 4090"}}
    cfg = _tiny_with_profile(tiny_config, tmp_path, {"fast": {}, "slow": {}} | gpu_tiers)
    pricing_module._warned.clear()
    with caplog.at_level(logging.WARNING, logger="fedranklite.run.pricing"):
        ProfileTime.from_config(cfg.timing, cfg)
        ProfileTime.from_config(cfg.timing, cfg)
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "gpu_fast" in warned[0] and "Test CPU (2 threads)" in warned[0]
    assert "compute_reference" in warned[0]
    assert pricing(cfg)["gpu_fast"]["conversion_source"].startswith("none: compute_factor is relative")
    # named tiers without a GPU word, priced the same way: nothing to warn about
    caplog.clear()
    pricing_module._warned.clear()
    plain = _tiny_with_profile(tiny_config, tmp_path, {"fast": {"device": "Raspberry Pi 5 CPU"}})
    with caplog.at_level(logging.WARNING, logger="fedranklite.run.pricing"):
        ProfileTime.from_config(plain.timing, plain)
    assert not caplog.records


def test_a_reference_without_a_measured_conversion_is_warned_about(tiny_config, tmp_path, caplog):
    cfg = _tiny_with_profile(tiny_config, tmp_path, {"fast": {"compute_reference": "Imaginary Accelerator 9000"}})
    pricing_module._warned.clear()
    with caplog.at_level(logging.WARNING, logger="fedranklite.run.pricing"):
        model = ProfileTime.from_config(cfg.timing, cfg)
    assert model.sec_per_sample == pytest.approx(0.02)  # unconverted, and said so
    assert len(caplog.records) == 1 and "Imaginary Accelerator 9000" in caplog.records[0].getMessage()
    entry = pricing(cfg)["slow"]
    assert entry["conversion"] is None and entry["conversion_source"].startswith("none: no shipped profile pair")


def test_tiers_with_different_references_are_refused_in_one_line(tiny_config):
    from fedranklite.config.schema import ConfigError

    with pytest.raises(ConfigError) as caught:
        tiny_config(tiers={"fast": {"compute_reference": "NVIDIA H100"}, "slow": {"compute_reference": "AMD EPYC"}})
    lines = [line for line in str(caught.value).splitlines() if "compute_reference" in line]
    assert len(lines) == 1 and "tiers.slow.compute_reference" in lines[0] and "tiers.fast" in lines[0]
    same = tiny_config(
        tiers={"fast": {"compute_reference": "NVIDIA H100"}, "slow": {"compute_reference": "nvidia h100"}}
    )
    assert same.tiers["slow"].compute_reference == "nvidia h100"


def test_a_profile_whose_fit_goes_negative_over_the_runs_ranks_stops_the_time_model(tiny_config, tmp_path):
    from fedranklite.run.rank_profile import ProfileError

    cfg = tiny_config()
    key = {k: v for k, v in profile_key(cfg).items() if k != "device"}
    prof = make_profile(tmp_path, key, TEST_CPU, a=0.01, b=-0.001, ranks=(1, 2, 4))  # t(8) = 0.002, t(16) < 0
    assert prof.time_fit == LinearFit(pytest.approx(0.01), pytest.approx(-0.001), pytest.approx(1.0))
    short = tiny_config(timing={"mode": "profile", "profile": prof.source})  # r_max 8: positive throughout
    assert ProfileTime.from_config(short.timing, short).sec_per_sample == pytest.approx(0.01)
    long = tiny_config(timing={"mode": "profile", "profile": prof.source}, model={"lora": {"r_max": 16}})
    with pytest.raises(ProfileError, match=r"within ranks 1..16 of this run"):
        ProfileTime.from_config(long.timing, long)


def test_a_surrogate_run_says_its_calibration_prices_compute_not_the_profile():
    cfg = load_config(ROOT / "configs" / "experiments" / "whatif_100k.yaml", ["device=cpu"])
    entry = pricing(cfg)["gpu_fast"]
    assert entry["timing"] == "surrogate" and "profile" not in entry
    assert entry["conversion_source"].startswith("none: the surrogate's calibration")
    (line,) = pricing_lines({"gpu_fast": entry})
    assert line.startswith("gpu_fast: NVIDIA GeForce RTX 4090 = 1.2 x NVIDIA H100 (surrogate timing: the surrogate's")


def test_a_refused_cached_profile_is_priced_as_measured_at_the_start_of_the_run(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setenv("FEDRANKLITE_CACHE", str(tmp_path / "cache"))
    cfg = tiny_config(timing={"mode": "profile"})
    cached = tmp_path / "cache" / "profiles" / key_file_name(profile_key(cfg))
    cached.parent.mkdir(parents=True)
    cached.write_text('{"ranks": [1]}')  # an older format: ensure_profile measures it again
    entry = pricing(cfg)["fast"]
    assert entry["profile"] == "measured at the start of the run" and entry["profile_device"] is None


def test_metrics_json_records_where_compute_prices_come_from(tiny_config):
    """The run summary carries the same per-tier pricing the run header prints."""
    from fedranklite.run.engine import build_engine
    from fedranklite.run.pricing import pricing

    cfg = tiny_config(federation={"num_rounds": 1})
    engine = build_engine(cfg)
    engine.run()
    recorded = json.loads((cfg.results_dir / "metrics.json").read_text())["pricing"]
    assert set(recorded) == set(cfg.tiers) and recorded == pricing(cfg)


def test_a_cpu_linked_only_to_another_cpu_converts_in_two_steps(tmp_path):
    """Profile device -> middle device (a device link of one setting) -> the reference (a pair of another setting):
    the factor is the product of the two ratios, the run's own setting is preferred for each step, and it is marked
    as assumed when a step borrows another setting."""
    key_x = {"backbone": "x", "quantization": "none", "batch_size": 4, "max_length": 32, "target_modules": ["q"]}
    key_y = {**key_x, "backbone": "y"}
    other_cpu = {**TEST_CPU, "name": "Other CPU"}
    (tmp_path / "devices").mkdir()
    make_profile(tmp_path, key_x, TEST_CPU, a=0.04)  # the middle device, setting x
    make_profile(tmp_path / "devices", key_x, other_cpu, a=0.02)  # the link: setting x on the other CPU (2x faster)
    make_profile(tmp_path, key_y, TEST_CPU, a=0.09)
    make_profile(tmp_path, key_y, TEST_GPU, a=0.01)  # the middle device -> GPU on setting y
    run = make_profile(tmp_path / "run", key_x, other_cpu, a=0.02)
    got = conversion_to("Test GPU", run, tmp_path)
    step1 = (0.02 + 0.003) / (0.04 + 0.003)  # medians at ranks 1, 2, 4, 8: a + 3b
    step2 = (0.09 + 0.003) / (0.01 + 0.003)
    assert got.factor == pytest.approx(step1 * step2) and got.assumed  # step 2 borrows setting y
    assert got.source.startswith("measured in two steps: x (none, batch 4 x 32 tokens)")
    assert "profiles/devices/" in got.source and "assumed to hold for x" in got.source
    # without the link there is no way from the other CPU to the GPU
    for path in (tmp_path / "devices").glob("*.json"):
        path.unlink()
    assert conversion_to("Test GPU", run, tmp_path) is None
    # a direct pair, where one exists, wins over two steps (here the link itself with a GPU profile of setting x)
    make_profile(tmp_path, key_x, TEST_GPU, a=0.005)
    make_profile(tmp_path / "devices", key_x, other_cpu, a=0.02)
    direct = conversion_to("Test GPU", run, tmp_path)
    assert direct.factor == pytest.approx((0.02 + 0.003) / (0.005 + 0.003)) and not direct.assumed
    assert direct.source.startswith("measured: x") and "profiles/devices/x_none_b4_l32_q_cpu.json" in direct.source


def test_the_shipped_intel_profiles_convert_to_the_h100_through_the_amd_cpu():
    """The 128-token and all-linear MiniLM profiles were measured on a 2-thread Intel Xeon; the shipped device link
    (MiniLM 16 x 64 on that Xeon) ties it to the 2-thread AMD EPYC, whose SmolLM2 pair ties that to the H100."""
    link = SHIPPED_DIR / "devices" / "bundled-minilm-l6_none_b16_l64_query-value_cpu_intel-xeon-2-threads.json"
    intel, amd = RankProfile.load(link), RankProfile.load(CPU_MINILM)
    cpu, gpu = RankProfile.load(CPU_SMOLLM), RankProfile.load(GPU_SMOLLM)
    median = lambda p: statistics.median(p.sec_per_step)  # noqa: E731
    expected = median(intel) / median(amd) * median(cpu) / median(gpu)
    for name in (
        "bundled-minilm-l6_none_b16_l128_query-value_cpu.json",
        "bundled-minilm-l6_none_b16_l64_intermediate.dense-key-output.dense-query-value_cpu.json",
    ):
        prof = RankProfile.load(SHIPPED_DIR / name)
        assert prof.device == intel.device and prof.device != amd.device
        got = conversion_to("NVIDIA H100", prof)
        assert got.factor == pytest.approx(expected) and got.assumed, name
        assert "two steps" in got.source
    assert expected == pytest.approx(6.12, abs=0.01)
