#!/usr/bin/env python3
"""Validate Kubernetes manifests: schema (strict) and Pod Security.

    venv=$(scripts/k8s-tools.sh)
    "$venv/bin/python" tests/k8s/validate.py [--skip-check CKV_K8S_38] FILE_OR_DIR...

Every YAML document in the given files (and *.yaml / *.yml under the given
directories) is checked twice:

1. Schema: kubernetes_validate in strict mode (unknown fields are errors) against the
   Kubernetes KUBE_VERSION schemas, so a typo'd or misplaced field fails here instead
   of being dropped silently by the API server.
2. Pod security: checkov, restricted to POD_SECURITY_CHECKS: the checks that make up
   the "restricted" Pod Security Standard plus the platform's hardening (requests and
   limits, read-only root filesystem, high UID, no service account token unless needed).

Exit status 0 when both pass, 1 on any violation (each one reported with its file,
object, check id and message), 2 on a usage error. The last line is a summary:
"N objects: S schema violations, P pod-security violations".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

KUBE_VERSION = "1.32.0"

# checkov ids, each with the rule it enforces. The CKV_K8S_1..7 family looks the same
# but checks PodSecurityPolicy objects (removed in Kubernetes 1.25), so it is not here.
POD_SECURITY_CHECKS: dict[str, str] = {
    # The "baseline" level (which "restricted" includes).
    "CKV_K8S_16": "no privileged containers",
    "CKV_K8S_17": "no hostPID",
    "CKV_K8S_18": "no hostIPC",
    "CKV_K8S_19": "no hostNetwork",
    "CKV_K8S_26": "no hostPort",
    "CKV_K8S_27": "no Docker socket hostPath mount",
    "CKV_K8S_25": "no added capabilities",
    "CKV_K8S_39": "no CAP_SYS_ADMIN",
    # The "restricted" level.
    "CKV_K8S_20": "allowPrivilegeEscalation: false",
    "CKV_K8S_23": "runAsNonRoot (no root containers)",
    "CKV_K8S_28": "NET_RAW dropped",
    "CKV_K8S_37": "capabilities drop ALL",
    "CKV_K8S_31": "seccompProfile RuntimeDefault (or Localhost)",
    # The platform's hardening.
    "CKV_K8S_38": "service account token mounted only where needed",
    "CKV_K8S_10": "CPU requests",
    "CKV_K8S_11": "CPU limits",
    "CKV_K8S_12": "memory requests",
    "CKV_K8S_13": "memory limits",
    "CKV_K8S_22": "readOnlyRootFilesystem",
    "CKV_K8S_40": "high UID (>= 10000)",
}


@dataclass
class Violation:
    kind: str  # "schema" or "pod-security"
    file: str
    obj: str  # Kind/name (namespace/name when namespaced)
    check: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.obj}: [{self.check}] {self.message}"


@dataclass
class Report:
    objects: int = 0
    violations: list[Violation] = field(default_factory=list)

    @property
    def schema(self) -> list[Violation]:
        return [v for v in self.violations if v.kind == "schema"]

    @property
    def pod_security(self) -> list[Violation]:
        return [v for v in self.violations if v.kind == "pod-security"]

    @property
    def ok(self) -> bool:
        return not self.violations

    def summary(self) -> str:
        return (f"{self.objects} objects: {len(self.schema)} schema violations, "
                f"{len(self.pod_security)} pod-security violations")

    def print(self, out=sys.stdout) -> None:
        for title, items in (("Schema violations", self.schema),
                             ("Pod-security violations", self.pod_security)):
            if items:
                print(f"{title}:", file=out)
                for v in sorted(items, key=lambda v: (v.file, v.obj, v.check)):
                    print(f"  {v}", file=out)
        print(self.summary(), file=out)


def yaml_files(paths: list[str]) -> list[Path]:
    """The files named, and the *.yaml / *.yml files under the directories named."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.suffix in (".yaml", ".yml") and f.is_file()))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"no such file or directory: {p}")
    return files


def object_name(obj: dict) -> str:
    meta = obj.get("metadata") or {}
    name = meta.get("name", "?")
    if meta.get("namespace"):
        name = f"{meta['namespace']}/{name}"
    return f"{obj.get('kind', '?')}/{name}"


def load_objects(files: list[Path], report: Report) -> list[tuple[Path, dict]]:
    """Every Kubernetes object in the files (List kinds expanded); unreadable
    documents are reported as schema violations."""
    objects: list[tuple[Path, dict]] = []
    for f in files:
        try:
            docs = list(yaml.safe_load_all(f.read_text()))
        except yaml.YAMLError as e:
            report.violations.append(Violation("schema", str(f), "-", "yaml", f"not valid YAML: {e}"))
            continue
        for doc in docs:
            if doc is None:
                continue
            if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
                report.violations.append(Violation(
                    "schema", str(f), "-", "object", "a document without apiVersion and kind"))
                continue
            if doc["kind"].endswith("List") and isinstance(doc.get("items"), list):
                objects.extend((f, item) for item in doc["items"])
            else:
                objects.append((f, doc))
    return objects


def check_schemas(objects: list[tuple[Path, dict]], kube_version: str, report: Report) -> None:
    import kubernetes_validate

    for f, obj in objects:
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as e:
            where = ".".join(str(p) for p in e.path) or "(object)"
            report.violations.append(Violation(
                "schema", str(f), object_name(obj), f"kubernetes {e.version} strict",
                f"{where}: {e.message}"))
        except kubernetes_validate.SchemaNotFoundError as e:
            report.violations.append(Violation(
                "schema", str(f), object_name(obj), "kubernetes schema", e.message))


def checkov_binary() -> str:
    """checkov from this interpreter's venv, else from PATH."""
    beside = Path(sys.executable).parent / "checkov"
    return str(beside) if beside.exists() else "checkov"


def check_pod_security(files: list[Path], checks: list[str], report: Report) -> None:
    if not files or not checks:
        return
    cmd = [checkov_binary(), "--framework", "kubernetes", "--check", ",".join(checks),
           "--output", "json", "--compact", "--quiet", "--skip-download", "--soft-fail"]
    for f in files:
        cmd += ["--file", str(f)]
    env = dict(os.environ, BC_SKIP_MAPPING="TRUE", CHECKOV_RUN_SCA_PACKAGE_SCAN_V2="false",
               LOG_LEVEL="ERROR")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    try:
        output = json.loads(proc.stdout) if proc.stdout.strip() else []
    except json.JSONDecodeError:
        raise RuntimeError(f"checkov failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    if proc.returncode != 0:
        raise RuntimeError(f"checkov failed (exit {proc.returncode}):\n{proc.stderr}")
    by_abs = {str(f.resolve()): str(f) for f in files}
    for result in output if isinstance(output, list) else [output]:
        for failed in (result.get("results") or {}).get("failed_checks", []):
            # checkov names a resource Kind.namespace.name
            parts = failed.get("resource", "?").split(".", 2)
            obj = f"{parts[0]}/{parts[1]}/{parts[2]}" if len(parts) == 3 else failed.get("resource", "?")
            path = failed.get("file_abs_path") or failed.get("file_path", "?")
            report.violations.append(Violation(
                "pod-security", by_abs.get(str(Path(path).resolve()), path), obj,
                failed["check_id"], failed.get("check_name", "")))


def validate(paths: list[str], kube_version: str = KUBE_VERSION,
             skip_checks: tuple[str, ...] = (), pod_security: bool = True) -> Report:
    """Validate every object in the paths; the report lists all violations."""
    report = Report()
    files = yaml_files(paths)
    objects = load_objects(files, report)
    report.objects = len(objects)
    check_schemas(objects, kube_version, report)
    if pod_security:
        checks = [c for c in POD_SECURITY_CHECKS if c not in set(skip_checks)]
        check_pod_security(files, checks, report)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", metavar="FILE_OR_DIR")
    parser.add_argument("--kube-version", default=KUBE_VERSION,
                        help=f"Kubernetes schema version (default {KUBE_VERSION})")
    parser.add_argument("--skip-check", action="append", default=[], metavar="ID",
                        help="a checkov check id not to run (repeatable), e.g. CKV_K8S_38")
    parser.add_argument("--no-pod-security", action="store_true", help="schemas only")
    parser.add_argument("--list-checks", action="store_true", help="print the pod-security checks and exit")
    args = parser.parse_args(argv)
    if args.list_checks:
        for check, rule in POD_SECURITY_CHECKS.items():
            print(f"{check}  {rule}")
        return 0
    if not args.paths:
        parser.error("name at least one FILE_OR_DIR")
    unknown = [c for c in args.skip_check if c not in POD_SECURITY_CHECKS]
    if unknown:
        parser.error(f"--skip-check: not one of the pod-security checks: {', '.join(unknown)}")
    try:
        report = validate(args.paths, args.kube_version, tuple(args.skip_check),
                          not args.no_pod_security)
    except (FileNotFoundError, RuntimeError) as e:
        print(f"validate: {e}", file=sys.stderr)
        return 2
    report.print()
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
