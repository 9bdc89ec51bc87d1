"""A Kubernetes control plane of real programs on loopback, for the Helm chart's API-server tier
(tests/kube, `make test-kube`, docs/kubernetes.md): etcd, kube-apiserver, kube-controller-manager
and kube-scheduler (`mesh install --kube`), and kwok in the kubelets' place: it keeps a few fake
nodes (labelled with hostnames and zones) Ready and marks the pods bound to them Running. No pod
runs anything.

Each start is a new cluster: etcd's data dir is emptied, and the certificates (one CA for the
cluster, one for etcd) and the service-account signing key are generated anew, owner-only, in
the state dir. Everything listens on 127.0.0.1 on free ports, with mutual TLS; every client
has its own identity, and RBAC gives each what Kubernetes' bootstrap policy (and, for kwok,
its own ClusterRole) gives it. `stop` stops every process of the cluster, by its pid files.
"""

from __future__ import annotations

import shutil
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from mesh.runtime import process, tls
from mesh.runtime.paths import StateDir, write_private
from mesh.runtime.ports import free_port
from mesh.runtime.process import ProcessSpec

SERVICE_CIDR = "10.96.0.0/16"
# The first address of SERVICE_CIDR: the `kubernetes` Service's, which the API server's
# certificate must name.
API_SERVICE_IP = "10.96.0.1"
API_NAMES = ["kubernetes", "kubernetes.default", "kubernetes.default.svc", "localhost"]
ADMIN_GROUP = "system:masters"  # bound to cluster-admin by the bootstrap policy
KWOK_USER = "kwok-controller"
# The annotation kwok is told to manage nodes by (its own convention).
KWOK_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
START_TIMEOUT_S = 180.0
NODES_READY_TIMEOUT_S = 120.0
NODE_LEASE_S = 40
# How long the node lifecycle controller waits for a node's heartbeat before it takes the node
# for unreachable and marks its pods not ready (for good: kwok's stages never make a Running pod
# ready again). kwok's watches end, again and again, with the API server's "a watch stream was
# requested by the client but the required storage feature RequestWatchProgress is disabled"
# (Debian's etcd 3.4 has no RequestWatchProgress): its informers re-list in a loop, its lease
# cache lags, and some lease renewals fail on a conflict; once, every node went unreachable in
# a run. Longer than a test run, so that a lag is not a node failure (no test here is about
# failed nodes).
NODE_MONITOR_GRACE = "10m"
PROCESSES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


@dataclass(frozen=True)
class FakeNode:
    name: str
    zone: str


def fake_nodes(count: int, zones: int) -> tuple[FakeNode, ...]:
    """`count` nodes `kwok-node-<n>`, dealt round-robin over `zones` zones `zone-<a, b, ...>`."""
    return tuple(
        FakeNode(f"kwok-node-{n + 1}", f"zone-{chr(ord('a') + n % zones)}") for n in range(count)
    )


@dataclass(frozen=True)
class Identity:
    """A client or server certificate and its key."""

    cert: Path
    key: Path


def _tls(ca: Path, identity: Identity) -> ssl.SSLContext:
    """A client's TLS: trusts `ca` only, presents `identity`."""
    context = ssl.create_default_context(cafile=str(ca))
    context.load_cert_chain(str(identity.cert), str(identity.key))
    return context


class KubeCluster:
    """The control plane in `state` (its own state dir), with `nodes`; `binaries` are those of
    `install_all(kube=True)`."""

    def __init__(
        self,
        state: StateDir,
        binaries: Mapping[str, Mapping[str, Path]],
        nodes: tuple[FakeNode, ...],
    ) -> None:
        self.state = state
        self.binaries = binaries
        self.nodes = nodes
        self.secrets = state.secrets / "kube"
        self.etcd_port, self.etcd_peer_port = free_port(), free_port()
        self.api_port, self.kwok_port = free_port(), free_port()

    # --- files ---------------------------------------------------------------------------

    @property
    def ca(self) -> Path:
        return self.secrets / "ca.pem"

    @property
    def etcd_ca(self) -> Path:
        return self.secrets / "etcd-ca.pem"

    def identity(self, name: str) -> Identity:
        return Identity(self.secrets / f"{name}.pem", self.secrets / f"{name}-key.pem")

    def kubeconfig(self, user: str = "admin") -> Path:
        return self.secrets / f"{user}.kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    def client(self, timeout: float = 30.0) -> httpx.Client:
        """The API server's REST API as the cluster's admin."""
        return httpx.Client(
            base_url=self.server, verify=_tls(self.ca, self.identity("admin")), timeout=timeout
        )

    def _write_credentials(self) -> None:
        self.secrets.mkdir(parents=True, exist_ok=True, mode=0o700)
        usages = {
            "server": [ExtendedKeyUsageOID.SERVER_AUTH],
            "client": [ExtendedKeyUsageOID.CLIENT_AUTH],
            "both": [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        }

        def issue(ca: tls.Issued, name: str, cn: str, usage: str, **kw: Any) -> None:
            key, cert = tls.issue(ca, cn, kw.pop("names", []), kw.pop("addresses", []),
                                  usages[usage], **kw)  # fmt: skip
            identity = self.identity(name)
            write_private(identity.key, tls.pem_key(key))
            write_private(identity.cert, tls.pem(cert))

        # etcd trusts its own CA only: no cluster identity can reach the database directly.
        etcd_ca = tls.new_ca("shopmesh kube etcd CA")
        write_private(self.etcd_ca, tls.pem(etcd_ca[1]))
        issue(etcd_ca, "etcd", "etcd", "both", names=["localhost"], addresses=["127.0.0.1"])
        issue(etcd_ca, "apiserver-etcd-client", "kube-apiserver", "client")
        ca = tls.new_ca("shopmesh kube CA")
        write_private(self.ca, tls.pem(ca[1]))
        issue(ca, "apiserver", "kube-apiserver", "server", names=API_NAMES,
              addresses=["127.0.0.1", API_SERVICE_IP])  # fmt: skip
        issue(ca, "admin", "shopmesh-admin", "client", organization=ADMIN_GROUP)
        issue(ca, "controller-manager", "system:kube-controller-manager", "client")
        issue(ca, "scheduler", "system:kube-scheduler", "client")
        issue(ca, "kwok", KWOK_USER, "client")
        signing = ec.generate_private_key(ec.SECP256R1())
        write_private(self.secrets / "service-accounts-key.pem", tls.pem_key(signing))
        public = signing.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        write_private(self.secrets / "service-accounts.pem", public)
        for user in ("admin", "controller-manager", "scheduler", "kwok"):
            self._write_kubeconfig(user)

    def _write_kubeconfig(self, user: str) -> None:
        identity = self.identity(user)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "shopmesh", "cluster": {"server": self.server,
                                                 "certificate-authority": str(self.ca)}}
            ],
            "users": [{"name": user, "user": {"client-certificate": str(identity.cert),
                                              "client-key": str(identity.key)}}],
            "contexts": [{"name": user, "context": {"cluster": "shopmesh", "user": user}}],
            "current-context": user,
        }  # fmt: skip
        write_private(self.kubeconfig(user), yaml.safe_dump(config))

    # --- processes -----------------------------------------------------------------------

    def _bin(self, component: str, name: str | None = None) -> str:
        return str(self.binaries[component][name or component])

    def _etcd(self) -> ProcessSpec:
        data = self.state.data / "etcd"
        tls_flags = []
        for prefix in ("", "peer-"):
            etcd = self.identity("etcd")
            tls_flags += [f"--{prefix}cert-file={etcd.cert}", f"--{prefix}key-file={etcd.key}",
                          f"--{prefix}trusted-ca-file={self.etcd_ca}",
                          f"--{prefix}client-cert-auth"]  # fmt: skip
        client_url = f"https://127.0.0.1:{self.etcd_port}"
        peer_url = f"https://127.0.0.1:{self.etcd_peer_port}"
        client = self.identity("apiserver-etcd-client")

        def ready() -> str | None:
            resp = httpx.get(f"{client_url}/health", verify=_tls(self.etcd_ca, client), timeout=5)
            return None if resp.json().get("health") == "true" else resp.text

        return ProcessSpec(
            name="etcd",
            argv=[
                self._bin("etcd"), "--name=kube", f"--data-dir={data}",
                f"--listen-client-urls={client_url}", f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=kube={peer_url}", *tls_flags,
            ],
            ports=(self.etcd_port, self.etcd_peer_port),
            ready=ready,
            before_start=lambda: shutil.rmtree(data, ignore_errors=True),
        )  # fmt: skip

    def _apiserver(self) -> ProcessSpec:
        serving, etcd = self.identity("apiserver"), self.identity("apiserver-etcd-client")

        def ready() -> str | None:
            with self.client(timeout=5) as api:
                resp = api.get("/readyz")
            return None if resp.status_code == 200 else f"/readyz: {resp.status_code}"

        return ProcessSpec(
            name="kube-apiserver",
            argv=[
                self._bin("kubernetes", "kube-apiserver"),
                # No pod reaches the API server through the `kubernetes` Service here, and its
                # endpoints may not be a loopback address: no endpoint reconciler.
                "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
                "--endpoint-reconciler-type=none",
                f"--secure-port={self.api_port}",
                f"--tls-cert-file={serving.cert}", f"--tls-private-key-file={serving.key}",
                f"--client-ca-file={self.ca}",
                f"--etcd-servers=https://127.0.0.1:{self.etcd_port}",
                f"--etcd-cafile={self.etcd_ca}", f"--etcd-certfile={etcd.cert}",
                f"--etcd-keyfile={etcd.key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={self.secrets / 'service-accounts.pem'}",
                f"--service-account-signing-key-file={self.secrets / 'service-accounts-key.pem'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=RBAC", "--anonymous-auth=false",
                "--allow-privileged=false", "--profiling=false",
            ],
            ports=(self.api_port,),
            ready=ready,
            ready_timeout=START_TIMEOUT_S,
        )  # fmt: skip

    def _leader(self, lease: str) -> Callable[[], str | None]:
        """Ready once the component holds its leader-election lease in kube-system."""

        def ready() -> str | None:
            with self.client(timeout=5) as api:
                resp = api.get(
                    f"/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{lease}"
                )
            if resp.status_code != 200:
                return f"lease {lease}: {resp.status_code}"
            return None if resp.json()["spec"].get("holderIdentity") else f"{lease}: no holder"

        return ready

    def _controller_manager(self) -> ProcessSpec:
        kubeconfig = self.kubeconfig("controller-manager")
        return ProcessSpec(
            name="kube-controller-manager",
            argv=[
                self._bin("kubernetes", "kube-controller-manager"),
                f"--kubeconfig={kubeconfig}", "--secure-port=0",
                # Each controller under its own service account and role, as kubeadm runs it.
                "--use-service-account-credentials=true",
                f"--node-monitor-grace-period={NODE_MONITOR_GRACE}",
                f"--service-account-private-key-file={self.secrets / 'service-accounts-key.pem'}",
                f"--root-ca-file={self.ca}", "--profiling=false",
            ],
            ready=self._leader("kube-controller-manager"),
            ready_timeout=START_TIMEOUT_S,
        )  # fmt: skip

    def _scheduler(self) -> ProcessSpec:
        return ProcessSpec(
            name="kube-scheduler",
            argv=[
                self._bin("kubernetes", "kube-scheduler"),
                f"--kubeconfig={self.kubeconfig('scheduler')}", "--secure-port=0",
                "--profiling=false",
            ],
            ready=self._leader("kube-scheduler"),
            ready_timeout=START_TIMEOUT_S,
        )  # fmt: skip

    def _kwok(self) -> ProcessSpec:
        key, value = KWOK_NODE_ANNOTATION

        def ready() -> str | None:
            resp = httpx.get(f"http://127.0.0.1:{self.kwok_port}/healthz", timeout=5)
            return None if resp.status_code == 200 else f"/healthz: {resp.status_code}"

        return ProcessSpec(
            name="kwok",
            argv=[
                self._bin("kwok"), f"--kubeconfig={self.kubeconfig('kwok')}",
                f"--config={self._bin('kwok', 'stages')}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={key}={value}",
                # The nodes' heartbeat: without leases kept, the node lifecycle controller finds
                # them unreachable after its grace period (kwok's default, set explicitly: the
                # flag's default is not applied when --config holds no KwokConfiguration).
                f"--node-lease-duration-seconds={NODE_LEASE_S}",
                f"--server-address=127.0.0.1:{self.kwok_port}",
            ],
            ports=(self.kwok_port,),
            ready=ready,
        )  # fmt: skip

    def _run(self, spec: ProcessSpec) -> None:
        process.start(self.state, spec)
        process.wait_ready(self.state, spec)

    # --- objects -------------------------------------------------------------------------

    def _create(self, api: httpx.Client, path: str, body: dict[str, Any]) -> None:
        resp = api.post(path, json=body)
        if resp.status_code != 201:
            raise RuntimeError(f"POST {path}: {resp.status_code} {resp.text}")

    def _grant_kwok(self, api: httpx.Client) -> None:
        """kwok's own ClusterRole (from its module), bound to kwok's identity."""
        role = yaml.safe_load(Path(self._bin("kwok", "role")).read_text())
        self._create(api, "/apis/rbac.authorization.k8s.io/v1/clusterroles", role)
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": KWOK_USER},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": role["metadata"]["name"]},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                          "name": KWOK_USER}],
        }  # fmt: skip
        self._create(api, "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", binding)

    def _create_nodes(self, api: httpx.Client) -> None:
        key, value = KWOK_NODE_ANNOTATION
        for node in self.nodes:
            self._create(api, "/api/v1/nodes", {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": node.name,
                    "annotations": {key: value},
                    "labels": {
                        "kubernetes.io/hostname": node.name,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "topology.kubernetes.io/zone": node.zone,
                        "type": "kwok",
                    },
                },
            })  # fmt: skip

    def ready_nodes(self) -> set[str]:
        with self.client() as api:
            items = api.get("/api/v1/nodes").raise_for_status().json()["items"]
        return {
            n["metadata"]["name"]
            for n in items
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in n.get("status", {}).get("conditions", [])
            )
        }

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the control plane and kwok, create the nodes, wait until they are Ready;
        stop what started if anything fails."""
        self.stop()
        self.state.ensure()
        try:
            self._write_credentials()
            self._run(self._etcd())
            self._run(self._apiserver())
            with self.client() as api:
                self._grant_kwok(api)
            self._run(self._controller_manager())
            self._run(self._scheduler())
            self._run(self._kwok())
            with self.client() as api:
                self._create_nodes(api)
            self._wait_nodes_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_nodes_ready(self) -> None:
        deadline = time.monotonic() + NODES_READY_TIMEOUT_S
        wanted = {n.name for n in self.nodes}
        while (ready := self.ready_nodes()) != wanted:
            if time.monotonic() > deadline:
                raise RuntimeError(f"kwok's nodes not Ready after {NODES_READY_TIMEOUT_S}s: "
                                   f"{sorted(wanted - ready)}")  # fmt: skip
            time.sleep(0.5)

    def stop(self) -> None:
        """Stop every process of the cluster that runs in its state dir (by their pid files:
        an interrupted earlier run's too), the last started first."""
        for name in reversed(PROCESSES):
            process.stop(self.state, name, timeout=15)
