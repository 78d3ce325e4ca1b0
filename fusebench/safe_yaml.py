"""YAML that users write (recipes, `key=value` overrides, board files), read with bounds.

`yaml.safe_load` runs no code, but an alias (`*a`) is a reference: nine lines of nine aliases each (the "billion
laughs", 342 bytes) are a DAG of 90 nodes that anything walking the data as a tree (json, pydantic, a deep merge)
expands to 9^9 strings - minutes, then MemoryError. An alias inside its own anchor (`&a [*a]`) is a loop, and
brackets nested a few thousand deep overflow the composer's recursion. So before anything is constructed, the
composed node graph is measured: its size as a tree (each node counted once per path reaching it, memoised, so the
measure itself is linear), its depth, and loops. Recipes are a few thousand nodes; the bound is far above that.
"""

from __future__ import annotations

from typing import Any

import yaml

from fusebench.errors import FusebenchError

MAX_NODES = 100_000   # the shipped recipes are 20-400 nodes as a tree (smoke.yaml: 355)
MAX_DEPTH = 64        # recipes nest about six levels


class _Refused(Exception):
    """The document is over a bound (the message says which); raised inside the loader, reworded by `load`."""


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _tree_size(root: yaml.Node) -> int:
    """Nodes of the document as a tree (aliases expanded), without expanding it; iterative, so depth is no limit."""
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            on_path.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in _children(node))
            if size[key] > MAX_NODES:
                raise _Refused(f"its aliases (*name) expand to more than {MAX_NODES:,} values (a recipe holds a few "
                               "hundred); it looks like an alias bomb")
            continue
        if key in size:
            continue
        if key in on_path:
            raise _Refused(f"an alias is used inside its own anchor (line {node.start_mark.line + 1}), so the value "
                           "would contain itself forever")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node))
    return size[id(root)]


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses, before constructing anything, documents nested too deeply or too large as a tree."""

    _depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                line = self.peek_event().start_mark.line + 1
                raise _Refused(f"it is nested more than {MAX_DEPTH} levels deep (line {line})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self):
        node = super().compose_document()
        _tree_size(node)
        return node


def load(text: str, where: str) -> Any:
    """`yaml.safe_load(text)` within the bounds above; over them, a FusebenchError naming `where` (a file, an
    override). Syntax errors stay yaml.YAMLError, so each caller keeps its own wording for them."""
    try:
        return yaml.load(text, Loader=_BoundedLoader)
    except _Refused as err:
        raise FusebenchError(f"{where} is refused: {err}. Write the values out (or use fewer, smaller aliases) "
                             "and run again.") from None
