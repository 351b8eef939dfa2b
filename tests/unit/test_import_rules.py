"""What may import what (docs/architecture.md, "Packages and what may import what"), checked on
the sources: every import statement, at module level or inside a function, followed through the
project's own modules (so the operator importing an `rft` module that imports torch breaks the
operator's rule too). An equivalent of import-linter's forbidden contracts, without a dependency.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Each first-party top-level package and the folder that holds it.
PACKAGES = {
    "rft": REPO / "core" / "rft",
    "rft_operator": REPO / "operator" / "rft_operator",
    "rft_trainer": REPO / "trainer" / "rft_trainer",
    "rft_devcluster": REPO / "tools" / "rft_devcluster",
}
TORCH_SIDE = ("torch", "transformers", "peft", "safetensors", "tokenizers", "accelerate", "rft_trainer")
BUCKET_CLIENTS = ("boto3", "botocore", "google.cloud", "rft.storage")
# What the innermost layer (the API models and the pod contracts) may use besides the standard library.
CORE_THIRD_PARTY = ("pydantic", "pydantic_core", "annotated_types", "yaml")


@dataclass(frozen=True)
class Rule:
    """Modules under `source` must not reach (directly or through first-party modules) any module
    under one of `forbidden`; with `only`, they may reach nothing but `only` and the standard library."""

    name: str
    source: str
    forbidden: tuple[str, ...] = ()
    only: tuple[str, ...] | None = None


RULES = [
    Rule(
        "the operator imports no torch-side code, no bucket client, no tooling",
        "rft_operator",
        forbidden=(*TORCH_SIDE, *BUCKET_CLIENTS, "rft_devcluster"),
    ),
    Rule(
        "the trainer imports no operator, no Kopf, no tooling",
        "rft_trainer",
        forbidden=("rft_operator", "kopf", "rft_devcluster"),
    ),
    Rule(
        "the shared core imports neither the operator nor the trainer (nor torch, nor Kopf)",
        "rft",
        forbidden=("rft_operator", "kopf", "rft_devcluster", *TORCH_SIDE),
    ),
    Rule("the API models stand alone", "rft.api", only=("rft.api", *CORE_THIRD_PARTY)),
    Rule(
        "the pod contracts need only the API models",
        "rft.contracts",
        only=("rft.api", "rft.contracts", *CORE_THIRD_PARTY),
    ),
]


def _under(module: str, prefixes: Iterable[str]) -> str | None:
    for prefix in prefixes:
        if module == prefix or module.startswith(prefix + "."):
            return prefix
    return None


def _runtime_nodes(tree: ast.AST) -> Iterable[ast.AST]:
    """The nodes that run: all but the bodies of `if TYPE_CHECKING:` blocks."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in {"TYPE_CHECKING", "typing.TYPE_CHECKING"}:
            for other in node.orelse:
                yield other
                yield from _runtime_nodes(other)
            continue
        yield node
        yield from _runtime_nodes(node)


def _with_parents(module: str) -> set[str]:
    """Importing `a.b.c` runs `a` and `a.b` first."""
    parts = module.split(".")
    return {".".join(parts[:end]) for end in range(1, len(parts) + 1)}


def module_imports(packages: Mapping[str, Path]) -> dict[str, set[str]]:
    """Every first-party module and the modules its import statements name (relative ones resolved,
    parent packages included, `if TYPE_CHECKING:` blocks left out: they never run)."""
    graph: dict[str, set[str]] = {}
    for top, folder in packages.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [top, *path.relative_to(folder).with_suffix("").parts]
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            name = ".".join(parts)
            imported: set[str] = set()
            for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    imported.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom):
                    if node.level:
                        base = parts if is_package else parts[:-1]
                        base = base[: len(base) - (node.level - 1)]
                        module = ".".join([*base, *([node.module] if node.module else [])])
                    else:
                        module = node.module or ""
                    imported.add(module)
                    # `from package import module` imports the module too.
                    imported.update(f"{module}.{alias.name}" for alias in node.names)
            graph[name] = {parent for module in imported for parent in _with_parents(module)}
    return graph


def violations(rule: Rule, graph: Mapping[str, set[str]]) -> list[str]:
    """`importer -> imported` for each import that breaks `rule`, following first-party modules."""
    found = []
    seen: set[str] = set()
    queue = [module for module in graph if _under(module, [rule.source])]
    while queue:
        importer = queue.pop()
        if importer in seen:
            continue
        seen.add(importer)
        for imported in sorted(graph[importer]):
            if rule.forbidden and _under(imported, rule.forbidden):
                found.append(f"{importer} -> {imported}")
            if rule.only is not None:
                top = imported.split(".")[0]
                # A parent package of an allowed one runs too (its __init__ is followed like any module).
                parent = any(allowed.startswith(imported + ".") for allowed in rule.only)
                if top not in sys.stdlib_module_names and not parent and not _under(imported, rule.only):
                    found.append(f"{importer} -> {imported}")
            if imported in graph:
                queue.append(imported)
    return sorted(set(found))


GRAPH = module_imports(PACKAGES)


@pytest.mark.parametrize("rule", RULES, ids=[rule.source for rule in RULES])
def test_import_rule(rule: Rule) -> None:
    assert violations(rule, GRAPH) == [], rule.name


def test_the_graph_holds_every_package() -> None:
    tops = {name.split(".")[0] for name in GRAPH}
    assert tops == set(PACKAGES)
    assert "rft_operator.builders.jobs" in GRAPH
    assert "rft.contracts.trainer_config" in GRAPH["rft_operator.builders.jobs"]


@pytest.mark.parametrize(
    ("importer", "source", "rule"),
    [
        ("rft_operator.builders.jobs", "import torch\n", "rft_operator"),
        ("rft_operator.builders.jobs", "from rft_trainer.loss import policy_loss\n", "rft_operator"),
        ("rft_operator.reconcilers.step", "def lazy():\n    import transformers\n", "rft_operator"),
        ("rft_operator.builders.jobs", "from rft.storage import objects\n", "rft_operator"),
        ("rft_trainer.loop", "from rft_operator import naming\n", "rft_trainer"),
        ("rft.api.common", "from rft_operator.config import OperatorConfig\n", "rft"),
        ("rft.sdk.llm", "import rft_trainer\n", "rft"),
        ("rft.contracts.trainer_config", "import kubernetes\n", "rft.contracts"),
        ("rft.api.model", "from rft.sdk import LLM\n", "rft.api"),
    ],
)
def test_a_forbidden_import_is_caught(importer: str, source: str, rule: str, tmp_path: Path) -> None:
    """The check fails when the operator imports torch-side code, the trainer the operator, ...:
    the real sources, with one module re-read from a copy that has one import more."""
    top, *rest = importer.split(".")
    original = PACKAGES[top].joinpath(*rest).with_suffix(".py")
    if not original.exists():
        original = PACKAGES[top].joinpath(*rest, "__init__.py")
    copy = tmp_path / top / original.relative_to(PACKAGES[top])
    copy.parent.mkdir(parents=True)
    copy.write_text(original.read_text() + "\n" + source)
    graph = {**GRAPH, **module_imports({top: tmp_path / top})}
    assert graph.keys() == GRAPH.keys()
    broken = next(r for r in RULES if r.source == rule)
    assert violations(broken, graph), source
    # The same rule holds on the unchanged sources (test_import_rule): the added import broke it.
    assert violations(broken, GRAPH) == []
