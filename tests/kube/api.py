"""The API server's REST API as the tests use it: any object's collection found by discovery,
pods by label selector (the server evaluates it), and the few writes a drain makes."""

from __future__ import annotations

from typing import Any

import httpx

Object = dict[str, Any]


def selector(match_labels: dict[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(match_labels.items()))


class Api:
    def __init__(self, http: httpx.Client) -> None:
        self.http = http
        self._kinds: dict[str, dict[str, tuple[str, bool]]] = {}

    def _base(self, api_version: str) -> str:
        return "/api/v1" if api_version == "v1" else f"/apis/{api_version}"

    def collection(self, api_version: str, kind: str, namespace: str) -> str:
        """The path of `kind`'s objects (in `namespace` if it is namespaced), by discovery."""
        if api_version not in self._kinds:
            found = self.http.get(self._base(api_version)).raise_for_status().json()
            self._kinds[api_version] = {
                r["kind"]: (r["name"], r["namespaced"])
                for r in found["resources"]
                if "/" not in r["name"]  # subresources
            }
        plural, namespaced = self._kinds[api_version][kind]
        base = self._base(api_version)
        return f"{base}/namespaces/{namespace}/{plural}" if namespaced else f"{base}/{plural}"

    def path(self, obj: Object, namespace: str) -> str:
        collection = self.collection(obj["apiVersion"], obj["kind"], namespace)
        return f"{collection}/{obj['metadata']['name']}"

    def create(self, obj: Object, namespace: str = "", **params: str) -> httpx.Response:
        path = self.collection(obj["apiVersion"], obj["kind"], namespace)
        return self.http.post(path, json=obj, params=params)

    def items(self, path: str, **params: str) -> list[Object]:
        found: list[Object] = self.http.get(path, params=params).raise_for_status().json()["items"]
        return found

    def pods(self, namespace: str, match_labels: dict[str, str] | None = None) -> list[Object]:
        params = {"labelSelector": selector(match_labels)} if match_labels else {}
        return self.items(f"/api/v1/namespaces/{namespace}/pods", **params)

    def of_kind(self, api_version: str, kind: str, namespace: str) -> dict[str, Object]:
        path = self.collection(api_version, kind, namespace)
        return {o["metadata"]["name"]: o for o in self.items(path)}

    def evict(self, namespace: str, pod: str) -> httpx.Response:
        return self.http.post(
            f"/api/v1/namespaces/{namespace}/pods/{pod}/eviction",
            json={
                "apiVersion": "policy/v1",
                "kind": "Eviction",
                "metadata": {"name": pod, "namespace": namespace},
            },
        )

    def set_unschedulable(self, node: str, unschedulable: bool) -> None:
        self.http.patch(
            f"/api/v1/nodes/{node}",
            json={"spec": {"unschedulable": unschedulable}},
            headers={"Content-Type": "application/merge-patch+json"},
        ).raise_for_status()

    def scale(self, namespace: str, deployment: str, replicas: int) -> None:
        self.http.patch(
            f"/apis/apps/v1/namespaces/{namespace}/deployments/{deployment}/scale",
            json={"spec": {"replicas": replicas}},
            headers={"Content-Type": "application/merge-patch+json"},
        ).raise_for_status()
