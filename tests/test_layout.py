"""The package's layering, read from every module's imports with `ast` (nothing is imported).

- No import cycle between modules, counting imports inside functions too: a lazy import is
  still a dependency, it only moves the failure to run time.
- The paper's core (flat modules at the top) imports only the core: never a subpackage, a
  command or absl.
- Subpackages never import a command; no two subpackages import each other, directly or
  through others.
- The package's __init__ is the public API, on top of the library: it re-exports from the core
  and the subpackages and imports no command.
- The command line (the `cli` package and the command modules) sits on top of everything.
"""
import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "aalp_tf"
CORE = {"config", "registry", "errors", "files", "layers", "models", "losses", "attacks",
        "methods", "trainer", "signatures", "distribution", "adversaries", "awp", "schedules",
        "overfitting", "rules", "paper", "model_inputs"}
API = "aalp_tf"  # the package's __init__
COMMANDS = {"cli", "train", "evaluate", "tune", "analyze", "export", "compare"}


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def all_modules() -> dict:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: pathlib.Path, known: set) -> set:
    """The aalp_tf modules `path` imports anywhere in its body (functions included).

    `from aalp_tf.pkg import name` counts as importing aalp_tf.pkg.name when that is a module,
    else aalp_tf.pkg itself.
    """
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] in ("aalp_tf", "absl")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                node.module.split(".")[0] in ("aalp_tf", "absl"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in known else node.module)
    return found


def graph() -> dict:
    modules = all_modules()
    known = set(modules)
    return {name: imports_of(path, known) for name, path in modules.items()}


def short(name: str) -> str:
    return name.split(".", 1)[1] if "." in name else name


def layer(name: str) -> str:
    """api, core, command, or the subpackage's name."""
    parts = name.split(".")
    if name == API:
        return "api"
    if len(parts) == 2 and parts[1] in CORE:
        return "core"
    if parts[1] in COMMANDS:  # a command module, or a module of the cli package
        return "command"
    if parts[-1] == "__main__":
        return "command"
    return parts[1]


def find_cycle(edges: dict):
    """One cycle as a list of nodes (first == last), or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_graph_sees_the_package():
    edges = graph()
    assert len(edges) > 30
    assert "aalp_tf.losses" in edges["aalp_tf.methods"]
    assert "aalp_tf.data.datasets" in edges["aalp_tf.experiment.training"]


def test_no_module_imports_itself_in_a_circle():
    edges = {name: {n for n in deps if n.startswith("aalp_tf")} for name, deps in graph().items()}
    # A package's __init__ is imported with every module inside it: its own imports count.
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(short(n) for n in cycle)


@pytest.mark.parametrize("name", sorted(n for n in all_modules() if layer(n) == "core"))
def test_the_core_imports_only_the_core(name):
    deps = graph()[name]
    upward = sorted(d for d in deps if d.split(".")[0] == "absl" or
                    (d.startswith("aalp_tf") and layer(d) != "core"))
    assert upward == [], f"{short(name)} imports {', '.join(upward)}"


def test_subpackages_and_the_api_import_no_command():
    edges = graph()
    wrong = sorted(f"{short(name)} -> {short(dep)}" for name, deps in edges.items()
                   if layer(name) not in ("core", "command")
                   for dep in deps if dep.startswith("aalp_tf") and layer(dep) == "command")
    assert wrong == []


def test_subpackages_form_no_circle():
    packages = {}
    for name, deps in graph().items():
        if layer(name) in ("core", "command", "api"):
            continue
        packages.setdefault(layer(name), set()).update(
            layer(d) for d in deps
            if d.startswith("aalp_tf") and layer(d) not in ("core", "command", layer(name)))
    cycle = find_cycle(packages)
    assert cycle is None, "subpackages import each other: " + " -> ".join(cycle)


def test_the_cli_is_a_package_of_the_command_layer():
    assert {"aalp_tf.cli.table", "aalp_tf.cli.configs", "aalp_tf.cli.runner"} <= set(graph())
    assert {layer(n) for n in graph() if n.startswith("aalp_tf.cli")} == {"command"}


def test_nothing_below_the_api_imports_it_and_the_api_imports_the_library():
    edges = graph()
    assert sorted(short(name) for name, deps in edges.items() if API in deps) == []
    assert {"aalp_tf.trainer", "aalp_tf.evaluation.robustness"} <= edges[API]


def test_evaluation_reads_models_without_the_trainer_the_run_folder_or_serving():
    """Evaluation attacks what others wrote (a SavedModel, a model object): it loads them
    itself (evaluation/loading.py) rather than through the code that makes them."""
    wrong = sorted(f"{short(name)} -> {short(dep)}" for name, deps in graph().items()
                   if layer(name) == "evaluation" for dep in deps
                   if dep == "aalp_tf.trainer" or layer(dep) in ("runs", "serving"))
    assert wrong == []

