"""The code a stage runs, derived from its body, and the hash of it that goes into the stage's cache key.

A hand-kept list of modules per stage kind goes stale silently (editing a module nobody listed keeps serving old
results), so the list is read off the source instead, without importing anything (keys stay cheap for `plan`):
- the stage body: the factory in `pipeline/stages.py` that made the stage's `run` closure, and the helpers of that
  module it calls, hashed as functions (`fusebench.pipeline.stages:align`), so editing one body reruns one kind;
- every fusebench module the body imports (also the names it uses from the module's own imports), transitively:
  all imports anywhere in a module count, lazy ones inside functions included, and so do the packages' __init__;
- files shipped beside the code that such a module reads through a module-level path built from `__file__`
  (`TASKS_DIR = Path(__file__).resolve().parents[2] / "tasks"`): the task templates, as `files:tasks`.
"""

from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Callable

from fusebench.errors import FusebenchError

PACKAGE = "fusebench"
ROOT = Path(__file__).resolve().parents[1]        # the fusebench package directory


def _module_file(name: str, root: Path = ROOT) -> Path | None:
    parts = name.split(".")[1:]
    base = root.joinpath(*parts)
    return next((p for p in ([base.with_suffix(".py")] if parts else []) + [base / "__init__.py"] if p.is_file()),
                None)


@lru_cache(maxsize=None)
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def _absolute(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def _imported(module: str, nodes) -> set[str]:
    """fusebench modules named by the import statements among `nodes` (`from a import b`: a, and a.b if a module)."""
    is_package = (_module_file(module) or Path()).name == "__init__.py"
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, node, is_package)
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        out |= {n for n in names if (n == PACKAGE or n.startswith(PACKAGE + ".")) and _module_file(n)}
    return out


def _with_packages(modules: set[str]) -> set[str]:
    """Importing a.b.c runs a/__init__ and a/b/__init__ first."""
    return {".".join(m.split(".")[:i]) for m in modules for i in range(1, m.count(".") + 2)}


@lru_cache(maxsize=None)
def _direct(module: str) -> frozenset[str]:
    """What importing `module` may run: every fusebench import anywhere in it, and the packages above those."""
    return frozenset(_with_packages(_imported(module, ast.walk(_tree(_module_file(module))))))


@lru_cache(maxsize=None)
def _closure(module: str) -> frozenset[str]:
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += _direct(m) - seen
    return frozenset(seen)


class _Uses(ast.NodeVisitor):
    """Names a function's code uses and the imports inside it; annotations are skipped (they run nothing)."""

    def __init__(self):
        self.names: set[str] = set()
        self.imports: list[ast.stmt] = []

    def visit_Name(self, node: ast.Name) -> None:
        self.names.add(node.id)

    def visit_arg(self, node: ast.arg) -> None:
        pass

    def visit_FunctionDef(self, node) -> None:
        for child in [*node.decorator_list, *node.args.defaults, *node.args.kw_defaults, *node.body]:
            if child is not None:
                self.visit(child)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)

    def visit_Import(self, node) -> None:
        self.imports.append(node)

    visit_ImportFrom = visit_Import


@lru_cache(maxsize=None)
def _body_code(module: str, function: str) -> tuple[str, ...]:
    """`module:function` entries for the body and the module's own functions it calls, plus the modules they use."""
    tree = _tree(_module_file(module))
    functions = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    imported = {}  # names the module imports at its top -> the fusebench modules they come from
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                imported[(alias.asname or alias.name).split(".")[0]] = _imported(module, [node])
    bodies, modules, todo = set(), set(), [function]
    while todo:
        name = todo.pop()
        if name in bodies:
            continue
        bodies.add(name)
        uses = _Uses()
        uses.visit(functions[name])
        modules |= _imported(module, uses.imports)
        for used in uses.names:
            modules |= imported.get(used, set())
            if used in functions:
                todo.append(used)
    found = set().union(*(_closure(m) for m in _with_packages(modules))) if modules else set()
    files = {f"files:{d}" for m in found for d in _data_dirs(m)}
    return tuple(sorted({f"{module}:{b}" for b in bodies} | found | files))


def _data_dirs(module: str) -> list[str]:
    """Dirs beside the package a module reads through a module-level `NAME = Path(__file__)...parents[n] / "x"`."""
    out = []
    for node in _tree(_module_file(module)).body:
        if isinstance(node, ast.Assign) and _is_path_expression(node.value):
            path = eval(compile(ast.Expression(node.value), "<path>", "eval"),  # our own source: a path expression
                        {"Path": Path, "__file__": str(_module_file(module))})
            if isinstance(path, Path) and path.is_dir() and path.resolve().parent == ROOT.parent:
                out.append(path.name)
    return out


_PATH_NODES = (ast.Call, ast.Name, ast.Attribute, ast.Subscript, ast.Constant, ast.BinOp, ast.Div, ast.Load)


def _is_path_expression(node: ast.expr) -> bool:
    """`Path(__file__).resolve().parents[2] / "tasks"` and the like: nothing but a path is computed, so it is safe
    to evaluate."""
    nodes = list(ast.walk(node))
    return (all(isinstance(n, _PATH_NODES) for n in nodes)
            and {n.id for n in nodes if isinstance(n, ast.Name)} == {"Path", "__file__"}
            and all(n.attr in ("resolve", "parent", "parents") for n in nodes if isinstance(n, ast.Attribute)))


def stage_code(run: Callable) -> tuple[str, ...]:
    """What a stage's key must cover, read off the function that made `run` (a closure in pipeline/stages.py)."""
    factory = run.__qualname__.split(".<locals>", 1)[0]
    if not run.__module__.startswith(PACKAGE + ".") or "." in factory:
        raise FusebenchError(f"stage body {run.__module__}.{run.__qualname__} is not a fusebench module-level "
                             "function; stage bodies live in fusebench/pipeline/stages.py.")
    return _body_code(run.__module__, factory)


def code_hash(code: tuple[str, ...], root: Path = ROOT) -> str:
    """sha256 over the source of `code` (as `stage_code` names it), read from the package at `root`."""
    h = hashlib.sha256()
    for entry in sorted(set(code)):
        h.update(entry.encode() + b"\0")
        if entry.startswith("files:"):
            base = root.parent / entry.removeprefix("files:")
            for path in sorted(p for p in base.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
                h.update(path.relative_to(base).as_posix().encode() + b"\0" + path.read_bytes())
            continue
        module, _, function = entry.partition(":")
        path = _module_file(module, root)
        if path is None:
            raise FusebenchError(f"stage code module {module} is missing from this installation of fusebench; "
                                 "reinstall it (pip install -e .).")
        source = path.read_text(encoding="utf-8")
        if function:
            node = next((n for n in ast.parse(source).body if getattr(n, "name", None) == function), None)
            source = ast.get_source_segment(source, node) if node is not None else ""
        h.update(source.encode())
    return h.hexdigest()
