"""profile.py and timing.mode: profile: the rank sweep on the tiny model, its fits and file, the cache
used by the timing mode, and deterministic simulated time from a profile."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fedranklite.run.profiling import ensure_profile, run_profile
from fedranklite.run.rank_profile import LinearFit, ProfileError, RankProfile, fit_line, key_file_name, profile_key


def test_a_profile_measured_on_a_busy_machine_says_so(tiny_config, monkeypatch, caplog):
    import logging
    import os

    cfg = tiny_config()
    monkeypatch.setattr(os, "getloadavg", lambda: (0.5, 0.5, 0.5))
    with caplog.at_level(logging.WARNING, logger="fedranklite.run.profiling"):
        quiet = run_profile(cfg, ranks=(1,), warmup=0, repeats=1, passes=1)
    assert quiet.provenance["load_average"] == [0.5, 0.5] and "busy machine" not in caplog.text
    busy = (os.cpu_count() or 1) + 2.0
    monkeypatch.setattr(os, "getloadavg", lambda: (busy, busy, busy))
    with caplog.at_level(logging.WARNING, logger="fedranklite.run.profiling"):
        loaded = run_profile(cfg, ranks=(1,), warmup=0, repeats=1, passes=1)
    assert loaded.provenance["load_average"] == [busy, busy] and "busy machine" in caplog.text


def test_each_rank_is_measured_with_the_earlier_ranks_models_freed(tiny_config, monkeypatch):
    """A FedModel is a reference cycle (its gradient hooks and the adapter library's modules point back), so the
    model of the rank measured before lingers until a full garbage collection: on CUDA its weights then counted
    in the next rank's peak memory (the first CUDA profile read 2.7, 3.2, 3.8, 2.7 GB for ranks 1..8)."""
    import gc

    import fedranklite.run.profiling as profile_module
    from fedranklite.model.fedmodel import FedModel

    alive = []
    real_step = profile_module._train_step

    def counting_step(model, *args):
        alive.append(sum(isinstance(o, FedModel) for o in gc.get_objects()))
        return real_step(model, *args)

    monkeypatch.setattr(profile_module, "_train_step", counting_step)
    gc.collect()
    before = sum(isinstance(o, FedModel) for o in gc.get_objects())  # models other tests still hold
    run_profile(tiny_config(), ranks=(1, 2, 4), warmup=0, repeats=2, passes=2)
    assert alive and set(alive) == {before + 1}, (before, alive)


def test_fit_line_recovers_a_line_and_reports_r2():
    fit = fit_line([1, 2, 4, 8], [0.5 + 0.25 * r for r in (1, 2, 4, 8)])
    assert fit.intercept == pytest.approx(0.5) and fit.slope == pytest.approx(0.25) and fit.r2 == pytest.approx(1.0)
    noisy = fit_line([1, 2, 3, 4], [1.0, 3.0, 1.0, 3.0])  # no trend: slope 0.4, R^2 0.2 by hand
    assert noisy.slope == pytest.approx(0.4) and noisy.r2 == pytest.approx(0.2)
    assert fit_line([4, 4], [1.0, 3.0]) == LinearFit(2.0, 0.0, 1.0)  # one rank: the mean, no slope


def test_rank_sweep_on_the_tiny_model(tiny_config):
    cfg = tiny_config()
    prof = run_profile(cfg, ranks=(1, 2), warmup=0, repeats=2)
    assert prof.ranks == [1, 2, 8]  # r_max (8) is always measured
    assert len(prof.sec_per_step) == 3 and all(t > 0 for t in prof.sec_per_step)
    # exact bytes of one rank slice: per layer and adapted module, A (r x in) and B (out x r), fp32
    hidden, layers = 32, 2  # tiny:bert
    assert prof.bytes_per_rank == layers * 2 * (hidden + hidden) * 4
    assert prof.key == profile_key(cfg) and prof.key["batch_size"] == 8
    assert prof.provenance["torch"] and prof.provenance["threads"] >= 1
    # the fit is of the per-sample medians
    direct = fit_line(prof.ranks, [t / 8 for t in prof.sec_per_step])
    assert prof.time_fit.slope == pytest.approx(direct.slope) and prof.time_fit.intercept == pytest.approx(
        direct.intercept
    )


def _synthetic(path, key, a=0.01, b=0.001, device=None):
    prof = RankProfile(
        key=key,
        ranks=[1, 2, 4],
        sec_per_step=[8 * (a + b * r) for r in (1, 2, 4)],
        sec_per_step_iqr=[1e-4] * 3,
        peak_memory_mb=[100.0, 100.5, 101.5],
        bytes_per_rank=1024,
        bytes_fixed=264,
        time_fit=LinearFit(a, b, 1.0),
        memory_fit=LinearFit(99.5, 0.5, 1.0),
        noise_sec_per_sample=1e-5,
        provenance={"cpu": "test"},
        device=device or {"kind": key.get("device", "cpu"), "name": "Test CPU", "threads": 1},
    )
    return prof.save(path)


def test_profile_file_round_trip_and_clear_errors(tmp_path, tiny_config):
    path = _synthetic(tmp_path / "p.json", profile_key(tiny_config()))
    back = RankProfile.load(path)
    assert back.time_fit == LinearFit(0.01, 0.001, 1.0) and back.bytes_per_rank == 1024
    assert not back.slope_within_noise()  # 0.001 x 3 ranks is 300x the noise
    with pytest.raises(ProfileError, match="profile not found"):
        RankProfile.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ProfileError, match="not a rank profile"):
        RankProfile.load(tmp_path / "bad.json")


def test_ensure_profile_measures_once_then_reads_the_cache(tmp_path, tiny_config, monkeypatch):
    monkeypatch.setenv("FEDRANKLITE_CACHE", str(tmp_path / "cache"))
    cfg = tiny_config(model={"lora": {"r_max": 2}}, federation={"scheduler": {"r_bar": 2}})
    said = []
    first = ensure_profile(cfg, announce=said.append)
    assert len(said) == 1 and "measuring one now" in said[0]
    cached = tmp_path / "cache" / "profiles" / key_file_name(profile_key(cfg))
    assert cached.is_file()
    again = ensure_profile(cfg, announce=said.append)
    assert len(said) == 1 and again.time_fit == first.time_fit  # read back, not measured again
    named = _synthetic(tmp_path / "mine.json", profile_key(cfg), a=0.5)
    chosen = ensure_profile(tiny_config(timing={"mode": "profile", "profile": str(named)}))
    assert chosen.time_fit.intercept == 0.5


def test_profile_timing_is_deterministic_and_priced_by_the_profile(tmp_path, tiny_config):
    from fedranklite.run.engine import build_engine

    path = _synthetic(tmp_path / "p.json", profile_key(tiny_config()), a=0.02, b=0.004)
    runs = []
    for name in ("a", "b"):
        cfg = tiny_config(
            experiment_name=name,
            timing={"mode": "profile", "profile": str(path)},
            deadline={"seconds": 1.6, "straggler_policy": "use_partial"},
        )
        engine = build_engine(cfg)
        engine.run()
        runs.append(engine)
    for rec in runs[0].state.records:
        for c in rec.clients:
            tier = runs[0].cfg.tiers[c.tier]
            compute = c.samples * (0.02 + 0.004 * c.rank) / tier.compute_factor
            comm = (c.bytes_up + c.bytes_down) * 8 / (tier.bandwidth_mbps * 1e6)
            assert c.sim_seconds == pytest.approx(compute + comm)
    assert [r.ranks for r in runs[0].state.records] == [r.ranks for r in runs[1].state.records]
    assert [[c.sim_seconds for c in r.clients] for r in runs[0].state.records] == [
        [c.sim_seconds for c in r.clients] for r in runs[1].state.records
    ]
    assert any(c.status == "partial" for r in runs[0].state.records for c in r.clients)  # the deadline bit


def test_profile_command_rejects_bad_ranks_in_one_line(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedranklite",
            "profile",
            "--config",
            "configs/experiments/lite_iid.yaml",
            "--ranks",
            "0,4",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "--ranks" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_profile_time_does_not_depend_on_machine_load(tmp_path, tiny_config, monkeypatch):
    """Two runs with the same seed in the default timing mode, the second while a CPU-bound process runs
    beside it: the same simulated times and ranks (measured mode would not give that)."""
    from fedranklite.run.engine import build_engine

    monkeypatch.setenv("FEDRANKLITE_CACHE", str(tmp_path / "cache"))
    hetero = {"speed_sigma": 0.3, "jitter_sigma": 0.2, "availability": 0.8}
    runs = []
    for name, busy in (("quiet", False), ("busy", True)):
        cfg = tiny_config(
            experiment_name=name,
            timing={"mode": "profile"},
            tiers={"fast": hetero, "slow": hetero},
            federation={"num_rounds": 3},
        )
        burner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
        try:
            engine = build_engine(cfg)
            engine.run()
        finally:
            if burner is not None:
                burner.kill()
                burner.wait()
        runs.append([(r.ranks, [c.sim_seconds for c in r.clients], r.sim_time) for r in engine.state.records])
    assert runs[0] == runs[1]


def test_a_file_that_is_not_a_profile_is_one_line_at_run_time(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"ranks": [1]}')
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedranklite",
            "run",
            "--config",
            "configs/experiments/lite_iid.yaml",
            "--quiet",
            "--set",
            "timing.profile=" + str(bad),
            "--set",
            f"output_dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "not a rank profile" in proc.stderr and "Traceback" not in proc.stderr
    assert str(bad) in proc.stderr and not (tmp_path / "lite_iid").exists()


@pytest.mark.parametrize(
    "config",
    sorted((Path(__file__).resolve().parents[1] / "configs" / "experiments" / "glue" / "smollm2").glob("*.yaml")),
    ids=lambda p: p.stem,
)
def test_every_smollm2_glue_config_finds_a_shipped_profile(config, tmp_path, monkeypatch):
    """On a fresh install (empty cache) each SmolLM2 GLUE config must find the rank profile its recorded runs used:
    one measured now, under whatever load, would move the simulated deadline and so which steps it cuts."""
    from fedranklite.config.files import load_config
    from fedranklite.run.rank_profile import CACHE_ENV, SHIPPED_DIR, find_profile, profile_key

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    found = find_profile(profile_key(load_config(config, ["device=cpu"])))
    assert found is not None and found.parent == SHIPPED_DIR


# ---------------------------------------------------------------- a profile is checked by meaning when it loads
def _valid_json(tmp_path, tiny_config) -> dict:
    import json

    return json.loads(_synthetic(tmp_path / "valid.json", profile_key(tiny_config())).read_text())


def _spoil(data: dict, dotted: str, value) -> dict:
    import copy

    data = copy.deepcopy(data)
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        node = node[part]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return data


_DELETE = object()


@pytest.mark.parametrize(
    "dotted, value, says",
    [
        ("time_fit.slope", float("nan"), "time_fit: expected finite numbers"),
        ("time_fit.intercept", float("inf"), "time_fit: expected finite numbers"),
        ("sec_per_step", [-0.08, 0.1, 0.12], "sec_per_step: expected finite positive seconds"),
        ("sec_per_step", [0.088, 0.096], "sec_per_step: expected one number per rank (3)"),
        ("sec_per_step_iqr", [1e-4, -1.0, 1e-4], "sec_per_step_iqr: expected finite non-negative"),
        ("peak_memory_mb", [100.0, float("nan"), 101.0], "peak_memory_mb: expected finite positive"),
        ("bytes_per_rank", 0, "bytes_per_rank: expected a positive integer"),
        ("bytes_per_rank", 10.5, "bytes_per_rank: expected a positive integer"),
        ("bytes_fixed", -1, "bytes_fixed: expected a non-negative integer"),
        ("noise_sec_per_sample", -1e-5, "noise_sec_per_sample"),
        ("ranks", [1, 4, 2], "ranks: expected increasing integers"),
        ("ranks", [0, 2, 4], "ranks: expected increasing integers"),
        ("ranks", [], "ranks: expected a list of 1 to 1000 ranks"),
        ("ranks", [True, 2, 4], "ranks: expected increasing integers"),
        ("key.batch_size", 0, "key.batch_size: expected a positive integer"),
        ("key.backbone", None, "key.backbone"),
        ("key.target_modules", [], "key.target_modules"),
        ("device", _DELETE, "missing field(s) ['device']"),
        ("time_fit", _DELETE, "missing field(s) ['time_fit']"),
        ("device.kind", "tpu", "device.kind: expected one of"),
        ("device.name", "", "device.name"),
        ("device.threads", 0, "device.threads"),
        ("device.kind", "cuda", "key.device 'cpu' differs from device.kind 'cuda'"),
        ("schema_version", _DELETE, "no schema_version"),
        ("schema_version", 1, "schema_version 1; this version reads 2"),
        ("schema_version", True, "schema_version True"),
        ("extra_field", 1, "unknown field(s) ['extra_field']"),
        ("memory_fit", {"intercept": 1.0}, "memory_fit: expected intercept, slope and r2"),
    ],
)
def test_a_profile_that_does_not_mean_a_cost_is_refused_in_one_line(tmp_path, tiny_config, dotted, value, says):
    import json

    path = tmp_path / "spoiled.json"
    path.write_text(json.dumps(_spoil(_valid_json(tmp_path, tiny_config), dotted, value)))
    with pytest.raises(ProfileError) as caught:
        RankProfile.load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: not a rank profile (") and says in message and "\n" not in message


def test_a_fit_that_is_not_the_sweeps_or_goes_negative_is_refused(tmp_path, tiny_config):
    import json

    data = _valid_json(tmp_path, tiny_config)  # a = 0.01, b = 0.001 over ranks 1, 2, 4
    edited = _spoil(data, "time_fit.slope", 0.002)  # no longer the line through its sweep
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(edited))
    with pytest.raises(ProfileError, match="the sweep's own fit"):
        RankProfile.load(path)
    # a sweep whose fit crosses zero within its own ranks: t(4) = 0.01 - 0.004 * 4 < 0 s per sample
    falling = _spoil(data, "sec_per_step", [8 * (0.01 - 0.004 * r) for r in (1, 2, 4)])
    path.write_text(json.dumps(falling))
    with pytest.raises(ProfileError, match="sec_per_step: expected finite positive"):
        RankProfile.load(path)
    # a fit positive over its sweep (ranks 1..4) but not over a run's ranks (to r_max 64)
    down = [8 * (0.01 - 0.0001 * r) for r in (1, 2, 4)]
    steep = _spoil(_spoil(data, "sec_per_step", down), "time_fit", fit_line([1, 2, 4], [t / 8 for t in down]).__dict__)
    path.write_text(json.dumps(steep))
    prof = RankProfile.load(path)
    prof.check_ranks(1, 16)
    with pytest.raises(ProfileError, match=r"predicts -?[0-9.e-]+ s per sample within ranks 1..128"):
        prof.check_ranks(1, 128)


@pytest.mark.parametrize(
    "content, says",
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe\x00garbage", "not JSON"),
        (b"", "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
        (b"null", "expected a JSON object, got NoneType"),
        (b'"a string"', "expected a JSON object, got str"),
    ],
    ids=["broken", "binary", "empty", "deeply-nested", "null", "string"],
)
def test_garbage_is_refused_in_one_line(tmp_path, content, says):
    path = tmp_path / "garbage.json"
    path.write_bytes(content)
    with pytest.raises(ProfileError) as caught:
        RankProfile.load(path)
    assert str(caught.value).startswith(f"{path}: not a rank profile") and says in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_huge_file_is_refused_before_it_is_read(tmp_path, monkeypatch):
    path = tmp_path / "huge.json"
    with path.open("wb") as fh:  # sparse: 2 GB on paper, nothing on disk
        fh.truncate(2 << 30)
    read = []
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: read.append(self) or "")
    with pytest.raises(ProfileError, match=r"2,147,483,648 bytes; a profile is at most 1,048,576"):
        RankProfile.load(path)
    assert not read


def test_a_refused_cached_profile_is_measured_again_but_a_named_one_stops_the_run(tmp_path, tiny_config, monkeypatch):
    import json

    monkeypatch.setenv("FEDRANKLITE_CACHE", str(tmp_path / "cache"))
    cfg = tiny_config(model={"lora": {"r_max": 2}}, federation={"scheduler": {"r_bar": 2}})
    cached = tmp_path / "cache" / "profiles" / key_file_name(profile_key(cfg))
    cached.parent.mkdir(parents=True)
    old = _spoil(_valid_json(tmp_path, tiny_config), "schema_version", _DELETE)
    cached.write_text(json.dumps(old))  # a profile of an older version: no schema_version, no device
    said = []
    fresh = ensure_profile(cfg, announce=said.append)
    assert len(said) == 1 and "no schema_version" in said[0] and "measuring it again" in said[0]
    assert RankProfile.load(cached).time_fit == fresh.time_fit and fresh.source == str(cached)
    named = tmp_path / "named.json"
    named.write_text(json.dumps(old))
    with pytest.raises(ProfileError, match="no schema_version"):
        ensure_profile(tiny_config(timing={"mode": "profile", "profile": str(named)}))


def test_a_measured_profile_names_its_device_and_can_be_dropped_in(tmp_path, tiny_config, monkeypatch):
    """What `fedranklite profile` writes on any machine (here the CPU path) is the format the loader checks, names
    the device it ran on, and is found by key when saved under its key's file name."""
    import json

    import torch

    from fedranklite.run.rank_profile import SCHEMA_VERSION, find_profile

    cfg = tiny_config()
    prof = run_profile(cfg, ranks=(1, 2), warmup=0, repeats=2, passes=1)
    assert prof.schema_version == SCHEMA_VERSION == 2
    assert prof.device == {"kind": "cpu", "name": prof.provenance["cpu"], "threads": torch.get_num_threads()}
    assert prof.key["device"] == prof.device["kind"]
    folder = tmp_path / "cache" / "profiles"
    saved = prof.save(folder / key_file_name(prof.key))
    on_disk = json.loads(saved.read_text())
    assert list(on_disk)[:2] == ["schema_version", "device"] and "source" not in on_disk
    monkeypatch.setenv("FEDRANKLITE_CACHE", str(tmp_path / "cache"))
    assert find_profile(profile_key(cfg)) == saved
    back = RankProfile.load(saved)
    assert back == prof and back.device_label.endswith("thread)" if prof.device["threads"] == 1 else "threads)")


def test_every_shipped_profile_passes_the_checks_and_names_its_device():
    from fedranklite.run.rank_profile import SHIPPED_DIR

    shipped = sorted(SHIPPED_DIR.glob("*.json"))
    assert len(shipped) >= 4
    for path in shipped:
        prof = RankProfile.load(path)  # raises on anything the checks refuse
        assert path.name == key_file_name(prof.key), path.name  # found by key
        assert prof.device["kind"] == prof.key["device"]
    gpu = RankProfile.load(SHIPPED_DIR / "bundled-smollm2-135m_none_b8_l64_q_proj-v_proj_cuda.json")
    assert gpu.device == {"kind": "cuda", "name": "NVIDIA H100 80GB HBM3"} and len(gpu.ranks) == 6
