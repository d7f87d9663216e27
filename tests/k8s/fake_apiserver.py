"""A tiny in-memory Kubernetes API server on 127.0.0.1, for rendering charts offline.

helm-sdkpy has no `helm template`: its only way to render a chart with values is an
install, which talks to a cluster. This server is just enough of one for Helm: version
and discovery, and a generic object store (create, get, list, update, delete) that
records every object Helm creates. It never leaves the loopback interface.

    with FakeApiServer() as api:
        kubeconfig = api.kubeconfig()      # YAML text for helm_sdkpy.Configuration
        ...install...
        api.created                        # the objects Helm created, in order
"""

from __future__ import annotations

import copy
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

KUBE_VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.0",
                "gitCommit": "fake", "gitTreeState": "clean", "buildDate": "2024-12-11T00:00:00Z",
                "goVersion": "go1.23", "compiler": "gc", "platform": "linux/amd64"}

# group/version -> [(plural, Kind, namespaced)]
RESOURCES: dict[str, list[tuple[str, str, bool]]] = {
    "v1": [
        ("namespaces", "Namespace", False), ("nodes", "Node", False),
        ("pods", "Pod", True), ("services", "Service", True), ("secrets", "Secret", True),
        ("configmaps", "ConfigMap", True), ("serviceaccounts", "ServiceAccount", True),
        ("persistentvolumeclaims", "PersistentVolumeClaim", True), ("events", "Event", True),
    ],
    "apps/v1": [
        ("deployments", "Deployment", True), ("statefulsets", "StatefulSet", True),
        ("daemonsets", "DaemonSet", True), ("replicasets", "ReplicaSet", True),
    ],
    "batch/v1": [("jobs", "Job", True), ("cronjobs", "CronJob", True)],
    "networking.k8s.io/v1": [
        ("ingresses", "Ingress", True), ("ingressclasses", "IngressClass", False),
        ("networkpolicies", "NetworkPolicy", True),
    ],
    "rbac.authorization.k8s.io/v1": [
        ("roles", "Role", True), ("rolebindings", "RoleBinding", True),
        ("clusterroles", "ClusterRole", False), ("clusterrolebindings", "ClusterRoleBinding", False),
    ],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    "metrics.k8s.io/v1beta1": [("pods", "PodMetrics", True), ("nodes", "NodeMetrics", False)],
}
VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


def _resource_list(gv: str) -> dict:
    return {
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
        "resources": [
            {"name": plural, "singularName": kind.lower(), "namespaced": namespaced,
             "kind": kind, "verbs": VERBS}
            for plural, kind, namespaced in RESOURCES[gv]
        ],
    }


def _group_list() -> dict:
    groups = []
    for gv in RESOURCES:
        if "/" not in gv:
            continue
        group, version = gv.split("/")
        entry = {"groupVersion": gv, "version": version}
        groups.append({"name": group, "versions": [entry], "preferredVersion": entry})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def _status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet: Helm's requests are not the report
        pass

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def _parse(self):
        """(group/version, namespace, plural, name, subresource) of a resource path, or None."""
        parts = [p for p in urlsplit(self.path).path.split("/") if p]
        if parts[:1] == ["api"] and len(parts) >= 2:
            gv, rest = parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            gv, rest = f"{parts[1]}/{parts[2]}", parts[3:]
        else:
            return None
        if gv not in RESOURCES:
            return None
        ns = None
        namespaced = {p for p, _, scoped in RESOURCES[gv] if scoped}
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] in namespaced:
            ns, rest = rest[1], rest[2:]
        if not rest:
            return gv, ns, None, None, None
        plural = rest[0]
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        return gv, ns, plural, name, sub

    def _kind(self, gv: str, plural: str) -> str | None:
        for p, kind, _ in RESOURCES[gv]:
            if p == plural:
                return kind
        return None

    def do_GET(self):
        path = urlsplit(self.path).path.rstrip("/")
        if path == "/version":
            return self._send(200, KUBE_VERSION)
        if path == "/api":
            return self._send(200, {"kind": "APIVersions", "versions": ["v1"],
                                    "serverAddressByClientCIDRs": [
                                        {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})
        if path == "/apis":
            return self._send(200, _group_list())
        parsed = self._parse()
        if parsed is None:
            return self._send(404, _status(404, "NotFound", f"no such path {path}"))
        gv, ns, plural, name, _ = parsed
        if plural is None:
            return self._send(200, _resource_list(gv))
        kind = self._kind(gv, plural)
        if kind is None:
            return self._send(404, _status(404, "NotFound", f"no resource {plural} in {gv}"))
        with self.server.lock:
            if name is None:
                query = parse_qs(urlsplit(self.path).query)
                selector = {}
                for term in ",".join(query.get("labelSelector", [])).split(","):
                    if "=" in term:
                        k, v = term.split("=", 1)
                        selector[k.rstrip("=")] = v.lstrip("=")
                items = [copy.deepcopy(o) for (g, n, p, _), o in self.server.store.items()
                         if g == gv and p == plural and (ns is None or n == ns)
                         and all(o.get("metadata", {}).get("labels", {}).get(k) == v
                                 for k, v in selector.items())]
                return self._send(200, {"kind": f"{kind}List", "apiVersion": gv,
                                        "metadata": {"resourceVersion": "1"}, "items": items})
            obj = self.server.store.get((gv, ns, plural, name))
        if obj is None:
            return self._send(404, _status(404, "NotFound", f'{plural} "{name}" not found'))
        return self._send(200, obj)

    def do_POST(self):
        parsed = self._parse()
        if parsed is None or parsed[2] is None:
            return self._send(404, _status(404, "NotFound", "no such path"))
        gv, ns, plural, _, _ = parsed
        obj = self._body()
        meta = obj.setdefault("metadata", {})
        key = (gv, ns, plural, meta.get("name"))
        with self.server.lock:
            if key in self.server.store:
                return self._send(409, _status(409, "AlreadyExists", f'{plural} "{key[3]}" already exists'))
            meta.setdefault("uid", str(uuid.uuid4()))
            meta["resourceVersion"] = "1"
            if ns is not None:
                meta.setdefault("namespace", ns)
            self.server.store[key] = obj
            self.server.created.append(copy.deepcopy(obj))
        return self._send(201, obj)

    def do_PUT(self):
        parsed = self._parse()
        if parsed is None or parsed[3] is None:
            return self._send(404, _status(404, "NotFound", "no such path"))
        gv, ns, plural, name, _ = parsed
        obj = self._body()
        with self.server.lock:
            self.server.store[(gv, ns, plural, name)] = obj
        return self._send(200, obj)

    def do_PATCH(self):
        return self._send(405, _status(405, "MethodNotAllowed", "patch is not supported here"))

    def do_DELETE(self):
        parsed = self._parse()
        if parsed is None or parsed[3] is None:
            return self._send(404, _status(404, "NotFound", "no such path"))
        with self.server.lock:
            obj = self.server.store.pop(parsed[:4], None)
        if obj is None:
            return self._send(404, _status(404, "NotFound", "not found"))
        return self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.store: dict[tuple, dict] = {}
        self.created: list[dict] = []


class FakeApiServer:
    def __init__(self):
        self._server = _Server()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeApiServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def created(self) -> list[dict]:
        """Objects created so far (Helm's own release Secrets included)."""
        with self._server.lock:
            return copy.deepcopy(self._server.created)

    def kubeconfig(self) -> str:
        """A kubeconfig (YAML text) for this server."""
        return (
            "apiVersion: v1\n"
            "kind: Config\n"
            "current-context: fake\n"
            "clusters:\n"
            f"  - name: fake\n    cluster:\n      server: {self.url}\n"
            "users:\n"
            "  - name: fake\n    user:\n      token: fake\n"
            "contexts:\n"
            "  - name: fake\n    context:\n      cluster: fake\n      user: fake\n"
        )
