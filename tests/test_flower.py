"""The Flower backend: wire format, equivalence with the local engine (simulation), CLI, deployment on
127.0.0.1 (SuperLink + 3 SuperNodes with their resident ClientApp workers) and a SuperNode killed mid-round."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

pytest.importorskip("flwr")
pytest.importorskip("ray")

from conftest import tiny_tree  # noqa: E402

from fedranklite.backends.flower.task import arrays_to_state, state_to_arrays, task_from_record, task_record, wire_bytes  # noqa: E402
from fedranklite.config.files import validate  # noqa: E402
from fedranklite.core.results_io import RoundLog  # noqa: E402
from fedranklite.federation.ranks import num_bytes, truncate  # noqa: E402
from fedranklite.run.checkpoint import CHECKPOINT_NAME, load_checkpoint  # noqa: E402
from fedranklite.run.engine import build_engine  # noqa: E402
from fedranklite.run.runners import ClientTask, DeadlineGate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_tensors_and_tasks_cross_the_wire_unchanged():
    state = {"x.lora_A.weight": torch.randn(8, 5), "x.lora_B.weight": torch.randn(7, 8), "head.bias": torch.randn(2)}
    for rank in (1, 3, 8):
        down = truncate(state, rank)  # B narrowed on dim 1: a non-contiguous slice
        rec = state_to_arrays(down)
        assert wire_bytes(rec) == num_bytes(down)  # raw payload: exactly the local engine's byte count
        back = arrays_to_state(rec)
        assert all(torch.equal(back[k], down[k]) for k in down)
    assert len(state_to_arrays(state)) == 2  # one payload array + its layout, whatever the tensor count
    task = ClientTask(3, 5, 4_000_000_000, DeadlineGate(90.0, 1.5, 0.25, "analytic", 0.7))
    assert task_from_record(task_record(task, 2, "{}")) == (task, 2)
    assert task_from_record(task_record(ClientTask(0, 1, 7), 1, "{}"))[0] == ClientTask(0, 1, 7)


def test_a_packed_record_that_does_not_add_up_is_refused():
    from flwr.app import Array, ArrayRecord

    from fedranklite.backends.flower.task import LAYOUT, PAYLOAD

    rec = state_to_arrays({"a": torch.randn(3, 2), "b": torch.randn(4)})
    payload = bytes(rec[PAYLOAD].data)
    for data, expect in ((payload[:-4], "ends before"), (payload + b"\0" * 4, "no tensor claims")):
        bad = ArrayRecord({LAYOUT: rec[LAYOUT], PAYLOAD: Array("uint8", (len(data),), "raw", data)}, keep_input=True)
        with pytest.raises(ValueError, match=expect):
            arrays_to_state(bad)
    with pytest.raises(ValueError, match="packed record"):
        arrays_to_state(ArrayRecord({"a": rec[PAYLOAD]}, keep_input=True))


def equivalence_tree(tmp_path, **kw):
    # 4 clients every round, 3 rounds, analytic time with a deadline the slow tier misses (use_partial:
    # the deadline gate travels to the ClientApp and stops it early, exactly as in the local engine)
    return tiny_tree(
        tmp_path,
        federation={"num_rounds": 3, "clients_per_round": 4},
        deadline={"seconds": 4.0, "straggler_policy": "use_partial"},
        **kw,
    )


def test_simulation_matches_local_engine(tmp_path):
    from fedranklite.backends.flower.launch import simulate

    local = build_engine(validate(equivalence_tree(tmp_path, experiment_name="local")))
    local.run()
    flower, summary = simulate(
        validate(equivalence_tree(tmp_path, experiment_name="flower", engine={"backend": "flower"}))
    )
    assert summary.rounds_completed == 3
    assert [r.ranks for r in flower.state.records] == [r.ranks for r in local.state.records]
    diff = max(float((flower.state.global_state[k] - t).abs().max()) for k, t in local.state.global_state.items())
    assert diff <= 1e-6, diff
    for a, b in zip(local.state.records, flower.state.records):
        assert [c.status for c in a.clients.rows()] == [c.status for c in b.clients.rows()]
        assert [c.steps for c in a.clients.rows()] == [c.steps for c in b.clients.rows()]
        assert [(c.bytes_down, c.bytes_up) for c in a.clients.rows()] == [
            (c.bytes_down, c.bytes_up) for c in b.clients.rows()
        ]
        assert a.round_sim_seconds == pytest.approx(b.round_sim_seconds)
    assert any(c.status == "partial" for r in flower.state.records for c in r.clients.rows())
    # the ClientApp model stays resident: every worker process built it once, whatever it trained
    assert flower.runner.worker_builds and set(flower.runner.worker_builds.values()) == {1}
    timings = flower.runner.client_timings
    assert len(timings) == sum(len(r.clients) for r in flower.state.records)
    assert sum(t["built"] for t in timings) == len(flower.runner.worker_builds)
    assert all(t["train"] > 0 and t["roundtrip"] >= t["train"] for t in timings)


def test_clientapp_module_imports_no_model_stack():
    # a SuperNode with `--isolation subprocess` starts one ClientApp process per message, partition queries
    # included: loading the app must not import torch / transformers (the train handler imports them)
    code = (
        "import sys; import fedranklite.backends.flower.client_app; "
        "print(sorted(m for m in ('torch', 'transformers', 'peft', 'fedranklite.run.engine') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "fedranklite", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_cli_flower_backend_writes_the_same_files(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_tree(tmp_path)))
    runs = {}
    for backend in ("local", "flower"):
        proc = cli(
            "run",
            "--config",
            str(path),
            "--quiet",
            "--set",
            f"experiment_name={backend}",
            "--set",
            f"engine.backend={backend}",
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        out = tmp_path / "results" / backend
        runs[backend] = (json.loads((out / "metrics.json").read_text()), RoundLog.read(out / "rounds.jsonl"))
    (m_local, r_local), (m_flower, r_flower) = runs["local"], runs["flower"]
    assert set(m_local) == set(m_flower)
    assert [r.ranks for r in r_local] == [r.ranks for r in r_flower]
    for a, b in zip(r_local, r_flower):
        assert [c.status for c in a.clients] == [c.status for c in b.clients]
    assert m_flower["final_score"] == pytest.approx(m_local["final_score"])
    assert (tmp_path / "results" / "flower" / "flower.json").exists()


# ---------------------------------------------------------------------------------------- deployment
def deployment_config(tmp_path, name, rounds, round_timeout=None, **sections):
    return validate(
        tiny_tree(
            tmp_path,
            **sections,
            experiment_name=name,
            federation={"num_rounds": rounds, "clients_per_round": 3},
            tiers={
                "fast": {"compute_factor": 1.0, "num_clients": 2, "memory_gb": 8, "bandwidth_mbps": 100},
                "slow": {"compute_factor": 0.25, "num_clients": 1, "memory_gb": 8, "bandwidth_mbps": 10},
            },
            engine={
                "backend": "flower",
                "flower": {
                    "mode": "deployment",
                    "superlink_port": 0,
                    "supernode_base_port": 0,
                    "round_timeout": round_timeout,
                },
            },
        )
    )


def check_results(cfg, rounds):
    out = cfg.results_dir
    metrics = json.loads((out / "metrics.json").read_text())
    records = RoundLog.read(out / "rounds.jsonl")
    assert metrics["rounds_completed"] == rounds == len(records)
    assert [r.round for r in records] == list(range(1, rounds + 1))
    payload = load_checkpoint(out / CHECKPOINT_NAME)  # the checked, weights_only reader
    assert payload["round_idx"] == rounds
    assert all(torch.isfinite(t).all() for t in payload["global_state"].values())
    return metrics, records, json.loads((out / "flower.json").read_text())


def test_deployment_superlink_and_three_supernodes(tmp_path):
    from fedranklite.backends.flower.credentials import make_credentials
    from fedranklite.backends.flower.launch import Deployment, alive, free_port

    cfg = deployment_config(tmp_path, "deployed", rounds=2)
    dep = Deployment(cfg, tmp_path / "run")
    rogue_key = make_credentials(tmp_path / "rogue", ["127.0.0.1"], 1).node_keys[0]
    try:
        dep.start()  # TLS with a CA made for the run; three registered, accepted SuperNodes
        assert len(dep.supernodes) == 3 and sorted(dep.node_ids) == [0, 1, 2]
        assert "root-certificates" in (dep.home / "config.toml").read_text()
        # a rogue SuperNode on the same machine, claiming partition 0 with a key nobody registered
        rogue = dep.start_supernode(0, key=rogue_key, port=free_port(), name="rogue")
        rogue_log = dep.logs / "rogue.log"
        assert rogue.wait(timeout=120) != 0
        assert "Failed to activate SuperNode" in rogue_log.read_text()
        status = dep.online_nodes()
        assert sorted(status) == sorted(dep.node_ids.values()) and set(status.values()) == {"online"}
        rc = dep.submit(timeout=420)
    finally:
        dep.stop()
    assert rc == 0, (tmp_path / "run" / "logs" / "flwr_run.log").read_text()[-3000:]
    assert dep.stopped_pids and not alive(dep.stopped_pids)  # every process it started, and theirs, stopped
    metrics, records, report = check_results(cfg, 2)
    assert sorted(v["partition-id"] for v in report["nodes"].values()) == [0, 1, 2] and report["lost"] == []
    assert report["authenticated"] and report["refused"] == {}
    assert {int(n) for n in report["nodes"]} == set(dep.node_ids.values())  # each partition on its own node
    assert all(c.status == "accepted" and c.steps > 0 for r in records for c in r.clients)
    # every message ran in the resident ClientApp worker the deployment started for its SuperNode, which
    # built its side at start from the experiment the server runs (same config key): no message paid a build
    timings = report["client_timings"]
    assert len(timings) == sum(len(r.clients) for r in records)
    assert {t["pid"] for t in timings} == {p.pid for p in dep.workers} and len(dep.workers) == 3
    assert not any(t["built"] for t in timings) and all(t["setup"] < 0.5 for t in timings)
    for i in range(3):
        assert "client side of" in (dep.logs / f"clientapp{i}.log").read_text()
    assert all(t["train"] > 0 and t["roundtrip"] >= t["train"] for t in timings)
    # the same experiment on the local engine picks the same ranks
    local = build_engine(cfg.model_copy(update={"experiment_name": "deployed_local"}))
    local.run()
    assert [r.ranks for r in records] == [r.ranks for r in local.state.records]


def test_supernode_killed_mid_round_is_a_straggler_and_the_run_completes(tmp_path):
    from fedranklite.backends.flower.launch import Deployment, alive

    # many local steps, so a client trains for seconds (the resident worker answers a 3-step round within the
    # moment it takes to kill a node, and the kill would then land after the reply); a round timeout that the
    # others' training cannot reach on a loaded machine, so only the killed node is lost
    cfg = deployment_config(
        tmp_path, "fault", rounds=2, round_timeout=240, training={"max_local_steps": 300, "local_epochs": 30}
    )
    dep = Deployment(cfg, tmp_path / "run")
    victim = 2  # SuperNode with partition-id 2 holds client 2
    log2 = tmp_path / "run" / "logs" / f"supernode{victim}.log"
    try:
        dep.start()
        dep.submit(wait=False)
        end = time.monotonic() + 300
        while "Receiving: train message" not in (log2.read_text() if log2.exists() else ""):
            assert time.monotonic() < end and dep.run_proc.poll() is None, "round 1 never reached SuperNode 2"
            time.sleep(0.2)
        time.sleep(0.5)  # its worker is training (several seconds): kill the node mid-round
        dep.kill_supernode(victim)
        rc = dep.wait(timeout=420)
    finally:
        dep.stop()
    assert rc == 0, (tmp_path / "run" / "logs" / "flwr_run.log").read_text()[-3000:]
    assert not alive(dep.stopped_pids)
    metrics, records, report = check_results(cfg, 2)
    first = {c.cid: c for c in records[0].clients}
    assert first[victim].status == "lost" and first[victim].straggler and first[victim].steps == 0
    assert first[victim].lost  # why it never answered
    assert victim in records[0].stragglers and not records[0].compliant
    assert all(first[c].status == "accepted" for c in first if c != victim)
    assert any(e["cid"] == victim and e["round"] == 1 for e in report["lost"])
    assert metrics["stragglers_total"] >= 1


def test_resident_worker_runs_only_this_projects_clientapp():
    import io
    import zipfile
    from types import SimpleNamespace

    from flwr.clientapp.client_app import LoadClientAppError

    from fedranklite.backends.flower import client_app
    from fedranklite.backends.flower.worker import CLIENTAPP, Worker, fab_clientapp

    def fab(ref: str, name: str):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("pyproject.toml", f'[tool.flwr.app.components]\nclientapp = "{ref}"\nserverapp = "x:app"\n')
            z.writestr("evil.py", "raise SystemExit('imported')\n")
        return SimpleNamespace(content=buf.getvalue(), hash_str=name)

    ours = (ROOT / "pyproject.toml").read_text()
    assert f'clientapp = "{CLIENTAPP}"' in ours  # the project's own app is the one the worker accepts
    assert fab_clientapp(fab("evil:app", "a").content) == "evil:app"
    worker = Worker("127.0.0.1:1")
    with pytest.raises(LoadClientAppError, match="runs only"):
        worker._app(None, fab("evil:app", "a"))
    assert "evil" not in sys.modules
    assert worker._app(None, fab(CLIENTAPP, "b")) is client_app.app


def test_supernode_entry_point_shortens_only_the_loops_waits():
    code = (
        "import time, flwr.supernode.start_client_internal as loop; "
        "from fedranklite.backends.flower import supernode; "
        "assert supernode.patch(); t = time.perf_counter(); loop.time.sleep(3); idle = time.perf_counter() - t; "
        "t = time.perf_counter(); loop.time.sleep(0.5); reply = time.perf_counter() - t; "
        "assert loop.time.time() > 0 and time.sleep is not loop.time.sleep; print(round(idle, 2), round(reply, 2))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    idle, reply = map(float, proc.stdout.split())
    assert 0.25 <= idle < 1.0 and reply < 0.3
