"""The API-server tier's cluster (mesh/runtime/kube_cluster.py) without starting it: its fake
nodes, and the credentials each start generates (tests/kube starts it for real)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from mesh.runtime.kube_cluster import ADMIN_GROUP, KubeCluster, fake_nodes
from mesh.runtime.paths import StateDir
from mesh.runtime.provision import KUBERNETES_BUILD_FLAGS


def test_fake_nodes_are_dealt_round_robin_over_the_zones() -> None:
    nodes = fake_nodes(4, zones=2)
    assert [(n.name, n.zone) for n in nodes] == [
        ("kwok-node-1", "zone-a"),
        ("kwok-node-2", "zone-b"),
        ("kwok-node-3", "zone-a"),
        ("kwok-node-4", "zone-b"),
    ]


@pytest.fixture
def cluster(tmp_path: Path) -> KubeCluster:
    state = StateDir(tmp_path / "kube")
    state.ensure()
    cluster = KubeCluster(state, {}, fake_nodes(2, zones=1))
    cluster._write_credentials()
    return cluster


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_every_credential_is_owner_only(cluster: KubeCluster) -> None:
    files = list(cluster.secrets.iterdir())
    assert len(files) > 10
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_the_admin_is_a_system_master_and_the_components_are_their_bootstrap_users(
    cluster: KubeCluster,
) -> None:
    def subject(name: str, oid: x509.ObjectIdentifier) -> str:
        value = _cert(cluster.identity(name).cert).subject.get_attributes_for_oid(oid)[0].value
        assert isinstance(value, str)
        return value

    assert subject("admin", NameOID.ORGANIZATION_NAME) == ADMIN_GROUP
    assert subject("controller-manager", NameOID.COMMON_NAME) == "system:kube-controller-manager"
    assert subject("scheduler", NameOID.COMMON_NAME) == "system:kube-scheduler"
    assert subject("kwok", NameOID.ORGANIZATION_NAME) != ADMIN_GROUP


def test_etcd_trusts_a_ca_of_its_own_that_signed_no_cluster_identity(cluster: KubeCluster) -> None:
    etcd_ca, cluster_ca = _cert(cluster.etcd_ca), _cert(cluster.ca)
    assert etcd_ca.subject != cluster_ca.subject
    assert _cert(cluster.identity("apiserver-etcd-client").cert).issuer == etcd_ca.subject
    for user in ("admin", "controller-manager", "scheduler", "kwok"):
        assert _cert(cluster.identity(user).cert).issuer == cluster_ca.subject, user


def test_the_api_servers_certificate_names_loopback_and_the_kubernetes_service(
    cluster: KubeCluster,
) -> None:
    names = _cert(cluster.identity("apiserver").cert).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    addresses = {str(a) for a in names.value.get_values_for_type(x509.IPAddress)}
    assert addresses == {"127.0.0.1", "10.96.0.1"}
    assert "kubernetes.default.svc" in names.value.get_values_for_type(x509.DNSName)


def test_the_control_plane_is_stamped_with_its_kubernetes_version() -> None:
    (flags,) = KUBERNETES_BUILD_FLAGS
    assert "-X k8s.io/component-base/version.gitVersion=v1.37.2" in flags
