"""`make lint`'s manifest lint: kube-score over the chart's render and over the operator's builders.

    python -m rft_devcluster.kube_score            lint every target; exit 1 on a finding that
                                                   tools/kube-score.yaml does not decline
    python -m rft_devcluster.kube_score --counts   also print kube-score's own OK/WARNING/CRITICAL
                                                   counts per target (before any decline)
    python -m rft_devcluster.kube_score --counts --plain
                                                   kube-score's counts with no flag and no decline
    python -m rft_devcluster.kube_score FILE...    lint these manifest files instead (target `file`)
    python -m rft_devcluster.kube_score --write-dir DIR   also keep the rendered YAML in DIR

Targets: `chart/<value set>` (helm template of charts/rft-operator with a few realistic value
sets) and `builders/<object>` (the manifests the operator itself creates, rendered by its pure
builders from sample resources: each Job kind, and the server Deployment with its Service for each
engine image, GPU and CPU). kube-score and helm come from tools/build-control-plane.sh (cached,
offline once built). Dev tooling: the operator never imports this.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rft_devcluster.binaries import REPO_ROOT, ensure_binaries
from rft_devcluster.kube_score_samples import NAMESPACE, builder_manifests

Manifest = dict[str, Any]
CHART = REPO_ROOT / "charts" / "rft-operator"
DECLINED_FILE = REPO_ROOT / "tools" / "kube-score.yaml"
# The cluster version the chart is rendered for and kube-score checks API versions against.
KUBE_VERSION = "1.33.13"
OK = 10
GRADE_NAMES = {10: "OK", 7: "WARNING", 5: "WARNING", 1: "CRITICAL", 0: "CRITICAL"}

WORKLOAD_NAMESPACE = NAMESPACE
# helm template value sets: what a reviewer would install.
CHART_VALUE_SETS: dict[str, Mapping[str, Any]] = {
    "default": {},
    "watch-namespaces": {
        "watchNamespaces": ["team-a", "team-b"],
        "workloadServiceAccounts": {"namespaces": ["team-a", "team-b"]},
    },
    "network-policy": {
        "networkPolicy": {"enabled": True, "apiServer": {"cidrs": ["10.0.0.1/32"]}},
    },
    # The workload pods' NetworkPolicies (server, trainer, checks) in the builders' namespace: the
    # builders' targets are linted together with these (what a cluster with the chart has).
    "workload-network-policy": {
        "networkPolicy": {"enabled": True, "apiServer": {"cidrs": ["10.0.0.1/32"]}},
        "watchNamespaces": [WORKLOAD_NAMESPACE],
        "workloadServiceAccounts": {"namespaces": [WORKLOAD_NAMESPACE]},
        "workloadNetworkPolicy": {"enabled": True},
    },
    # The monitoring objects: the operator's ServiceMonitor, the servers' PodMonitor, the dashboard.
    "monitoring": {
        "networkPolicy": {"enabled": True, "apiServer": {"cidrs": ["10.0.0.1/32"]}},
        "metrics": {
            "serviceMonitor": {"enabled": True},
            "serverPodMonitor": {"enabled": True},
            "grafanaDashboard": {"enabled": True},
        },
        "tracking": {"mlflow": {"trackingUri": "https://mlflow.example", "credentialsSecret": "mlflow"}},
    },
    "leader-election-ha": {
        "replicaCount": 2,
        "leaderElection": {"enabled": True},
        "podDisruptionBudget": {"enabled": True},
        "networkPolicy": {"enabled": True, "apiServer": {"cidrs": ["10.0.0.1/32"]}},
    },
}


@dataclass(frozen=True)
class Finding:
    """One check kube-score did not grade OK on one object."""

    target: str
    object: str
    check: str
    grade: str
    comments: tuple[str, ...]

    def __str__(self) -> str:
        detail = "; ".join(self.comments)
        return f"{self.target}: {self.object}: {self.check} ({self.grade}){': ' + detail if detail else ''}"


@dataclass(frozen=True)
class Declined:
    """A check this project declines, where, and why (tools/kube-score.yaml)."""

    check: str
    targets: tuple[str, ...]
    reason: str

    def covers(self, finding: Finding) -> bool:
        return finding.check == self.check and any(
            fnmatch.fnmatchcase(finding.target, t) for t in self.targets
        )


@dataclass(frozen=True)
class LintConfig:
    flags: tuple[str, ...]
    declined: tuple[Declined, ...]

    def is_declined(self, finding: Finding) -> bool:
        return any(d.covers(finding) for d in self.declined)


def load_config(path: Path = DECLINED_FILE) -> LintConfig:
    raw = yaml.safe_load(path.read_text())
    declined = []
    for entry in raw.get("declined", []):
        if not entry.get("reason", "").strip():
            raise ValueError(f"{path}: declined check {entry.get('check')!r} has no reason")
        declined.append(Declined(entry["check"], tuple(entry["targets"]), entry["reason"]))
    flags = []
    for entry in raw.get("flags", []):
        if not entry.get("reason", "").strip():
            raise ValueError(f"{path}: flag {entry.get('flag')!r} has no reason")
        flags.append(entry["flag"])
    return LintConfig(tuple(flags), tuple(declined))


# --- targets ----------------------------------------------------------------------------------
def chart_targets(bin_dir: Path, only: str | None = None) -> dict[str, list[Manifest]]:
    out: dict[str, list[Manifest]] = {}
    with tempfile.TemporaryDirectory(prefix="rft-kube-score-") as tmp:
        for name, values in CHART_VALUE_SETS.items():
            if only is not None and name != only:
                continue
            values_path = Path(tmp) / f"{name}.json"
            values_path.write_text(json.dumps(values))
            text = subprocess.run(
                [
                    str(bin_dir / "helm"),
                    "template",
                    "rft-operator",
                    str(CHART),
                    "--namespace",
                    "rft-system",
                    "--kube-version",
                    KUBE_VERSION,
                    "-f",
                    str(values_path),
                ],
                capture_output=True,
                text=True,
                check=True,
                timeout=300,
            ).stdout
            out[f"chart/{name}"] = [d for d in yaml.safe_load_all(text) if d]
    return out


def _pod_labels(doc: Manifest) -> Mapping[str, str]:
    template = doc.get("spec", {}).get("template", {})
    labels: Mapping[str, str] = template.get("metadata", {}).get("labels", {})
    return labels


def _matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against `labels`."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        if not {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels.get(key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[operator]:
            return False
    return True


def _selecting(policies: Sequence[Manifest], docs: Sequence[Manifest]) -> list[Manifest]:
    """The policies whose podSelector matches a pod template of `docs`."""
    pods = [_pod_labels(d) for d in docs if _pod_labels(d)]
    return [p for p in policies if any(_matches(p["spec"]["podSelector"], labels) for labels in pods)]


# --- kube-score -------------------------------------------------------------------------------
def score(
    bin_dir: Path, target: str, docs: Sequence[Manifest], flags: Iterable[str], directory: Path
) -> list[Any]:
    """kube-score's JSON (v2) for these objects, one file per target (so a Service meets its pods)."""
    path = directory / (target.replace("/", "_") + ".yaml")
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    result = subprocess.run(
        [
            str(bin_dir / "kube-score"),
            "score",
            "-o",
            "json",
            "--kubernetes-version",
            "v" + ".".join(KUBE_VERSION.split(".")[:2]),
            *flags,
            str(path),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    # Exit 1 means "some check failed"; anything else, or no JSON, is kube-score failing.
    if result.returncode not in (0, 1) or not result.stdout.strip().startswith("["):
        raise RuntimeError(
            f"kube-score failed on {target} (exit {result.returncode}): {result.stderr.strip()}"
        )
    parsed: list[Any] = json.loads(result.stdout)
    return parsed


def grade_name(grade: int) -> str:
    return GRADE_NAMES.get(grade, "WARNING" if grade < OK else "OK")


def findings_of(target: str, scored: list[Any]) -> tuple[list[Finding], dict[str, int]]:
    counts = {"OK": 0, "WARNING": 0, "CRITICAL": 0}
    findings: list[Finding] = []
    for obj in scored:
        for check in obj["checks"]:
            if check["skipped"]:
                continue
            name = grade_name(check["grade"])
            counts[name] += 1
            if name != "OK":
                comments = tuple(
                    f"{c.get('path', '')} {c.get('summary', '')}".strip() for c in check.get("comments") or []
                )
                findings.append(Finding(target, obj["object_name"], check["check"]["id"], name, comments))
    return findings, counts


def lint(
    targets: Mapping[str, Sequence[Manifest]],
    config: LintConfig,
    bin_dir: Path,
    *,
    keep_dir: Path | None = None,
    report: Callable[[str], None] = print,
    counts_table: bool = False,
) -> list[Finding]:
    """Lint every target; return the findings the config does not decline."""
    failing: list[Finding] = []
    totals = {"OK": 0, "WARNING": 0, "CRITICAL": 0}
    with tempfile.TemporaryDirectory(prefix="rft-kube-score-") as tmp:
        directory = keep_dir or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        for target, docs in targets.items():
            findings, counts = findings_of(target, score(bin_dir, target, docs, config.flags, directory))
            declined = [f for f in findings if config.is_declined(f)]
            failing += [f for f in findings if not config.is_declined(f)]
            for k, v in counts.items():
                totals[k] += v
            if counts_table:
                report(
                    f"{target:32} OK {counts['OK']:3}  WARNING {counts['WARNING']:3}  "
                    f"CRITICAL {counts['CRITICAL']:3}  (declined {len(declined)})"
                )
    if counts_table:
        report(
            f"{'total':32} OK {totals['OK']:3}  WARNING {totals['WARNING']:3}  CRITICAL {totals['CRITICAL']:3}"
        )
    return failing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("files", nargs="*", type=Path, help="manifest files to lint instead of the targets")
    parser.add_argument("--counts", action="store_true", help="print kube-score's counts per target")
    parser.add_argument("--only", choices=["chart", "builders"], help="lint only these targets")
    parser.add_argument("--plain", action="store_true", help="no flags, no declines (kube-score as is)")
    parser.add_argument("--config", type=Path, default=DECLINED_FILE, help="the declined checks")
    parser.add_argument("--write-dir", type=Path, help="keep the rendered YAML here")
    args = parser.parse_args(argv)
    config = LintConfig((), ()) if args.plain else load_config(args.config)
    bin_dir = ensure_binaries()
    targets: dict[str, list[Manifest]] = {}
    if args.files:
        targets["file"] = [d for f in args.files for d in yaml.safe_load_all(f.read_text()) if d]
    else:
        if args.only in (None, "chart"):
            targets.update(chart_targets(bin_dir))
        if args.only in (None, "builders"):
            # Each builder's output meets the workload NetworkPolicies the chart renders into its
            # namespace, as on a cluster where the chart is installed with workloadNetworkPolicy.
            policies = [
                d
                for d in chart_targets(bin_dir, only="workload-network-policy")[
                    "chart/workload-network-policy"
                ]
                if d["kind"] == "NetworkPolicy" and d["metadata"].get("namespace") == WORKLOAD_NAMESPACE
            ]
            targets.update(
                {name: [*docs, *_selecting(policies, docs)] for name, docs in builder_manifests().items()}
            )
    failing = lint(targets, config, bin_dir, keep_dir=args.write_dir, counts_table=args.counts)
    for finding in failing:
        print(f"kube-score: {finding}", file=sys.stderr)
    if failing:
        print(
            f"kube-score: {len(failing)} finding(s) outside the declined checks of "
            f"{args.config.relative_to(REPO_ROOT) if args.config.is_relative_to(REPO_ROOT) else args.config}: "
            "fix them, or decline the check there with a reason",
            file=sys.stderr,
        )
        return 1
    print(f"kube-score: {len(targets)} target(s) clean (declined checks: {args.config.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
