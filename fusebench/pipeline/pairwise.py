"""FuseChat's pairwise fusion as a recipe rewrite: `pairwise: true` expands into one continual model per teacher.

Done on the raw recipe data before validation (a `Recipe` validator calls it), so every later part -- references,
the stage graph, seeds, `fusebench plan`, reports -- sees ordinary models and needs no pairwise case.
"""

from __future__ import annotations

from typing import Any


def expand_pairwise(data: Any) -> Any:
    """FuseChat's pairwise fusion in the schema: a model with `pairwise: true` and N `teachers` stands for N models
    `<name>-<teacher>`, each continually trained from the same `init` with that one teacher and the same settings,
    so all of them read the pivot's one chunks stage and distribution store, and each source is extracted and aligned
    once. Where a short-form merge's or an ensemble's `models` or `evaluate.models` name the group, they mean all N,
    in order (a mergekit block names each model: `<name>-<teacher>`)."""
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        return data
    groups: dict[str, list[str]] = {}
    models: dict[str, Any] = {}
    for name, spec in data["models"].items():
        if not (isinstance(spec, dict) and "pairwise" in spec):
            models[name] = spec
            continue
        spec = dict(spec)
        flag, teachers = spec.pop("pairwise"), spec.get("teachers") or []
        if not isinstance(flag, bool) or (flag and not (spec.get("init") and teachers)):
            raise ValueError(f"models.{name}.pairwise: true needs `init` (the pivot) and `teachers` (one fused "
                             f"model is trained per teacher); got pairwise={flag!r}, teachers={teachers!r}")
        if not flag:
            models[name] = spec
            continue
        groups[name] = [f"{name}-{t}" for t in teachers]
        for child, teacher in zip(groups[name], teachers):
            if child in data["models"]:
                raise ValueError(f"models.{name}: pairwise fusion names its model for teacher {teacher!r} "
                                 f"{child!r}, which the recipe already defines; rename one of them")
            models[child] = {**spec, "teachers": [teacher]}

    def members(names: Any) -> Any:
        return [m for n in names for m in groups.get(n, [n])] if isinstance(names, list) else names

    for spec in models.values():
        if isinstance(spec, dict) and isinstance(spec.get("merge"), dict) and "merge_method" not in spec["merge"]:
            spec["merge"] = {**spec["merge"], "models": members(spec["merge"].get("models"))}
        if isinstance(spec, dict) and "ensemble" in spec:
            spec["ensemble"] = members(spec["ensemble"])
    out = {**data, "models": models, "pairwise_groups": groups}   # kept for run.json (reports group by it)
    if isinstance(data.get("evaluate"), dict) and "models" in data["evaluate"]:
        out["evaluate"] = {**data["evaluate"], "models": members(data["evaluate"]["models"])}
    return out
