#!/usr/bin/env python3
"""Lint, render and check the platform's Helm chart (charts/paas), offline.

    venv=$(scripts/k8s-tools.sh) && "$venv/bin/python" tests/k8s/chart.py [--keep DIR]

Uses helm-sdkpy (Helm 4 as a library). It has `Lint` but no `helm template`, so a
chart is rendered by an `Install` into fake_apiserver.FakeApiServer, a small
in-memory API server on 127.0.0.1: the rendered manifest is the release's `manifest`,
and every object must also have been accepted by the fake server. Release records go
to Helm's memory driver (HELM_DRIVER=memory, set by re-executing this script: the Go
library reads the environment only when it is loaded).

Checks, for several value sets: helm lint has no errors; rendering without a
database fails with the chart's message; every rendered object passes
validate.py (strict schemas, Pod Security checks; only the service account token
check is skipped, and only for the control plane's own pod, which needs its token);
the RBAC is least-privilege (no wildcards, Secrets only in the workload namespaces, no escalate/bind/impersonate,
workloads bound per listed namespace only); the Deployment is wired as documented.
Exit status 0 when all pass, 1 otherwise, with a report of every failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import os
import shutil
import sys
import tempfile
from pathlib import Path

if os.environ.get("HELM_DRIVER") != "memory":
    os.execve(sys.executable, [sys.executable, *sys.argv], dict(os.environ, HELM_DRIVER="memory"))

import yaml  # noqa: E402

import helm_sdkpy as helm  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import validate  # noqa: E402
from fake_apiserver import FakeApiServer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "paas"
RELEASE = "paas"
NAMESPACE = "paas"
FULLNAME = "paas"  # the release name contains the chart name
SERVICE_ACCOUNT = "paas"
TOKEN_CHECK = "CKV_K8S_38"

# The rights the control plane needs, and no more: (apiGroup, resource, verb).
WORKLOAD_VERBS = ["get", "list", "watch", "create", "patch", "update", "delete", "deletecollection"]
EXPECTED_RULES = {
    f"{FULLNAME}-cluster": {
        *(("", "namespaces", v) for v in ["get", "list", "watch", "create", "patch"]),
        *(("", "nodes", v) for v in ["get", "list", "watch", "patch"]),
        *(("", "pods", v) for v in ["list", "watch"]),
        *(("metrics.k8s.io", "pods", v) for v in ["get", "list"]),
    },
    f"{FULLNAME}-workloads": {
        *((g, r, v) for g, rs in [("apps", ["deployments", "statefulsets", "daemonsets"]),
                                  ("batch", ["jobs", "cronjobs"]), ("", ["services"])]
          for r in rs for v in WORKLOAD_VERBS),
        *(("", "pods", v) for v in ["get", "list", "watch", "delete"]),
        ("", "pods/log", "get"),
        ("", "pods/eviction", "create"),
        *(("policy", "poddisruptionbudgets", v) for v in WORKLOAD_VERBS),
        *(("", "secrets", v) for v in ["get", "list", "create", "patch", "delete"]),
    },
}
# The only role that may touch Secrets: bound in the workload namespaces only (or, with
# rbac.allNamespaces, everywhere, which values.yaml warns about).
SECRETS_ROLE = f"{FULLNAME}-workloads"
FORBIDDEN_VERBS = {"escalate", "bind", "impersonate"}

DB = {"database": {"existingSecret": "paas-db"}, "masterKey": {"existingSecret": "paas-master-key"}}
SCENARIOS: dict[str, dict] = {
    # name -> values (on top of the chart's values.yaml)
    "default": DB,
    "ingress-ha": {
        **DB,
        "replicaCount": 2,
        "ingress": {"enabled": True, "className": "nginx",
                    "hosts": [{"host": "paas.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]}],
                    "tls": [{"secretName": "paas-tls", "hosts": ["paas.example.com"]}]},
        "rbac": {"workloadNamespaces": ["paas-acme-dev", "paas-acme-prod"]},
    },
    "all-namespaces": {**DB, "rbac": {"allNamespaces": True, "workloadNamespaces": ["paas-acme-dev"]}},
    "chart-secret": {"database": {"url": "postgres://paas:pw@db:5432/paas"},
                     "masterKey": {"existingSecret": "paas-master-key", "secretKey": "master"},
                     "bootstrapAdmin": {"existingSecret": "paas-admin"},
                     "image": {"digest": "sha256:" + "0" * 64}},
}
# name -> (values, text the failure must contain)
MUST_FAIL: dict[str, tuple[dict, list[str]]] = {
    "no-database": ({"masterKey": {"existingSecret": "k"}},
                    ["a database is required", "database.existingSecret", "database.url"]),
    "no-master-key": ({"database": {"existingSecret": "paas-db"}},
                      ["a master key is required", "masterKey.existingSecret"]),
    "foreign-namespace": ({**DB, "rbac": {"workloadNamespaces": ["kube-system"]}},
                          ["kube-system", "paas-<tenant>-<env>"]),
}


class Failures(list):
    def add(self, where: str, message: str) -> None:
        self.append(f"{where}: {message}")


def merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


@contextlib.contextmanager
def captured_stderr():
    """Capture file descriptor 2 (the Go library logs there) into a list of lines."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines.extend(tmp.read().splitlines())


def lint(values: dict, workdir: Path) -> list[str]:
    """`helm lint` with values: helm-sdkpy's Lint takes none, so a copy of the chart
    gets them merged into its values.yaml. Returns the lint errors."""
    copy_dir = workdir / "lint" / CHART.name
    shutil.rmtree(copy_dir, ignore_errors=True)
    shutil.copytree(CHART, copy_dir)
    chart_values = yaml.safe_load((CHART / "values.yaml").read_text())
    (copy_dir / "values.yaml").write_text(yaml.safe_dump(merge(chart_values, values), sort_keys=False))
    config = helm.Configuration(namespace=NAMESPACE)
    with captured_stderr():
        result = asyncio.run(helm.Lint(config).run(str(copy_dir)))
    errors = []
    for m in result.get("Messages") or []:
        if m.get("Severity", 0) >= 3:  # 1 info, 2 warning, 3 error
            text = m["Err"] if isinstance(m.get("Err"), str) else "(helm-sdkpy passes no text for this one)"
            errors.append(f"{m.get('Path') or 'chart'}: {text}")
    return errors


def render(values: dict) -> tuple[str | None, str | None, int]:
    """(manifest, None, objects created) or (None, error text, 0)."""
    with FakeApiServer() as api, captured_stderr() as log:
        config = helm.Configuration(namespace=NAMESPACE, kubeconfig=api.kubeconfig())
        try:
            result = asyncio.run(helm.Install(config).run(
                RELEASE, str(CHART), values=values, wait=False, timeout=60))
        except helm.HelmError as e:
            return None, f"{e}\n" + "\n".join(log), 0
        created = [o for o in api.created
                   if not (o.get("kind") == "Secret" and o["metadata"].get("labels", {}).get("owner") == "helm")]
    return result["manifest"], None, len(created)


def objects_of(manifest: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(manifest) if d]


def check_rbac(name: str, values: dict, objs: list[dict], failures: Failures) -> None:
    where = f"{name}: rbac"
    rbac = merge({"workloadNamespaces": [], "allNamespaces": False}, values.get("rbac", {}))
    granted: dict[str, set] = {}
    for o in objs:
        if o["kind"] not in ("Role", "ClusterRole"):
            continue
        role = f"{o['kind']}/{o['metadata']['name']}"
        if "aggregationRule" in o:
            failures.add(where, f"{role} aggregates other roles")
        for i, rule in enumerate(o.get("rules") or []):
            for key in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                if any("*" in str(v) for v in rule.get(key) or []):
                    failures.add(where, f"{role} rule {i}: wildcard in {key}: {rule[key]}")
            for res in rule.get("resources") or []:
                if (res == "secrets" or res.startswith("secrets/")) and o["metadata"]["name"] != SECRETS_ROLE:
                    failures.add(where, f"{role} rule {i}: grants {rule.get('verbs')} on {res}")
            bad = FORBIDDEN_VERBS & set(rule.get("verbs") or [])
            if bad:
                failures.add(where, f"{role} rule {i}: forbidden verbs {sorted(bad)}")
            for g in rule.get("apiGroups") or []:
                for r in rule.get("resources") or []:
                    for v in rule.get("verbs") or []:
                        granted.setdefault(o["metadata"]["name"], set()).add((g, r, v))
    for role, expected in EXPECTED_RULES.items():
        got = granted.get(role, set())
        if got - expected:
            failures.add(where, f"ClusterRole/{role} grants more than needed: {sorted(got - expected)}")
        if expected - got:
            failures.add(where, f"ClusterRole/{role} lacks {sorted(expected - got)}")
    extra_roles = set(granted) - set(EXPECTED_RULES)
    if extra_roles:
        failures.add(where, f"unexpected roles {sorted(extra_roles)}")

    def binds(o: dict, role: str) -> bool:
        ref = o.get("roleRef", {})
        subjects = o.get("subjects") or []
        ok_subjects = subjects == [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}]
        if ref.get("name") == role and not ok_subjects:
            failures.add(where, f"{o['kind']}/{o['metadata']['name']} binds {role} to {subjects}")
        return ref.get("kind") == "ClusterRole" and ref.get("name") == role

    workloads = f"{FULLNAME}-workloads"
    crbs = [o for o in objs if o["kind"] == "ClusterRoleBinding"]
    if not any(binds(o, f"{FULLNAME}-cluster") for o in crbs):
        failures.add(where, f"no ClusterRoleBinding to {FULLNAME}-cluster")
    cluster_wide = [o for o in crbs if binds(o, workloads)]
    if rbac["allNamespaces"] and not cluster_wide:
        failures.add(where, f"allNamespaces: no ClusterRoleBinding to {workloads}")
    if not rbac["allNamespaces"] and cluster_wide:
        failures.add(where, f"ClusterRoleBinding to {workloads} without rbac.allNamespaces")

    rbs = [o for o in objs if o["kind"] == "RoleBinding"]
    for o in rbs:
        if not o["metadata"].get("namespace"):
            failures.add(where, f"RoleBinding/{o['metadata']['name']} has no namespace")
        binds(o, workloads)
    bound = sorted(o["metadata"].get("namespace") for o in rbs if binds(o, workloads))
    want = [] if rbac["allNamespaces"] else sorted(rbac["workloadNamespaces"])
    if bound != want:
        failures.add(where, f"workloads RoleBindings in {bound}, expected {want}")


def check_deployment(name: str, values: dict, objs: list[dict], failures: Failures) -> None:
    where = f"{name}: deployment"
    deployments = [o for o in objs if o["kind"] == "Deployment"]
    if len(deployments) != 1:
        return failures.add(where, f"{len(deployments)} Deployments rendered")
    d = deployments[0]
    pod = d["spec"]["template"]["spec"]
    c = pod["containers"][0]
    env = {e["name"]: e for e in c.get("env", [])}
    ingress = values.get("ingress", {})
    db = values.get("database", {})
    replicas = values.get("replicaCount", 1)
    expect = {
        "replicas": (d["spec"]["replicas"], replicas),
        "maxUnavailable": (d["spec"]["strategy"].get("rollingUpdate", {}).get("maxUnavailable"), 0),
        "pod automountServiceAccountToken": (pod.get("automountServiceAccountToken"), True),
        "serviceAccountName": (pod.get("serviceAccountName"), SERVICE_ACCOUNT),
        "imagePullPolicy": (c.get("imagePullPolicy"), "IfNotPresent"),
        "image": (c["image"], f"paas@{values['image']['digest']}" if values.get("image", {}).get("digest")
                  else "paas:0.1.0"),
        "args": (c.get("args"), ["serve"]),
        "http port": ([(p["name"], p["containerPort"]) for p in c.get("ports", [])], [("http", 8080)]),
        "liveness": (c.get("livenessProbe", {}).get("httpGet", {}).get("path"), "/healthz"),
        "readiness": (c.get("readinessProbe", {}).get("httpGet", {}).get("path"), "/readyz"),
        "DATABASE_URL": (env.get("DATABASE_URL", {}).get("valueFrom", {}).get("secretKeyRef"),
                         {"name": db.get("existingSecret") or f"{FULLNAME}-database", "key": "url"}),
        "PAAS_MASTER_KEY": (env.get("PAAS_MASTER_KEY", {}).get("valueFrom", {}).get("secretKeyRef"),
                            {"name": values["masterKey"]["existingSecret"],
                             "key": values["masterKey"].get("secretKey", "key")}),
        "PAAS_LISTEN": (env.get("PAAS_LISTEN", {}).get("value"), "0.0.0.0:8080"),
        "PAAS_LOG_FORMAT": (env.get("PAAS_LOG_FORMAT", {}).get("value"), "json"),
        "PAAS_KUBE_CLUSTERS": (env.get("PAAS_KUBE_CLUSTERS", {}).get("value"), "kubernetes=in-cluster"),
        "PAAS_SECURE_COOKIES": (env.get("PAAS_SECURE_COOKIES", {}).get("value"),
                                "true" if ingress.get("tls") else "false"),
        "PAAS_TRUST_PROXY": (env.get("PAAS_TRUST_PROXY", {}).get("value"),
                             "true" if ingress.get("enabled") else "false"),
        "PAAS_BOOTSTRAP_ADMIN_PASSWORD": ("PAAS_BOOTSTRAP_ADMIN_PASSWORD" in env,
                                          bool(values.get("bootstrapAdmin", {}).get("existingSecret"))),
        "/tmp mount": ([m["mountPath"] for m in c.get("volumeMounts", [])][:1], ["/tmp"]),
        "readOnlyRootFilesystem": (c.get("securityContext", {}).get("readOnlyRootFilesystem"), True),
        "runAsUser": ((pod["securityContext"].get("runAsUser"), c["securityContext"].get("runAsUser")),
                      (10001, 10001)),
        "resources": (sorted(f"{k}.{r}" for k in ("requests", "limits")
                             for r in c.get("resources", {}).get(k, {})),
                      ["limits.cpu", "limits.memory", "requests.cpu", "requests.memory"]),
    }
    for what, (got, want) in expect.items():
        if got != want:
            failures.add(where, f"{what} is {got!r}, expected {want!r}")
    kinds = [o["kind"] for o in objs]
    if ("PodDisruptionBudget" in kinds) != (replicas > 1):
        failures.add(where, f"PodDisruptionBudget rendered: {'PodDisruptionBudget' in kinds}, replicas {replicas}")
    if ("Ingress" in kinds) != bool(ingress.get("enabled")):
        failures.add(where, f"Ingress rendered: {'Ingress' in kinds}, ingress.enabled {ingress.get('enabled')}")
    if ("Secret" in kinds) != bool(db.get("url") and not db.get("existingSecret")):
        failures.add(where, "a Secret is rendered only for database.url")
    sa = [o for o in objs if o["kind"] == "ServiceAccount"]
    if [o.get("automountServiceAccountToken") for o in sa] != [True]:
        failures.add(where, "the ServiceAccount must set automountServiceAccountToken: true")


def undocumented_values(text: str) -> list[str]:
    """values.yaml keys without a comment: every top-level key needs a comment line
    right above it, or else each of its direct children does."""
    lines = text.splitlines()

    def key_at(i: int, indent: int) -> str | None:
        line = lines[i]
        body = line[indent:]
        if line.startswith(" " * indent) and body[:1] not in ("", " ", "#", "-") and ":" in body:
            return body.split(":", 1)[0]
        return None

    def commented(i: int) -> bool:
        return i > 0 and lines[i - 1].lstrip().startswith("#")

    missing = []
    tops = [i for i in range(len(lines)) if key_at(i, 0)]
    for n, i in enumerate(tops):
        if commented(i):
            continue
        end = tops[n + 1] if n + 1 < len(tops) else len(lines)
        children = [j for j in range(i + 1, end) if key_at(j, 2)]
        if not children:
            missing.append(key_at(i, 0))
        missing += [f"{key_at(i, 0)}.{key_at(j, 2)}" for j in children if not commented(j)]
    return missing


def main() -> int:
    global CHART
    parser = argparse.ArgumentParser(description="Lint, render and check charts/paas.")
    parser.add_argument("--keep", metavar="DIR", help="write the renders to DIR (default: a temp dir)")
    parser.add_argument("--chart", metavar="DIR", default=str(CHART), help=f"the chart (default {CHART})")
    args = parser.parse_args()
    CHART = Path(args.chart).resolve()

    failures = Failures()
    with tempfile.TemporaryDirectory(prefix="paas-chart-") as tmp:
        workdir = Path(tmp)
        renders = Path(args.keep) if args.keep else workdir / "renders"
        renders.mkdir(parents=True, exist_ok=True)

        missing = undocumented_values((CHART / "values.yaml").read_text())
        for key in missing:
            failures.add("values.yaml", f"{key} has no comment")
        print(f"values.yaml documented: {'ok' if not missing else f'{len(missing)} keys without a comment'}")

        for name, values in SCENARIOS.items():
            errors = lint(values, workdir)
            for e in errors:
                failures.add(f"{name}: helm lint", e)
            print(f"helm lint ({name}): {'ok' if not errors else f'{len(errors)} errors'}")

        for name, values in SCENARIOS.items():
            manifest, error, created = render(values)
            if manifest is None:
                failures.add(f"{name}: render", error.strip())
                continue
            objs = objects_of(manifest)
            if created != len(objs):
                failures.add(f"{name}: render", f"{len(objs)} objects rendered, {created} created on the API server")
            (renders / f"{name}.yaml").write_text(manifest)
            print(f"render ({name}): {len(objs)} objects: "
                  + ", ".join(sorted({o['kind'] for o in objs})))
            check_rbac(name, values, objs, failures)
            check_deployment(name, values, objs, failures)

        for name, (values, needles) in MUST_FAIL.items():
            manifest, error, _ = render(values)
            if manifest is not None:
                failures.add(f"{name}: render", "rendered, but must fail")
            elif not all(n in error for n in needles):
                failures.add(f"{name}: render", f"failed without saying {needles}: {error.strip()}")
            else:
                first = next(line for line in error.splitlines() if needles[0] in line)
                print(f"render ({name}): fails as it should: {first.strip()}")

        # Schemas and Pod Security of every render. The control plane's own pod mounts
        # its ServiceAccount token on purpose (it is the Kubernetes driver), so the token
        # check is waived for that one object, and nothing else.
        report = validate.validate([str(renders)])
        control_plane = f"Deployment/{NAMESPACE}/{FULLNAME}"
        report.violations = [v for v in report.violations
                             if not (v.check == TOKEN_CHECK and v.obj == control_plane)]
        print(f"validate.py (waiving {TOKEN_CHECK} for {control_plane} only):")
        report.print()
        for v in report.violations:
            failures.add("validate", str(v))

    if failures:
        print(f"\nFAILED: {len(failures)} problems")
        for f in failures:
            print(f"  {f}")
        return 1
    print("\nchart ok: lint, renders, schemas, pod security, RBAC and wiring")
    return 0


if __name__ == "__main__":
    sys.exit(main())
