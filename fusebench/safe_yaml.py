"""YAML that users write (recipes, `key=value` overrides, board files), read with bounds.

`yaml.safe_load` runs no code, but an alias (`*a`) is a reference: nine lines of nine aliases each (the "billion
laughs", ~340 bytes) are a DAG of 90 nodes that anything walking the data as a tree (json, pydantic, a deep merge)
expands to 9^9 strings - minutes, then MemoryError. An alias inside its own anchor (`&a [*a]`) is a loop, and
brackets nested a few thousand deep overflow the composer's recursion. So before anything is constructed, the
composed node graph is measured: its size as a tree (each node counted once per path reaching it, memoised, so the
measure itself is linear), its depth, and loops. Recipes are a few hundred nodes; the bound is far above that.
Two more things YAML accepts silently are refused: a key given twice in one mapping (the last would win), and a
file that never ends (`/dev/zero`): files are read up to MAX_BYTES.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from fusebench.errors import FusebenchError

MAX_BYTES = 1 << 20   # the shipped recipes are 1-6 KB; /dev/zero or a FIFO never ends
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


def _no_duplicate_keys(node: yaml.MappingNode) -> None:
    """YAML keeps the last of two equal keys without a word; a recipe with `lr` twice is a mistake to point at."""
    first: dict[tuple[str, str], int] = {}
    for key, _ in node.value:
        if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
            line = key.start_mark.line + 1
            if (key.tag, key.value) in first:
                raise _Refused(f"the key {key.value!r} is given twice in one mapping (lines "
                               f"{first[key.tag, key.value]} and {line}), and YAML would silently keep the last; "
                               "keep one")
            first[key.tag, key.value] = line


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
        if isinstance(node, yaml.MappingNode):
            _no_duplicate_keys(node)
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


def read_bounded(path: Path, where: str) -> bytes:
    """The bytes of `path`, refused past MAX_BYTES (read no further: the file may never end)."""
    with open(path, "rb") as f:
        data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise FusebenchError(f"{where} is larger than {MAX_BYTES >> 20} MiB, which no recipe or board file is (the "
                             "shipped ones are a few KB): is it the right file? Give the path to the YAML file.")
    return data


def load(text: str, where: str) -> Any:
    """`yaml.safe_load(text)` within the bounds above; over them, a FusebenchError naming `where` (a file, an
    override). Syntax errors stay yaml.YAMLError, so each caller keeps its own wording for them."""
    try:
        return yaml.load(text, Loader=_BoundedLoader)
    except _Refused as err:
        raise FusebenchError(f"{where} is refused: {err}. Write the values out (or use fewer, smaller aliases) "
                             "and run again.") from None
