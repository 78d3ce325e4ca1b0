"""Ground floor: sha256 of files, and directories sealed by a record of exactly the files they hold.

A sealed directory carries `checksums.json`: {"files": {relative path: {"bytes", "sha256"}}}. It is checked before
anything in it is read: every recorded file must be there with its size and sha256, and nothing else may be there
(an added file changes what a reader finds as surely as an edited one). The results store seals each run this way
(`results/<run>/`, the paper's `results/reported/` too), so a number edited after it was stored stops
`fusebench report`, the next run and `fusebench verify` with exit 2 instead of being published.
Finished stages keep the same kind of record inside `.stage.json` (`fusebench.pipeline.integrity`).
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from filelock import FileLock

SEAL = "checksums.json"
_LOCK = f".{SEAL}.lock"        # serialises writers adding files to one sealed dir (`fusebench eval` runs)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def hash_files(paths: list[Path]) -> list[str]:
    # hashlib releases the GIL on large buffers, so threads hash several files at once
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        return list(pool.map(sha256_file, paths))


def describe(root: Path, paths: list[Path], known: dict[Path, str] | None = None) -> dict[str, dict]:
    """{relative path: {"bytes", "sha256"}} for `paths` under root; `known` sha256s are not recomputed."""
    known = dict(known or {})
    todo = [p for p in paths if p not in known]
    known.update(zip(todo, hash_files(todo)))
    return {p.relative_to(root).as_posix(): {"bytes": p.stat().st_size, "sha256": known[p]} for p in paths}


def compare(root: Path, files: dict[str, dict], ignore: tuple[str, ...]) -> list[str]:
    """Problems with root's files against their record, one phrase each naming the file; [] when all match.
    The directory holds exactly the recorded files (besides `ignore`d names relative to root)."""
    problems, to_hash = [], []
    for path in sorted(p for p in root.rglob("*") if not p.is_dir()):
        rel = path.relative_to(root).as_posix()
        if rel not in files and rel not in ignore:
            problems.append(f"{path} is not among the files recorded when it was written (added since)")
    for rel, info in files.items():
        path = root / rel
        if not path.is_file():
            problems.append(f"{path} is missing")
        elif path.stat().st_size != info["bytes"]:
            problems.append(f"{path} has {path.stat().st_size} bytes where {info['bytes']} were recorded")
        else:
            to_hash.append((path, info["sha256"]))
    for (path, want), got in zip(to_hash, hash_files([p for p, _ in to_hash])):
        if got != want:
            problems.append(f"{path} does not match its recorded sha256 (same size, different content)")
    return problems


def _files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name not in (SEAL, _LOCK))


def _write(root: Path, files: dict[str, dict]) -> None:
    tmp = root / f".{SEAL}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps({"files": dict(sorted(files.items()))}, indent=1))
    os.replace(tmp, root / SEAL)


def seal(root: Path, added: list[Path] | None = None) -> None:
    """Record root's files (a sole writer: a staging dir about to be renamed into place). With `added`, only those
    files' entries are (re)written, under a lock: a writer adding its own files to a sealed directory never vouches
    for files it did not write."""
    if added is None:
        _write(root, describe(root, _files_under(root)))
        return
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / _LOCK)):
        files = read_seal(root) if (root / SEAL).exists() else {}
        _write(root, {**files, **describe(root, [Path(p) for p in added])})


def read_seal(root: Path) -> dict[str, dict] | None:
    """The recorded files of a sealed directory; None when it carries no record; {} when the record is unreadable
    (then every file in it counts as unrecorded)."""
    try:
        files = json.loads((root / SEAL).read_text()).get("files")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, AttributeError):
        return {}
    return files if isinstance(files, dict) else {}


def check_sealed(root: Path) -> list[str] | None:
    """Problems with a sealed directory ([] when it matches its record), or None when it carries no record."""
    files = read_seal(root)
    return None if files is None else compare(root, files, (SEAL, _LOCK))
