"""Which module may import which (docs/ARCHITECTURE.md, "Who imports whom"), read from the source
with ``ast``, so that a rule is broken in a test before it is broken in a traceback:

- the runner keeps the books: no stage module imports ``entitynet.pipeline``; only the CLI, the
  demo and the run's readers (its summary, the report) do (besides the runner itself);
- the package's modules import each other without a cycle, lazy imports inside functions
  included (an import only for type checking is not one);
- ``builders/`` is the dataset's contract (features, splits, domains, lineage ranks, citation, the
  reader of the prepared rows): it imports no module of the build stage, which imports it; the
  build writes the prepared rows (``build.rows``, run by the build stage only) and fills the
  lineage (``build.lineage``, used by ``build.rows`` only), everyone else reads the contract;
- ``hub_cards/`` imports only ``builders/``, the layout module, ``rundir`` (atomic writes, package
  versions) and ``train_config`` (the torch-free schema of the training a model card describes)
  from the package: never a stage.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# setup.cfg's package_dir: the checkout's top-level folders install under the entitynet namespace
PACKAGES = {"entitynet": "entitynet", "training": "entitynet.training", "builders": "entitynet.builders",
            "hub_cards": "entitynet.hub_cards"}
MAY_IMPORT_THE_RUNNER = {"entitynet.cli", "entitynet.demo", "entitynet.summary", "entitynet.pipeline",
                         "entitynet.report.gather"}  # the report reads the stage table, as the summary does


def modules() -> dict[str, Path]:
    """Every module of the package, by its installed name."""
    found = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports when it runs (at the top or inside a function)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _type_checking_only(node):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in known else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {module for module in found if module in known and module != name}


def graph() -> dict[str, set[str]]:
    every = modules()
    return {name: imports(name, path, set(every)) for name, path in every.items()}


def test_the_scan_sees_the_imports_it_judges():
    edges = graph()
    assert "entitynet.pipeline" in edges["entitynet.cli"]
    assert "entitynet.rundir" in edges["entitynet.kg.stage"]
    assert "entitynet.train_config" in edges["entitynet.training.stage"]  # an aliased import counts too


def test_no_stage_imports_the_runner():
    from entitynet import pipeline

    stages = {entry.module for entry in pipeline.STAGES + pipeline.DOORS}
    edges = graph()
    importers = {name for name, imported in edges.items() if "entitynet.pipeline" in imported}
    assert not importers & stages, importers & stages
    assert importers <= MAY_IMPORT_THE_RUNNER, importers - MAY_IMPORT_THE_RUNNER


def test_no_import_cycle():
    edges = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(name: str) -> None:
        state[name] = 1
        path.append(name)
        for other in sorted(edges[name]):
            if state.get(other) == 1:
                cycles.append(path[path.index(other):] + [other])
            elif other not in state:
                walk(other)
        path.pop()
        state[name] = 2

    for name in sorted(edges):
        if name not in state:
            walk(name)
    assert not cycles, "\n".join(" -> ".join(cycle) for cycle in cycles)


def _package_imports(name: str, edges: dict[str, set[str]]) -> set[str]:
    """What the modules of package ``name`` import from outside it."""
    inside = {module for module in edges if module == name or module.startswith(name + ".")}
    return {other for module in inside for other in edges[module]} - inside


def test_builders_are_the_contract_the_build_writes_to():
    edges = graph()
    found = _package_imports("entitynet.builders", edges)
    assert found <= {"entitynet.records", "entitynet.tables", "entitynet.layout"}, found
    readers = {name: {other for other in imported if other in ("entitynet.build.rows", "entitynet.build.lineage")}
               for name, imported in edges.items()}
    assert {name for name, found in readers.items() if "entitynet.build.rows" in found} == {"entitynet.build.stage"}
    assert {name for name, found in readers.items() if "entitynet.build.lineage" in found} == {"entitynet.build.rows"}


def test_cards_read_the_contract_not_the_stages():
    found = _package_imports("entitynet.hub_cards", graph())
    allowed = {"entitynet.layout", "entitynet.rundir", "entitynet.train_config"}
    assert found <= allowed | {name for name in graph() if name.startswith("entitynet.builders")}, found

