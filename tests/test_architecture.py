"""The dependency direction of DESIGN.md: predictors, feeds and reports import no other project package;
inside engine/ the modules import each other without a cycle, and never from inside a function
(except optional heavy third-party libraries)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = {"engine", "feeds", "predictors", "reports", "strategies"}
ALLOWED = {"predictors": {"predictors"}, "feeds": {"feeds"}, "reports": {"reports"}}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & PROJECT


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_itself(package):
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) - ALLOWED[package])
        for path in (ROOT / package).rglob("*.py")
        if imported_packages(path) - ALLOWED[package]
    }
    assert offenders == {}, f"{package}/ must not import other project packages: {offenders}"


# -- inside engine/: a graph without cycles, and no imports hidden in functions -------------------
ENGINE = ROOT / "engine"
#: Third-party libraries heavy enough (or optional enough) to import inside the one function that
#: needs them. Never a project module, never the standard library.
HEAVY_LIBRARIES = {"torch", "transformers", "peft", "chronos", "ray", "matplotlib", "quantstats", "tqdm", "scipy",
                   "apscheduler", "lightgbm", "neuralforecast", "pytorch_lightning", "optuna", "mlflow"}
#: The command line loads each command's modules when that command runs, so `--help`, `predictors`,
#: `ledger` and input errors answer in ~0.6 s rather than the ~2 s the backtest path costs to import.
#: Only these command entry points may do so; the cycle test above still counts their imports.
LAZY_COMMAND_IMPORTS = {"engine/cli.py": {"cmd_backtest", "_backtest_universe", "cmd_compare", "cmd_ledger", "cmd_lookahead", "cmd_download",
                                          "cmd_paper", "cmd_train", "cmd_sweep"},
                        "engine/paper/cli.py": {"_run_paper"},
                        # `import engine` stays light: the Python API (engine.api, the whole backtest path) loads
                        # on the first `from engine import backtest` (PEP 562 module __getattr__)
                        "engine/__init__.py": {"__getattr__"},
                        # reports.skill imports scipy: the lookahead's fresh re-fit processes import
                        # engine.training.fold_models and never score, so they start in ~1.3 s instead of ~2.5 s
                        "engine/training/fold_models.py": {"validation_pinball"}}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(node: ast.AST, package: str) -> list[str]:
    """Fully qualified modules one import statement names (``from a import b`` names ``a.b`` when that is a module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
        return [base] + [f"{base}.{a.name}" for a in node.names]
    return []


def engine_import_graph() -> dict[str, set[str]]:
    """engine module -> engine modules it imports, at module level, in functions, or under TYPE_CHECKING."""
    files = {_module_name(p): p for p in ENGINE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets |= {m for m in _imported_modules(node, package) if m in files and m != name}
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle ``[a, b, ..., a]`` of ``graph``, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_engine_modules_import_each_other_without_cycles():
    cycle = find_cycle(engine_import_graph())
    assert cycle is None, "import cycle inside engine/: " + " -> ".join(cycle)


def test_cycle_finder_names_a_cycle_and_passes_a_layered_graph():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"cli": {"backtest", "compare"}, "compare": {"pipeline"}, "backtest": {"pipeline"},
                       "pipeline": set()}) is None


def test_engine_imports_inside_functions_are_only_heavy_libraries():
    hidden = []
    for path in sorted(ENGINE.rglob("*.py")):
        for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if fn.name in LAZY_COMMAND_IMPORTS.get(str(path.relative_to(ROOT)), ()):
                continue
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or "."]
                    hidden += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names
                               if n.split(".")[0] not in HEAVY_LIBRARIES]
    assert hidden == [], "imports inside functions (move them to the top of the module): " + ", ".join(hidden)


def test_the_command_line_starts_without_the_backtest_path():
    """`python -m engine --help` / `predictors` / an input error import no backtrader, scipy or ccxt."""
    import subprocess
    import sys

    code = ("import sys, engine.cli; heavy = sorted({'backtrader', 'scipy', 'ccxt', 'torch'} & "
            "{m.split('.')[0] for m in sys.modules}); print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"engine.cli imports {out.stdout.strip()} at start-up"


# -- engine/'s sub-packages are layers: each imports only from the layers below it ---------------
#: engine's sub-packages, bottom first (docs/architecture.md). A module may import its own package and
#: any package of a LOWER rank; equal ranks (siblings) do not import each other. Modules directly under
#: engine/ (cli, api, __main__, __init__) are the top. Annotation-only imports count too.
LAYERS = {"core": 0, "backtesting": 1, "forecasting": 1, "training": 2, "judging": 3, "runs": 4,
          "sweeps": 5, "paper": 5}
TOP = max(LAYERS.values()) + 1


def layer_of(module: str) -> tuple[str, int]:
    """``engine.runs.pipeline`` -> ``("runs", 4)``; a module directly under engine/ -> its name and the top rank."""
    parts = module.split(".")
    if len(parts) >= 3 or (len(parts) == 2 and parts[1] in LAYERS):
        return parts[1], LAYERS[parts[1]]
    return parts[-1], TOP


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """``"a -> b"`` for every import of ``graph`` that goes to the same rank in another package, or up."""
    found = []
    for module, targets in graph.items():
        package, rank = layer_of(module)
        for target in sorted(targets):
            other, other_rank = layer_of(target)
            if other != package and other_rank >= rank and other_rank != TOP:
                found.append(f"{module} -> {target}")
            elif other_rank == TOP and rank != TOP:
                found.append(f"{module} -> {target}")
    return found


def test_every_engine_module_belongs_to_a_layer():
    loose = [m for m in engine_import_graph() if m.count(".") >= 1 and m.split(".")[1] not in LAYERS
             and m.split(".")[1] not in {"cli", "api", "__main__"}]
    assert loose == [], f"engine modules outside the layers of LAYERS (add the package, with its rank): {loose}"


def test_engine_packages_import_only_downward():
    up = upward_imports(engine_import_graph())
    assert up == [], "imports that go up or sideways between engine's layers: " + ", ".join(up)


def test_layer_rule_catches_an_upward_and_a_sideways_import():
    graph = {"engine.core.config": {"engine.runs.pipeline"}, "engine.sweeps.search": {"engine.paper.runner"},
             "engine.runs.pipeline": {"engine.core.config", "engine.judging.verdict", "engine.runs.compare"},
             "engine.judging.verdict": {"engine.cli"}, "engine.cli": {"engine.runs.pipeline"}}
    assert upward_imports(graph) == ["engine.core.config -> engine.runs.pipeline",
                                     "engine.sweeps.search -> engine.paper.runner",
                                     "engine.judging.verdict -> engine.cli"]


def test_every_engine_package_is_a_regular_package_in_git():
    """A folder of modules without a tracked __init__.py is a namespace package: it imports from a
    checkout but `pip install .` (setuptools' find) leaves it out, and a .gitignore pattern can hide it."""
    import subprocess

    tracked = set(subprocess.run(["git", "ls-files", "engine"], cwd=ROOT, capture_output=True, text=True,
                                 check=True).stdout.split())
    folders = {str(Path(f).parent) for f in tracked if f.endswith(".py")}
    missing = sorted(f for f in folders if f"{f}/__init__.py" not in tracked)
    assert missing == [], f"engine folders without a tracked __init__.py: {missing}"
