"""The import graph of ssp_jax reads top-down: no import cycle, no arrow from a lower layer to
a higher one, and no library module importing a command-line entry point.

The graph is built with `ast` from every `import` in ssp_jax/ (module level and inside
functions; imports under `if TYPE_CHECKING:` are for annotations only and are left out).
`from pkg import name` is an arrow to `pkg.name` when that is a module, else to `pkg`.
"""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = "ssp_jax"

# bottom to top; a module belongs to the layer of its longest matching prefix, and may import
# its own layer and the layers below it
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("ssp_jax", "ssp_jax.paths", "ssp_jax.cli", "ssp_jax.sharding",
              "ssp_jax.distributed", "ssp_jax.metrics")),
    ("config", ("ssp_jax.default_config", "ssp_jax.sections", "ssp_jax.config")),
    ("data", ("ssp_jax.data",)),
    ("models", ("ssp_jax.models",)),
    ("rollout", ("ssp_jax.rollout",)),
    ("judge", ("ssp_jax.judge",)),
    ("rl", ("ssp_jax.rl",)),
    ("replay", ("ssp_jax.replay",)),
    ("game", ("ssp_jax.game", "ssp_jax.roles", "ssp_jax.selfplay", "ssp_jax.collapse",
              "ssp_jax.diversity")),
    ("run state", ("ssp_jax.checkpoint", "ssp_jax.resume")),
    ("loop", ("ssp_jax.train", "ssp_jax.sft", "ssp_jax.memory")),
    ("evaluation and serving", ("ssp_jax.evaluate", "ssp_jax.serve")),
    ("start-up checks", ("ssp_jax.preflight",)),
    ("entry points", ("ssp_jax.main", "ssp_jax.experiment", "ssp_jax.export", "ssp_jax.generate",
                      "ssp_jax.evaluate.__main__", "ssp_jax.serve.__main__")),
]
# commands: nothing imports them
ENTRY_POINTS = {"ssp_jax.main", "ssp_jax.experiment", "ssp_jax.export", "ssp_jax.generate",
                "ssp_jax.evaluate.__main__", "ssp_jax.serve.__main__"}
# library modules that also run as a command (`python -m`): importable like any other
LIBRARIES_WITH_A_COMMAND = {"ssp_jax.data.fetch", "ssp_jax.memory", "ssp_jax.judge.on_topic",
                            "ssp_jax.judge.withholding_train"}


def module_files() -> dict[str, pathlib.Path]:
    """Dotted module name -> file, for every module of the package (packages by __init__)."""
    out = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported_names(tree: ast.AST) -> list[tuple[str, list[str]]]:
    """(module, imported names) of every import statement outside `if TYPE_CHECKING:`."""
    found: list[tuple[str, list[str]]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, [alias.name for alias in node.names]))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports."""
    modules = module_files()

    def owner(name: str) -> str:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for name, path in modules.items():
        targets = set()
        for module, names in _imported_names(ast.parse(path.read_text(), str(path))):
            if module.split(".")[0] != PACKAGE:
                continue
            submodules = {f"{module}.{n}" for n in names} & modules.keys()
            targets |= submodules or {owner(module)}
            if len(submodules) < len(names):  # names that are not modules come from `module`
                targets.add(owner(module))
        graph[name] = targets - {name}
    return graph


def layer_of(module: str) -> int:
    """Index in LAYERS of the longest prefix that names `module` or a package above it."""
    best, best_len = -1, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = i, len(prefix)
    return best


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def has_main_guard(path: pathlib.Path) -> bool:
    return any(isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)
               for node in ast.parse(path.read_text()).body)


def test_every_module_has_a_layer():
    assert [m for m in module_files() if layer_of(m) < 0] == []


def test_no_modules_import_each_other():
    assert cycles(import_graph()) == []


def test_no_import_runs_up_the_layers():
    upward = sorted(f"{a} ({LAYERS[layer_of(a)][0]}) -> {b} ({LAYERS[layer_of(b)][0]})"
                    for a, targets in import_graph().items() for b in targets
                    if layer_of(b) > layer_of(a))
    assert upward == []


def test_library_modules_never_import_an_entry_point():
    imports = sorted(f"{a} -> {b}" for a, targets in import_graph().items() for b in targets
                     if b in ENTRY_POINTS)
    assert imports == []


def test_every_command_module_is_declared():
    commands = {m for m, path in module_files().items()
                if path.name == "__main__.py" or has_main_guard(path)}
    assert commands == ENTRY_POINTS | LIBRARIES_WITH_A_COMMAND


def test_the_checker_sees_cycles_upward_arrows_and_function_level_imports():
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                     "    from ssp_jax.train import Trainer\n"
                     "def f():\n    from ssp_jax.models import lora, load\n")
    assert _imported_names(tree) == [("typing", ["TYPE_CHECKING"]),
                                     ("ssp_jax.models", ["lora", "load"])]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer_of("ssp_jax.evaluate.__main__") > layer_of("ssp_jax.evaluate.runner") \
        > layer_of("ssp_jax.train") > layer_of("ssp_jax.models.lora") > layer_of("ssp_jax.paths")
