"""Which models a model is built from, and the checks on that graph a recipe must pass: no model depends on itself
(`kd -> kd (teachers)`), and no chain is deeper than the stage-graph builder recurses. Both are found by one
iterative walk, so the check itself cannot overflow the stack on any recipe."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fusebench.pipeline.recipe import ModelSpec


def model_inputs(m: ModelSpec) -> list[tuple[str, str]]:
    """(model, key) for every model `m` is built from."""
    merged = (m.merge.models + ([m.merge.base] if m.merge.base else [])) if m.merge else []
    return ([(m.init, "init")] if m.init else []) + [(t, "teachers") for t in m.teachers] \
        + [(e, "ensemble") for e in m.ensemble or []] + [(x, "merge") for x in merged]


MAX_MODEL_DEPTH = 100   # models built from models built from ...: shipped recipes chain at most a few


def check_model_graph(models: dict[str, ModelSpec]) -> None:
    """A loop among the models (`kd -> kd (teachers)`), or a chain deeper than the graph builder can recurse, is a
    ValueError naming it (before: RecursionError, 3001 lines)."""
    def chain(steps: list[tuple[str, str]]) -> str:
        return " -> ".join([steps[0][0]] + [f"{m} ({key})" for m, key in steps[1:]])

    found = _first_loop_or_deep_chain(models)
    if found and found[0][0] == found[-1][0]:
        raise ValueError(f"model {found[0][0]!r} depends on itself: {chain(found)}. A model can only be built from "
                         "models built before it; break the loop")
    if found:
        raise ValueError(f"model {found[0][0]!r} is built through a chain of more than {MAX_MODEL_DEPTH} models "
                         f"({chain(found[:3])} -> ... -> {found[-1][0]}); fusebench builds at most "
                         f"{MAX_MODEL_DEPTH} generations. Shorten the chain")


def _first_loop_or_deep_chain(models: dict[str, ModelSpec]) -> list[tuple[str, str]] | None:
    """The first loop among the models, as [(start, ""), (next, key naming it), ..., (start, key)], or a path longer
    than MAX_MODEL_DEPTH, or None. Depth-first from each model in recipe order; iterative, so it never overflows."""
    state: dict[str, str] = {}             # "open" while on the current path, "done" once fully explored
    for root in models:
        if root in state:
            continue
        path: list[tuple[str, str]] = [(root, "")]
        todo = [iter(model_inputs(models[root]))]
        state[root] = "open"
        while todo:
            nxt = next(todo[-1], None)
            if nxt is None:
                state[path.pop()[0]] = "done"
                todo.pop()
                continue
            name, key = nxt
            if name not in models or state.get(name) == "done":
                continue
            if state.get(name) == "open":
                start = [n for n, _ in path].index(name)
                return [(name, "")] + path[start + 1:] + [(name, key)]
            state[name] = "open"
            path.append((name, key))
            if len(path) > MAX_MODEL_DEPTH:
                return path
            todo.append(iter(model_inputs(models[name])))
    return None
