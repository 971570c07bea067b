"""training/'s layers, read from the source with an AST scan (imports inside functions count too):
the library (every module but the two below, evaluation/ and convert/ included) never imports the
trainer (train.py) or the train stage (stage.py); only the train stage imports the trainer; no
module imports the train stage (the pipeline finds it by name); and the modules of training/ import
one another without a cycle. docs/ARCHITECTURE.md ("training/'s layers") states the rule."""

from __future__ import annotations

import ast
import configparser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "entitynet.training"
TRAINER = f"{PACKAGE}.train"
TRAIN_STAGE = f"{PACKAGE}.stage"


def package_folder(package: str) -> Path:
    """The folder setup.cfg installs ``package`` from (training/ installs as entitynet.training)."""
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    mapping = dict(line.split("=", 1) for line in setup["options"]["package_dir"].strip().splitlines())
    return ROOT / {name.strip(): folder.strip() for name, folder in mapping.items()}[package]


def module_name(path: Path, folder: Path, package: str) -> str:
    parts = list(path.relative_to(folder).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def imported_names(source: str, module: str, is_package: bool, known: set[str] | None = None) -> set[str]:
    """The dotted names ``module`` imports, relative imports resolved: ``import X`` gives X;
    ``from X import y`` gives X.y when it is one of the ``known`` modules, else X (without
    ``known``, both)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                names.update([base, submodule] if known is None else [submodule if submodule in known else base])
    return names


def import_graph() -> dict[str, set[str]]:
    """Each module of training/ -> the modules of training/ it imports (a package's ``__init__``
    only when it is imported itself, not as the parent of a submodule)."""
    folder = package_folder(PACKAGE)
    sources = {module_name(path, folder, PACKAGE): path for path in sorted(folder.rglob("*.py"))}
    graph = {}
    for module, path in sources.items():
        names = imported_names(path.read_text(), module, path.name == "__init__.py", set(sources))
        graph[module] = {name for name in names if name in sources and name != module}
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for name in graph[todo.pop()] - seen:
            seen.add(name)
            todo.append(name)
    return seen


def a_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for name in sorted(graph[module]):
            if state.get(name) == 1:
                return path[path.index(name):] + [name]
            if name not in state and (found := visit(name)):
                return found
        state[module] = 2
        path.pop()
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return None


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    found = import_graph()
    # the scan sees the package: a rule over an empty or misplaced tree would pass for nothing
    assert {TRAINER, TRAIN_STAGE, f"{PACKAGE}.evaluation.stage", f"{PACKAGE}.convert.load"} <= set(found)
    assert f"{PACKAGE}.evaluation.api" in found[TRAINER] and TRAINER in found[TRAIN_STAGE]
    return found


def test_the_scan_resolves_relative_and_submodule_imports():
    module = f"{PACKAGE}.evaluation.stage"
    assert TRAINER in imported_names("from ..train import eval_rows", module, False)
    assert TRAINER in imported_names("from .. import train as trainer", module, False)
    assert TRAIN_STAGE in imported_names("def f():\n    import entitynet.training.stage\n", module, False)
    assert f"{PACKAGE}.evaluation.api" in imported_names("from .api import evaluate_built_dataset", module, False)
    assert f"{PACKAGE}.evaluation.api" in imported_names("from .api import x", f"{PACKAGE}.evaluation", True)


def test_evaluation_and_convert_never_import_the_trainer_or_the_train_stage(graph):
    for module in sorted(graph):
        if module.startswith((f"{PACKAGE}.evaluation", f"{PACKAGE}.convert")):
            taken = reachable(graph, module) & {TRAINER, TRAIN_STAGE}
            assert not taken, f"{module} imports {sorted(taken)} (directly or through another module of training/)"


def test_only_the_train_stage_imports_the_trainer_and_nothing_imports_the_stage(graph):
    for module, names in sorted(graph.items()):
        assert TRAIN_STAGE not in names, f"{module} imports the train stage; take what it needs from a library module"
        if module != TRAIN_STAGE:
            assert TRAINER not in names, f"{module} imports the trainer; move what it needs into a library module"


def test_the_modules_of_training_import_one_another_without_a_cycle(graph):
    assert a_cycle(graph) is None, f"import cycle: {' -> '.join(a_cycle(graph) or [])}"


def test_the_train_stages_line_names_the_wise_ft_ensembles_and_force_discards_only_what_the_trainer_wrote(tmp_path):
    """The trainer's wise_ft.alphas writes RUN/wise-ft, model.lora.save_adapter RUN/adapter: `entitynet
    run --force` retrains, so they go with the checkpoints, but only when they hold nothing else and
    the ensembles are not the model the finetune starts from (--force removes only what it wrote)."""
    from types import SimpleNamespace

    from entitynet import layout
    from entitynet.rundir import RunDir
    from entitynet.training import stage

    line = stage.summary({"steps": 5, "loss_first": 2.0, "loss_last": 1.0, "model": "model",
                          "wise_ft": {"0.5": 0.4123, "1": None}})
    assert line.endswith("; WiSE-FT top-1: alpha 0.5 0.412, alpha 1 -")
    assert "WiSE-FT" not in stage.summary({"steps": 5, "model": "model", "wise_ft": {}})

    def made(run: RunDir) -> None:
        (run.path(layout.WISE_FT) / "alpha-0.5").mkdir(parents=True)
        (run.path(layout.WISE_FT) / "wise_ft.json").write_text("{}")
        run.path(layout.ADAPTER).mkdir()
        (run.path(layout.ADAPTER) / "adapter_config.json").write_text("{}")
        (run.path(layout.MODEL)).mkdir()

    def config(init_from: str | None = None) -> SimpleNamespace:
        return SimpleNamespace(train=SimpleNamespace(model=SimpleNamespace(init_from=init_from)))

    run = RunDir(tmp_path / "own")
    made(run)
    stage.discard(config(), run)  # type: ignore[arg-type]  (discard reads config.train.model.init_from)
    assert not run.path(layout.WISE_FT).exists() and not run.path(layout.ADAPTER).exists()
    assert run.path(layout.MODEL).exists()  # replaced by the new model, not removed up front
    # a file of the user's in either folder, or a finetune that starts from an ensemble: kept
    run = RunDir(tmp_path / "mixed")
    made(run)
    (run.path(layout.WISE_FT) / "notes.txt").write_text("mine")
    (run.path(layout.ADAPTER) / "notes.txt").write_text("mine")
    stage.discard(config(), run)  # type: ignore[arg-type]
    assert (run.path(layout.WISE_FT) / "notes.txt").exists() and (run.path(layout.ADAPTER) / "notes.txt").exists()
    run = RunDir(tmp_path / "start")
    made(run)
    stage.discard(config(str(run.path(layout.WISE_FT) / "alpha-0.5")), run)  # type: ignore[arg-type]
    assert (run.path(layout.WISE_FT) / "alpha-0.5").is_dir()
