"""The authenticated deployment's pieces that need no running SuperLink: credentials in the formats flwr
1.42 loads, the config rules (no clear text beyond loopback, auth needs TLS), and the binding of each
partition to the node its key was registered for. tests/test_flower.py runs the deployment itself with TLS
and node authentication, and shows a rogue SuperNode refused."""

from __future__ import annotations

import stat

import pytest

pytest.importorskip("flwr")

from conftest import tiny_tree  # noqa: E402

from fedranklite.config.files import validate  # noqa: E402
from fedranklite.config.schema import ConfigError  # noqa: E402


def deployment(tmp_path, **flower):
    return tiny_tree(tmp_path, engine={"backend": "flower", "flower": {"mode": "deployment", **flower}})


def test_credentials_are_what_flwr_loads(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

    from fedranklite.backends.flower.credentials import make_credentials

    c = make_credentials(tmp_path / "c", ["10.1.2.3", "127.0.0.1", "localhost"], 2)
    cert = x509.load_pem_x509_certificate(c.server_cert.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == {"10.1.2.3", "127.0.0.1"}
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    ca = x509.load_pem_x509_certificate(c.ca_cert.read_bytes())
    cert.verify_directly_issued_by(ca)  # raises if the CA did not sign it
    for i in range(2):
        private = load_ssh_private_key(c.node_keys[i].read_bytes(), password=None)
        public = load_ssh_public_key(c.public_key(i).read_bytes())
        assert private.public_key().public_numbers() == public.public_numbers()
        assert stat.S_IMODE(c.node_keys[i].stat().st_mode) == 0o600
    assert stat.S_IMODE(c.server_key.stat().st_mode) == 0o600
    other = make_credentials(tmp_path / "d", ["127.0.0.1"], 1)
    assert other.public_key(0).read_bytes() != c.public_key(0).read_bytes()  # fresh keys per deployment


@pytest.mark.parametrize(
    "flower,expect",
    [
        ({"tls": False, "supernode_auth": False, "superlink_host": "0.0.0.0"}, "flower.superlink_host"),
        ({"tls": False, "supernode_auth": False, "superlink_host": "192.168.1.5"}, "reachable from other machines"),
        ({"tls": False}, "flower.supernode_auth: needs flower.tls"),
    ],
)
def test_clear_text_beyond_loopback_and_auth_without_tls_are_refused(tmp_path, flower, expect):
    with pytest.raises(ConfigError, match=expect):
        validate(deployment(tmp_path, **flower))


def test_what_is_allowed(tmp_path):
    validate(deployment(tmp_path, superlink_host="0.0.0.0"))  # TLS + auth: fine on any interface
    validate(deployment(tmp_path, tls=False, supernode_auth=False))  # clear text on loopback only
    validate(deployment(tmp_path, tls=False, supernode_auth=False, superlink_host="localhost"))
    validate(tiny_tree(tmp_path, engine={"backend": "flower", "flower": {"tls": False}}))  # simulation: unused


def runner_with(tmp_path, binding):
    from fedranklite.backends.flower.runner import FlowerRunner

    tree = tiny_tree(tmp_path, federation={"clients_per_round": 3}, engine={"backend": "flower"})
    tree["tiers"] = {"t": {"compute_factor": 1.0, "num_clients": 3, "memory_gb": 8}}
    runner = FlowerRunner(validate(tree), None, [10, 10, 10])
    runner.binding = binding
    return runner


def test_a_partition_goes_only_to_the_node_registered_for_it(tmp_path):
    # node 3 is registered for partition 0; node 1 (lower id, which used to win) claims partition 0 as well
    claims = {1: (0, 3), 3: (0, 3), 5: (1, 3), 7: (2, 3), 9: (2, 5)}
    runner = runner_with(tmp_path, {0: 3, 1: 5, 2: 7})
    runner.accept_claims(claims)
    assert runner.holders(claims) == {0: 3, 1: 5, 2: 7}
    assert "registered to node 3" in runner.refused[1] and "registered to node 7" in runner.refused[9]
    assert set(runner.node_partition) == {3, 5, 7}


def test_a_registered_node_claiming_another_partition_count_is_refused(tmp_path):
    runner = runner_with(tmp_path, {0: 3, 1: 5, 2: 7})
    runner.accept_claims({3: (0, 4)})
    assert "claims 4 partitions, the deployment has 3" in runner.refused[3]


def test_without_a_binding_any_node_may_claim_as_before(tmp_path):
    runner = runner_with(tmp_path, None)
    claims = {1: (0, 3), 3: (0, 3), 5: (1, 3), 7: (2, 3)}
    runner.accept_claims(claims)
    assert runner.holders(claims) == {0: 1, 1: 5, 2: 7} and runner.refused == {}


@pytest.mark.parametrize(
    "field,value,expect",
    [
        ("num_samples", float("nan"), "num_samples is nan"),
        ("num_samples", float("inf"), "num_samples is inf"),
        ("steps", 2.5, "steps is 2.5"),
        ("wall_seconds", float("nan"), "wall_seconds is nan"),
        ("wall_seconds", -1.0, "wall_seconds is -1.0"),
    ],
)
def test_a_malformed_client_reply_is_an_error_the_runner_turns_into_a_straggler(field, value, expect):
    import torch
    from flwr.app import MetricRecord

    from fedranklite.backends.flower.task import result_content, result_from_content
    from fedranklite.run.client import ClientResult
    from fedranklite.run.runners import ClientTask

    task = ClientTask(1, 2, 7)
    honest = ClientResult(
        cid=1,
        rank=2,
        update={"head.bias": torch.zeros(2)},
        num_samples=24,
        steps=3,
        planned_steps=3,
        loss_before=0.7,
        loss_after=0.6,
        wall_seconds=1.0,
        peak_memory_mb=10.0,
        bytes_down=0,
        bytes_up=0,
    )
    content = result_content(honest)
    assert result_from_content(content, task, 0).num_samples == 24
    metrics = dict(content["telemetry"])
    metrics[field] = value
    content["telemetry"] = MetricRecord(metrics)
    with pytest.raises(ValueError, match=expect):
        result_from_content(content, task, 0)
    metrics[field] = -5 if field != "wall_seconds" else 1.0  # a negative count passes here: the engine rejects it
    content["telemetry"] = MetricRecord(metrics)
    result_from_content(content, task, 0)
