"""Hub datasets pinned to a revision in a task YAML (`dataset_kwargs: {revision: <commit>}`, MultiPL-E's) are
checked before evaluation to be the data `datasets` will actually read.

What `datasets` (5.2) does with a revision:
- online, `load_dataset(repo, config, revision=R)` resolves R to a commit sha on the hub and prepares the data in
  `HF_DATASETS_CACHE/<org>___<name>/<config>/<version>/<commit sha>/` (load.py: the hub module factories hand the
  commit sha to the builder as its `hash`, which names that folder). The revision is honoured.
- offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE), the hub is never asked and `revision` is dropped:
  `CachedDatasetModuleFactory` takes no revision, and the cache builder (packaged_modules/cache/cache.py
  `_find_hash_in_cache`) reads the most recently modified prepared folder of that config, whatever its commit.
  The same happens online when the hub cannot be reached (load.py falls back to the cache).
So offline, the prepared folder's name is the only record of the revision its data came from; nothing inside it
(dataset_info.json) names the commit. This module asks datasets' own lookup which folder it will read and
compares that folder's commit with the pin.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from fusebench.errors import FusebenchError

COMMIT = re.compile(r"[0-9a-f]{40}")


def pinned_datasets(yaml_paths: dict[str, Path]) -> dict[str, tuple[str, str | None, str]]:
    """lm-eval task -> (hub dataset, config, pinned revision) for the tasks whose YAML (includes resolved as lm-eval
    resolves them) pins `dataset_kwargs.revision` of a hub dataset."""
    from lm_eval.tasks._yaml_loader import load_yaml

    out = {}
    for task, path in yaml_paths.items():
        config = load_yaml(path, resolve_func=False)
        revision = (config.get("dataset_kwargs") or {}).get("revision")
        dataset = config.get("dataset_path") or ""
        if revision and "/" in dataset:
            out[task] = (dataset, config.get("dataset_name"), str(revision))
    return out


def cache_folder(repo: str) -> str:
    """The folder `datasets` prepares the hub dataset ORG/NAME in, under HF_DATASETS_CACHE (`ORG___snake_name`)."""
    from datasets.naming import camelcase_to_snakecase

    org, _, name = repo.partition("/")
    return f"{org}___{camelcase_to_snakecase(name)}"


def cached_revision(dataset: str, config: str | None) -> str | None:
    """The commit of the prepared copy `datasets` reads offline for (dataset, config), or None when it has none."""
    from datasets.packaged_modules.cache.cache import _find_hash_in_cache

    try:
        _, _, found = _find_hash_in_cache(dataset, config, None, {}, None)
    except (ValueError, FileNotFoundError):
        return None
    return found


def check_revisions(yaml_paths: dict[str, Path]) -> dict[str, str]:
    """lm-eval task -> the revision its data will come from, for the tasks pinning one. Offline, a prepared copy
    of another commit than a pinned commit sha is refused (FusebenchError, before any model loads); a pinned branch
    or tag cannot be checked offline (warned); online, datasets honours the pin."""
    import datasets.config

    used = {}
    for task, (dataset, config, pinned) in pinned_datasets(yaml_paths).items():
        if not datasets.config.HF_HUB_OFFLINE:
            used[task] = pinned
            continue
        found = cached_revision(dataset, config)
        if found is None:  # nothing prepared: datasets itself says so when the task loads
            continue
        if not COMMIT.fullmatch(pinned):  # a branch or tag: the commit it named when prepared is not recorded
            print(f"[fusebench eval] warning: task {task!r} pins {dataset} ({config}) to {pinned!r}, not a commit "
                  f"sha; offline this cannot be checked, and the copy read is commit {found}.", file=sys.stderr,
                  flush=True)
            used[task] = found
            continue
        if found != pinned:
            where = Path(datasets.config.HF_DATASETS_CACHE)
            raise FusebenchError(
                f"task {task!r} reads the hub dataset {dataset} ({config}) pinned to revision {pinned}, but offline "
                f"`datasets` ignores the revision and would read the copy prepared from revision {found} (its "
                f"folder name) in its cache ({where}), so the scores would not be the pinned data's. Prepare the "
                f"pinned revision once "
                f"online (`datasets.load_dataset({dataset!r}, {config!r}, revision={pinned!r})`, which stores it "
                f"under .../{config}/<version>/{pinned}/) and delete the folder of {found} from the cache, or run "
                "without HF_DATASETS_OFFLINE / HF_HUB_OFFLINE so the pin is fetched.")
        used[task] = found
    return used


def index_yaml_paths(manager, names: list[str]) -> dict[str, Path]:
    """lm-eval task -> its YAML for `names` as a TaskManager indexed them, groups opened to their tasks (tags and
    Python-defined tasks have no YAML to read and are left out)."""
    from lm_eval.tasks._index import Kind

    out: dict[str, Path] = {}
    todo, seen = list(names), set()
    while todo:
        name = todo.pop()
        entry = manager.task_index.get(name) if isinstance(name, str) else None
        if entry is None or name in seen:
            continue
        seen.add(name)
        if entry.kind == Kind.TASK and entry.yaml_path is not None:
            out[name] = Path(entry.yaml_path)
        elif entry.kind == Kind.GROUP:
            members = (entry.cfg or {}).get("task") or []
            todo += [m for m in (members if isinstance(members, list) else [members]) if isinstance(m, str)]
    return out


def require_loaded_revision(dataset, repo: str, pinned: str):
    """`dataset` (a datasets.Dataset lm-eval loaded) unchanged when it was read from the prepared copy of `repo` at
    commit `pinned`, or from anything but `repo`'s prepared copy (a local file); a copy of another commit raises.
    At load time this also catches what the pre-check cannot: online, a failed hub request makes `datasets` fall back
    to its cache without a word."""
    files = [Path(f["filename"]) for f in getattr(dataset, "cache_files", [])]
    for folder in {f.parent for f in files}:
        if len(folder.parents) < 3 or folder.parents[2].name != cache_folder(repo):
            continue
        if folder.name != pinned:
            raise FusebenchError(
                f"the rows of {repo} ({folder.parents[1].name}) were read from the copy prepared from revision "
                f"{folder.name} ({folder}), not from the pinned revision {pinned}: `datasets` reads the newest "
                "cached copy when it is offline or cannot reach the hub, whatever the revision asked for. Prepare "
                f"the pinned revision once online (`datasets.load_dataset({repo!r}, {folder.parents[1].name!r}, "
                f"revision={pinned!r})`) and delete the folder of {folder.name} from the cache.")
    return dataset
