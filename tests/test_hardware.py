"""hardware.py: per-client deviation, jitter and availability are seeded, follow the tier figures, can come
from a trace file, and reach the schedulers only through telemetry."""

from __future__ import annotations

import re

import numpy as np
import pytest

from fedranklite.federation.hardware import (
    Telemetry,
    TraceError,
    draw_hardware,
    read_trace,
    round_conditions,
    tier_arrays,
)


def tiers(tiny_config, **extra):
    fast = {"compute_factor": 1.0, "num_clients": 200, "memory_gb": 8, "bandwidth_mbps": 100, **extra}
    slow = {"compute_factor": 0.25, "num_clients": 200, "memory_gb": 8, "uplink_mbps": 5, "downlink_mbps": 20, **extra}
    return tiny_config(tiers={"fast": fast, "slow": slow})


def test_no_deviation_means_clients_are_their_tier(tiny_config):
    cfg = tiers(tiny_config)
    hw = draw_hardware(cfg, cfg.client_tiers())
    assert hw.compute_factor.tolist() == [1.0] * 200 + [0.25] * 200
    assert hw.uplink_mbps.tolist() == [100.0] * 200 + [5.0] * 200
    assert hw.downlink_mbps.tolist() == [100.0] * 200 + [20.0] * 200
    jitter, answers = round_conditions(hw, cfg.seed, 1, np.arange(400))
    assert np.all(jitter == 1.0) and answers.all()


def test_deviation_is_seeded_lognormal_around_the_tier(tiny_config):
    cfg = tiers(tiny_config, speed_sigma=0.5, bandwidth_sigma=0.3)
    a = draw_hardware(cfg, cfg.client_tiers())
    b = draw_hardware(cfg, cfg.client_tiers())
    assert np.array_equal(a.compute_factor, b.compute_factor)  # same seed, same clients
    other = tiers(tiny_config, speed_sigma=0.5, bandwidth_sigma=0.3).model_copy(update={"seed": 1})
    assert not np.array_equal(a.compute_factor, draw_hardware(other, other.client_tiers()).compute_factor)
    log_dev = np.log(a.compute_factor[:200] / 1.0)
    assert abs(np.median(log_dev)) < 0.12 and 0.4 < log_dev.std() < 0.6  # median 1, sigma 0.5 (200 draws)
    band = np.log(a.uplink_mbps[200:] / 5.0)
    assert np.allclose(band, np.log(a.downlink_mbps[200:] / 20.0))  # one deviation for both directions
    assert 0.2 < band.std() < 0.4


def test_round_conditions_are_seeded_per_round_and_follow_availability(tiny_config):
    cfg = tiers(tiny_config, jitter_sigma=0.2, availability=0.7)
    hw = draw_hardware(cfg, cfg.client_tiers())
    everyone = np.arange(400)
    j1, a1 = round_conditions(hw, cfg.seed, 1, everyone)
    j1b, a1b = round_conditions(hw, cfg.seed, 1, everyone)
    j2, a2 = round_conditions(hw, cfg.seed, 2, everyone)
    assert np.array_equal(j1, j1b) and np.array_equal(a1, a1b) and not np.array_equal(j1, j2)
    assert 0.6 < a1.mean() < 0.8 and 0.15 < np.log(j1).std() < 0.25
    # a client's draw does not depend on who else was selected
    some = np.array([3, 250, 17])
    js, as_ = round_conditions(hw, cfg.seed, 1, some)
    assert np.array_equal(js, j1[some]) and np.array_equal(as_, a1[some])


def test_trace_file_overrides_the_drawn_values(tmp_path, tiny_config):
    cfg = tiny_config()  # 4 clients: fast 0-1, slow 2-3
    path = tmp_path / "trace.csv"
    path.write_text(
        "cid,compute_factor,uplink_mbps,downlink_mbps,availability\n0,0.5,1,2,0.9\n1,,,,\n2,,,,\n3,,,,0.5\n"
    )
    trace = read_trace(path, cfg.num_clients)
    hw = draw_hardware(cfg, cfg.client_tiers(), trace)
    assert hw.compute_factor.tolist() == [0.5, 1.0, 0.25, 0.25]
    assert hw.uplink_mbps.tolist() == [1.0, 100.0, 10.0, 10.0] and hw.downlink_mbps[0] == 2.0
    assert hw.availability.tolist() == [0.9, 1.0, 1.0, 0.5]
    jsonl = tmp_path / "trace.jsonl"
    jsonl.write_text('{"cid": 1, "compute_factor": 2.0}\n' + "".join(f'{{"cid": {c}}}\n' for c in (0, 2, 3)))
    assert read_trace(jsonl, 4)["compute_factor"].tolist()[1] == 2.0


@pytest.mark.parametrize(
    "body, message",
    [
        ("cid,compute_factor\n9,1.0\n", "cid 9 is not a client"),
        ("cid,compute_factor\n0,1.0\n0,2.0\n", "appears twice"),
        ("cid,compute_factor\n0,-1\n", "compute_factor must be a positive"),
        ("cid,availability\n0,1.5\n", "availability must be in"),
        ("cid,speed\n0,1\n", "unknown column"),
        ("cid,compute_factor\nx,1\n", "integer cid"),
        ("cid,compute_factor\n0,fast\n", "not a number"),
        ("cid,compute_factor\n", "no client rows"),
        ("cid,compute_factor\n0,1\n1,1\n", r"no row for client\(s\) 2, 3; a trace lists every client"),
        ("cid,compute_factor\n0,1\n1,1\n2,1\n3,1\n4,1\n", "line 6: cid 4 is not a client of this run"),
        ("cid,compute_factor\n0,1\n1,nan\n", "line 3: compute_factor must be a positive finite number, got 'nan'"),
        ("cid,uplink_mbps\n0,inf\n", "uplink_mbps must be a positive finite number"),
        ("cid,availability\n0,0\n", r"availability must be in \(0, 1\]"),
        ("cid,compute_factor\n0,1,7\n", "line 2: 3 fields, the header names 2"),
        ("cid,cid\n0,1\n", "line 1: a column name appears twice"),
        ("cid,compute_factor\n1.0,1\n", "line 2: needs an integer cid, got '1.0'"),
        ("cid,compute_factor\n0,1\n0,2\n", r"line 3: cid 0 appears twice \(first on line 2\)"),
        ("cid,compute_factor\n0,1\n\n\n1,\x00\n", "line 5: binary data"),
        ('cid,compute_factor\n"0,1\n', "line 2: 1 fields, the header names 2"),  # an unclosed quote: one field
    ],
)
def test_bad_trace_files_are_one_clear_line(tmp_path, body, message):
    path = tmp_path / "t.csv"
    path.write_text(body)
    with pytest.raises(TraceError, match=message) as info:
        read_trace(path, 4)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_telemetry_falls_back_to_the_prior_and_blends_reports(tiny_config):
    cfg = tiny_config()
    prior = tier_arrays(cfg, cfg.client_tiers())
    tel = Telemetry(weight=0.5)
    est = tel.estimate(np.array([0, 2]), prior)
    assert est["compute_factor"].tolist() == [1.0, 0.25]  # nothing observed: the tier prior
    tel.observe(np.array([2]), np.array([0.1]), np.array([np.nan]), np.array([8.0]))
    est = tel.estimate(np.array([0, 2]), prior)
    assert est["compute_factor"].tolist() == [1.0, 0.1] and est["downlink_mbps"].tolist() == [100.0, 8.0]
    assert est["uplink_mbps"].tolist() == [100.0, 10.0]  # not observed: still the prior
    tel.observe(np.array([2]), np.array([0.3]), np.array([np.nan]), np.array([np.nan]))
    assert tel.estimate(np.array([2]), prior)["compute_factor"].tolist() == [pytest.approx(0.2)]  # EMA 0.5
    fresh = Telemetry()
    fresh.load_state_dict(tel.state_dict())
    assert fresh.estimate(np.array([2]), prior)["compute_factor"].tolist() == [pytest.approx(0.2)]


def _recording(engine):
    """Wrap the engine's scheduler so each round's Clients (what the scheduler saw) is kept."""
    seen = []
    assign = engine.scheduler.assign

    def spy(clients):
        seen.append(clients)
        return assign(clients)

    engine.scheduler.assign = spy
    return seen


def test_hidden_hardware_reaches_the_scheduler_only_through_telemetry(tiny_config):
    from fedranklite.run.engine import build_engine

    views = {}
    for sigma in (0.0, 0.8):
        cfg = tiny_config(
            experiment_name=f"s{sigma}",
            federation={"num_rounds": 3, "clients_per_round": 3},
            tiers={
                "fast": {
                    "compute_factor": 1.0,
                    "num_clients": 2,
                    "memory_gb": 8,
                    "bandwidth_mbps": 100,
                    "speed_sigma": sigma,
                },
                "slow": {
                    "compute_factor": 0.25,
                    "num_clients": 2,
                    "memory_gb": 8,
                    "bandwidth_mbps": 10,
                    "speed_sigma": sigma,
                },
            },
        )
        engine = build_engine(cfg)
        views[sigma] = (engine, _recording(engine))
        engine.run()
    (_, plain_seen), (hidden, hidden_seen) = views[0.0], views[0.8]
    # round 1: nobody has reported, so the scheduler sees the tier prior whatever the hidden deviation
    a, b = plain_seen[0], hidden_seen[0]
    assert np.array_equal(a.compute_factor, b.compute_factor) and np.array_equal(a.time_intercept, b.time_intercept)
    # ... while the clients really ran at their own speeds
    hw = hidden.fed.hardware
    assert not np.allclose(hw.compute_factor, [1.0, 1.0, 0.25, 0.25])
    for c in hidden.state.records[0].clients:
        tier = hidden.cfg.tiers[c.tier]
        compute = c.samples * (0.05 + 0.01 * c.rank) / hw.compute_factor[c.cid]
        comm = (c.bytes_up + c.bytes_down) * 8 / (tier.bandwidth_mbps * 1e6)
        assert c.sim_seconds == pytest.approx(compute + comm)
    # later rounds: a client seen before is described by its telemetry (its own speed), in both runs alike
    first = {int(c) for c in hidden.state.records[0].clients.cid}
    later = hidden_seen[1]
    for k, cid in enumerate(later.cid):
        if cid in first:
            assert later.compute_factor[k] == pytest.approx(hw.compute_factor[cid])
        else:
            assert later.compute_factor[k] == hidden.prior["compute_factor"][cid]


def test_unavailable_clients_are_lost_for_the_round_seeded(tiny_config):
    from fedranklite.run.engine import build_engine

    runs = []
    for name in ("a", "b"):
        cfg = tiny_config(
            experiment_name=name,
            federation={"num_rounds": 4, "clients_per_round": 3},
            deadline={"seconds": 30.0, "straggler_policy": "drop"},
            tiers={
                "fast": {"compute_factor": 1.0, "num_clients": 2, "memory_gb": 8, "availability": 0.5},
                "slow": {"compute_factor": 0.25, "num_clients": 2, "memory_gb": 8, "availability": 0.5},
            },
        )
        engine = build_engine(cfg)
        engine.run()
        runs.append([[(c.cid, c.status, c.lost) for c in r.clients] for r in engine.state.records])
    assert runs[0] == runs[1]
    lost = [(cid, why) for rnd in runs[0] for cid, status, why in rnd if status == "lost"]
    assert lost and all(why == "unavailable this round" for _, why in lost)
    rec = next(r for r in engine.state.records if any(c.status == "lost" for c in r.clients))
    gone = [c for c in rec.clients if c.status == "lost"]
    assert all(c.straggler and c.steps == 0 and c.bytes_up == 0 for c in gone)
    assert not rec.compliant and rec.round_sim_seconds == pytest.approx(30.0)  # waited for them until the deadline


@pytest.mark.parametrize(
    "body, message",
    [
        ('{"cid": 0}\n{"cid": 1.5}\n', "line 2: needs an integer cid, got 1.5"),
        ('{"cid": true}\n', "line 1: needs an integer cid, got True"),
        ('{"cid": 0, "compute_factor": true}\n', "line 1: compute_factor True is not a number"),
        ('{"cid": 0, "compute_factor": {"a": 1}}\n', "compute_factor {'a': 1} is not a number"),
        ('{"cid": 0}\n\n[1]\n', "line 3: expected an object"),
        ('{"cid": 0}\n{"cid": 1\n', "line 2: not JSON"),
        ('{"cid": 0, "speed": 1}\n', r"line 1: unknown column\(s\) \['speed'\]"),
        ('{"cid": 0}\n{"cid": 1, "availability": 1e999}\n', "line 2: availability must be in"),
    ],
)
def test_bad_json_lines_traces_name_the_line(tmp_path, body, message):
    path = tmp_path / "t.jsonl"
    path.write_text(body)
    with pytest.raises(TraceError, match=message) as info:
        read_trace(path, 4)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_garbage_and_huge_traces_are_one_line_naming_the_file(tmp_path):
    import random

    garbage = tmp_path / "garbage.csv"
    garbage.write_bytes(random.Random(1).randbytes(200_000))
    with pytest.raises(TraceError, match=rf"^{re.escape(str(garbage))}: line \d+: (binary data|not UTF-8)"):
        read_trace(garbage, 4)
    text = tmp_path / "text.csv"
    text.write_text("".join(f"{random.Random(i).random()},x,{i}\n" for i in range(2000)))  # no cid header
    with pytest.raises(TraceError, match=rf"^{re.escape(str(text))}: line 2: unknown column"):
        read_trace(text, 4)
    huge = tmp_path / "huge.jsonl"
    with open(huge, "wb") as fh:
        fh.truncate(50 * 2**20)  # 50 MB: refused by its size, never read
    with pytest.raises(TraceError, match=r"huge.jsonl: 52,428,800 bytes; a client trace is at most 16 MiB"):
        read_trace(huge, 4)


def test_a_broken_trace_is_a_config_error(tmp_path, tiny_config):
    from fedranklite.config.schema import ConfigError

    path = tmp_path / "t.csv"
    path.write_text("cid,compute_factor\n7,1\n")
    with pytest.raises(ConfigError, match=r"federation\.client_trace: .*cid 7 is not a client"):
        tiny_config(federation={"client_trace": str(path)})
