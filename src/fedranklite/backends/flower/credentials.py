"""Credentials of a local Flower deployment, made fresh for each one: a throw-away certificate authority, a
TLS certificate for the SuperLink's host, and one key pair per SuperNode.

What flwr 1.42 expects (found by running it): every TLS file in PEM; a SuperNode key pair on a NIST curve
with both halves in OpenSSH format (`flower-supernode --auth-supernode-private-key` reads the private half
with `load_ssh_private_key`, `flwr supernode register` the public half with `load_ssh_public_key`; Ed25519,
RSA or PEM/PKCS8 keys are refused). Private keys are created 0600 in a 0700 folder; the CA's private key is
never written.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CURVE = ec.SECP384R1
VALID_DAYS = 7  # a deployment lives for one run; the CA dies with it


@dataclass(frozen=True)
class Credentials:
    folder: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path
    node_keys: tuple[Path, ...]  # private halves; the public half of node i is node_keys[i] + ".pub"

    def public_key(self, i: int) -> Path:
        return self.node_keys[i].with_name(self.node_keys[i].name + ".pub")


def _write_private(path: Path, data: bytes) -> None:
    """Created 0600 from the start (no moment at the umask's permissions)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _cert(subject: str, key, issuer: x509.Name, issuer_key, extensions) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


def make_credentials(folder: Path, hosts: Sequence[str], num_nodes: int) -> Credentials:
    """A CA, a server certificate valid for `hosts` (IPs or names) and `num_nodes` SuperNode key pairs."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    pem = serialization.Encoding.PEM
    plain = serialization.NoEncryption()

    ca_key = ec.generate_private_key(CURVE())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedranklite local CA")])
    usage = x509.KeyUsage(
        digital_signature=True,
        key_cert_sign=True,
        crl_sign=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        encipher_only=False,
        decipher_only=False,
    )
    ca = _cert("fedranklite local CA", ca_key, ca_name, ca_key, [(x509.BasicConstraints(True, 0), True), (usage, True)])

    server_key = ec.generate_private_key(CURVE())
    server = _cert(
        hosts[0],
        server_key,
        ca_name,
        ca_key,
        [
            (x509.SubjectAlternativeName([_san(h) for h in dict.fromkeys(hosts)]), False),
            (x509.BasicConstraints(False, None), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
        ],
    )
    (folder / "ca.crt").write_bytes(ca.public_bytes(pem))  # the CA's private key is never written: nothing
    # signs with it after this function, so no later certificate can be made in this deployment's name
    (folder / "server.pem").write_bytes(server.public_bytes(pem))
    _write_private(
        folder / "server.key", server_key.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL, plain)
    )

    nodes = []
    for i in range(num_nodes):
        key = ec.generate_private_key(CURVE())
        private = folder / f"supernode{i}"
        _write_private(private, key.private_bytes(pem, serialization.PrivateFormat.OpenSSH, plain))
        ssh = serialization.Encoding.OpenSSH
        (folder / f"supernode{i}.pub").write_bytes(
            key.public_key().public_bytes(ssh, serialization.PublicFormat.OpenSSH) + b"\n"
        )
        nodes.append(private)
    return Credentials(folder, folder / "ca.crt", folder / "server.pem", folder / "server.key", tuple(nodes))


def make_superexec_secret(path: Path) -> Path:
    """A SuperNode's SuperExec secret (32 random bytes, 0600): its Runtime API hands tasks, and with them their
    tokens, only to a process that holds it (the node's resident ClientApp worker)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_private(path, os.urandom(32))
    return path
