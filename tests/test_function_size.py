"""Every function in ssp_jax/ is at most 80 lines long and takes at most 8 parameters
positionally (parameters after `*` or `*args` are keyword-only and do not count; `self` and
`cls` of methods do not count either)."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
MAX_LINES = 80
MAX_POSITIONAL = 8


def functions(tree: ast.AST):
    """(name, node, is_method) of every function and method, nested ones included."""
    def visit(node: ast.AST, in_class: bool, prefix: str):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield f"{prefix}{child.name}", child, in_class
                yield from visit(child, False, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                yield from visit(child, True, f"{prefix}{child.name}.")
            else:
                yield from visit(child, in_class, prefix)

    yield from visit(tree, False, "")


def positional_count(node: ast.FunctionDef | ast.AsyncFunctionDef, is_method: bool) -> int:
    """Parameters a caller may pass by position (`self` / `cls` of a method left out)."""
    names = [a.arg for a in (*node.args.posonlyargs, *node.args.args)]
    is_static = any(isinstance(d, ast.Name) and d.id == "staticmethod"
                    for d in node.decorator_list)
    if is_method and not is_static and names[:1] in (["self"], ["cls"]):
        names = names[1:]
    return len(names)


def length(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from the `def` (decorators excluded) to the last line of the body."""
    return node.end_lineno - node.lineno + 1


def oversized(source: str, where: str) -> list[str]:
    """One line per function of `source` over MAX_LINES lines or MAX_POSITIONAL parameters."""
    problems = []
    for name, node, is_method in functions(ast.parse(source)):
        lines, positional = length(node), positional_count(node, is_method)
        if lines > MAX_LINES:
            problems.append(f"{where}:{node.lineno} {name}: {lines} lines > {MAX_LINES}")
        if positional > MAX_POSITIONAL:
            problems.append(f"{where}:{node.lineno} {name}: {positional} positional "
                            f"parameters > {MAX_POSITIONAL}")
    return problems


def test_no_function_in_ssp_jax_is_too_long_or_takes_too_many_positional_parameters():
    problems = []
    for path in sorted((ROOT / "ssp_jax").rglob("*.py")):
        problems += oversized(path.read_text(), str(path.relative_to(ROOT)))
    assert problems == []


def test_the_checker_counts_lines_and_positional_parameters_only():
    body = "\n".join(["    x = 0"] * 79)
    source = (f"def long(a):\n{body}\n    return x\n"  # 81 lines
              f"def fits(a):\n{body}\n"  # 80 lines
              "def many(a, b, c, d, e, f, g, h, i):\n    pass\n"
              "def keywords(a, b, c, d, e, f, g, h, *, i, j):\n    pass\n"
              "class C:\n    def method(self, a, b, c, d, e, f, g, h):\n        pass\n"
              "    @staticmethod\n    def static(a, b, c, d, e, f, g, h, i):\n        pass\n")
    assert oversized(source, "m.py") == [
        "m.py:1 long: 81 lines > 80",
        "m.py:162 many: 9 positional parameters > 8",
        "m.py:170 C.static: 9 positional parameters > 8"]
