"""The Argo CD Applications of argocd/applications/ (shown in docs/argocd.md): sync waves put
the CRDs before the operator before the resources, the paths exist, the chart accepts the values,
and the status the operator owns is ignored in diffs."""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.argocd.sandbox import KINDS, REPO
from tests.chart.helm import template_text

APPS_DIR = REPO / "argocd" / "applications"


def _app(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((APPS_DIR / name).read_text())
    assert doc["apiVersion"] == "argoproj.io/v1alpha1"
    assert doc["kind"] == "Application"
    return doc


def _wave(app: dict[str, Any]) -> int:
    return int(app["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-wave", "0"))


def _children() -> list[str]:
    parent = _app("app-of-apps.yaml")
    pattern = parent["spec"]["source"]["directory"]["include"]
    names = re.fullmatch(r"\{(.+)\}\.yaml", pattern)
    assert names is not None
    return [f"{n}.yaml" for n in names.group(1).split(",")]


def test_parent_includes_the_three_children_and_not_itself() -> None:
    children = _children()
    assert sorted(children) == sorted(p.name for p in APPS_DIR.glob("*.yaml") if p.name != "app-of-apps.yaml")
    assert "app-of-apps.yaml" not in children
    assert _app("app-of-apps.yaml")["spec"]["source"]["path"] == "argocd/applications"


def test_sync_waves_order_crds_operator_resources() -> None:
    crds, operator, workloads = (_app(n) for n in ("00-crds.yaml", "10-operator.yaml", "20-workloads.yaml"))
    assert _wave(crds) < _wave(operator) < _wave(workloads)
    assert crds["spec"]["source"]["path"] == "crds"
    assert operator["spec"]["source"]["path"] == "charts/rft-operator"
    for app in (crds, operator, workloads):
        assert (REPO / app["spec"]["source"]["path"]).is_dir()


def test_crds_are_applied_server_side_and_never_pruned() -> None:
    crds = _app("00-crds.yaml")
    assert "ServerSideApply=true" in crds["spec"]["syncPolicy"]["syncOptions"]
    assert crds["spec"]["syncPolicy"]["automated"]["prune"] is False
    assert "finalizers" not in crds["metadata"]


def test_operator_app_leaves_crds_to_the_crds_app_and_its_values_fit_the_chart() -> None:
    helm = _app("10-operator.yaml")["spec"]["source"]["helm"]
    assert helm["skipCrds"] is True
    rendered = template_text(helm["valuesObject"], release=helm["releaseName"]).stdout
    assert "kind: Deployment" in rendered
    assert "kind: CustomResourceDefinition" not in rendered


def test_workloads_ignore_the_status_of_every_kind() -> None:
    workloads = _app("20-workloads.yaml")
    ignored = {
        (d["group"], d["kind"])
        for d in workloads["spec"]["ignoreDifferences"]
        if d.get("jsonPointers") == ["/status"]
    }
    assert ignored == {("rft-operator.io", kind) for kind in KINDS}
    assert "RespectIgnoreDifferences=true" in workloads["spec"]["syncPolicy"]["syncOptions"]


def test_docs_show_these_applications_verbatim() -> None:
    """Every Application in docs/argocd.md is one of these files, word for word."""
    docs = (REPO / "docs" / "argocd.md").read_text()
    shown = {}
    for block in re.findall(r"```yaml\n(.*?)```", docs, flags=re.DOTALL):
        first = block.splitlines()[0]
        if first.startswith("# argocd/applications/"):
            shown[first.removeprefix("# ")] = block.split("\n", 1)[1]
    assert sorted(shown) == sorted(f"argocd/applications/{p.name}" for p in APPS_DIR.glob("*.yaml"))
    for path, text in shown.items():
        assert (REPO / path).read_text() == text, path
    assert "argocd/argocd-cm.yaml" in docs
