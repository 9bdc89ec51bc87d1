"""The mesh's local certificate authorities, generated at first start into the state dir: the
edge's (its public listeners) and Consul's (the agents' RPC, their HTTPS API and the sidecars'
xDS).

`mesh ca` prints the edge CA certificate's path, `mesh ca --consul` Consul's, for `curl --cacert`
and other clients.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mesh.runtime.paths import StateDir, write_private

VALIDITY = datetime.timedelta(days=365)


@dataclass(frozen=True)
class EdgeCerts:
    ca_cert: Path
    server_cert: Path
    server_key: Path


@dataclass(frozen=True)
class AgentCerts:
    """A Consul agent's: the CA that signs every agent, its own certificate and its key."""

    ca_cert: Path
    cert: Path
    key: Path


def edge_certs(state: StateDir) -> EdgeCerts:
    folder = state.root / "certs"
    return EdgeCerts(folder / "ca.pem", folder / "edge.pem", folder / "edge-key.pem")


LOCAL_ORGANIZATION = "shopmesh local"


def _name(common_name: str, organization: str = LOCAL_ORGANIZATION) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])  # fmt: skip


def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


Issued = tuple[ec.EllipticCurvePrivateKey, x509.Certificate]


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
    )


def new_ca(common_name: str) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    cert = (
        _builder(name, name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue(
    ca: Issued,
    common_name: str,
    names: list[str],
    addresses: list[str],
    usages: list[x509.ObjectIdentifier],
    organization: str = LOCAL_ORGANIZATION,
) -> Issued:
    """A leaf certificate signed by `ca` for DNS `names` and IP `addresses` (a client's may
    have neither); `organization` is its subject's O (Kubernetes reads it as the client's
    group)."""
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in names]
    sans += [x509.IPAddress(ipaddress.ip_address(address)) for address in addresses]
    builder = _builder(_name(common_name, organization), ca_cert.subject, key.public_key())
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = (
        builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def ensure_edge_certs(state: StateDir, host: str) -> EdgeCerts:
    """A CA and an edge server certificate for `host` and localhost; kept across restarts."""
    certs = edge_certs(state)
    if certs.ca_cert.exists() and certs.server_cert.exists() and certs.server_key.exists():
        return certs
    certs.ca_cert.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca = new_ca("shopmesh local CA")
    key, cert = issue(ca, "shopmesh edge", ["localhost"], [host], [ExtendedKeyUsageOID.SERVER_AUTH])
    write_private(certs.server_key, pem_key(key))
    certs.server_cert.write_bytes(pem(cert))
    certs.ca_cert.write_bytes(pem(ca[1]))
    return certs


def consul_certs(state: StateDir, agent: str) -> AgentCerts:
    folder = state.secrets / "consul-tls"
    return AgentCerts(consul_ca(state), folder / f"{agent}.pem", folder / f"{agent}-key.pem")


def consul_ca(state: StateDir) -> Path:
    """The certificate of Consul's CA: what every client of a Consul agent verifies it with."""
    return state.secrets / "consul-tls" / "ca.pem"


def _names_of(cert_file: Path) -> tuple[set[str], set[str]]:
    """The DNS names and IP addresses a certificate is for."""
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = set(sans.get_values_for_type(x509.DNSName))
    addresses = {str(address) for address in sans.get_values_for_type(x509.IPAddress)}
    return names, addresses


def ensure_consul_certs(
    state: StateDir, agents: dict[str, tuple[list[str], list[str]]]
) -> dict[str, AgentCerts]:
    """Consul's CA (its key kept owner-only beside it, to sign agents added later) and a
    certificate for each of `agents` (name: its DNS names and IP addresses), for both ends of
    a connection and for its HTTPS API; what exists is kept across restarts, unless it is for
    other names than wanted now (a state dir made before the API's clients needed them): then
    it is issued anew by the same CA."""
    folder = state.secrets / "consul-tls"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca_cert_path, ca_key_path = folder / "ca.pem", folder / "ca-key.pem"
    if ca_cert_path.exists() and ca_key_path.exists():
        loaded = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        ca: Issued = (loaded, x509.load_pem_x509_certificate(ca_cert_path.read_bytes()))
    else:
        ca = new_ca("shopmesh consul CA")
        write_private(ca_key_path, pem_key(ca[0]))
        ca_cert_path.write_bytes(pem(ca[1]))
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    issued = {}
    for agent, (names, addresses) in agents.items():
        certs = consul_certs(state, agent)
        if not (
            certs.cert.exists()
            and certs.key.exists()
            and _names_of(certs.cert) == (set(names), set(addresses))
        ):
            key, cert = issue(ca, agent, names, addresses, usages)
            write_private(certs.key, pem_key(key))
            certs.cert.write_bytes(pem(cert))
        issued[agent] = certs
    return issued
