"""The Consul agents' certificates (mesh/runtime/tls.py `ensure_consul_certs`): kept across
starts, issued anew by the same CA when the names the agent must answer to change (a state dir
from before Consul's HTTPS API)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from cryptography import x509

from mesh.components.consul import agent_names
from mesh.placement import CONSUL, NativePlacement
from mesh.runtime.paths import StateDir
from mesh.runtime.tls import consul_ca, ensure_consul_certs
from mesh.topology import load

OLD = {CONSUL: (["client.dc1.consul"], ["127.0.0.1"])}
NOW = {CONSUL: (["client.dc1.consul", "localhost", "consul"], ["127.0.0.1", "10.0.0.1"])}


def state(tmp_path: Path) -> StateDir:
    made = StateDir(tmp_path)
    made.ensure()
    return made


def certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def sans(path: Path) -> tuple[set[str], set[str]]:
    names = certificate(path).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    dns = set(names.value.get_values_for_type(x509.DNSName))
    return dns, {str(a) for a in names.value.get_values_for_type(x509.IPAddress)}


def test_an_agents_certificate_and_key_are_kept_while_its_names_stay_the_same(
    tmp_path: Path,
) -> None:
    s = state(tmp_path)
    first = ensure_consul_certs(s, NOW)[CONSUL]
    cert, key = first.cert.read_bytes(), first.key.read_bytes()
    again = ensure_consul_certs(s, NOW)[CONSUL]
    assert (again.cert.read_bytes(), again.key.read_bytes()) == (cert, key)


def test_a_certificate_for_other_names_is_issued_anew_by_the_same_ca(tmp_path: Path) -> None:
    s = state(tmp_path)
    old = ensure_consul_certs(s, OLD)[CONSUL]
    ca = consul_ca(s).read_bytes()
    old_key = old.key.read_bytes()
    assert sans(old.cert) == ({"client.dc1.consul"}, {"127.0.0.1"})

    new = ensure_consul_certs(s, NOW)[CONSUL]
    names, addresses = NOW[CONSUL]
    assert sans(new.cert) == (set(names), set(addresses))
    assert new.key.read_bytes() != old_key
    assert consul_ca(s).read_bytes() == ca, "the CA every client trusts stays"
    certificate(new.cert).verify_directly_issued_by(certificate(consul_ca(s)))
    assert oct(new.key.stat().st_mode & 0o777) == "0o600"


def test_every_agents_certificate_names_the_loopback_address_and_localhost(
    tmp_path: Path,
) -> None:
    topology = load()
    names = agent_names(topology, NativePlacement.of(topology))
    issued = ensure_consul_certs(state(tmp_path), names)
    assert set(issued) == {CONSUL, *(server.name for server in topology.consul_servers)}
    for certs in issued.values():
        dns, addresses = sans(certs.cert)
        assert "localhost" in dns
        assert {ipaddress.ip_address(a) for a in addresses} >= {
            ipaddress.ip_address("127.0.0.1"),
            ipaddress.ip_address(topology.bind_host),
        }
