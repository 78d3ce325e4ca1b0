"""Artifacts that verify themselves: every finished stage records its files' sizes and sha256 in `.stage.json`.

The runner records them when a stage finishes (`record_files`, just before the atomic rename) and, before a stage
reads a finished artifact, checks them (`check_files`) once per run per artifact: a same-size byte flip in a model's
weights or a store's shard stops the run with exit 2 instead of publishing different numbers.

Content is hashed every run that reads an artifact, never skipped on an unchanged (size, mtime): bit rot, a restored
backup or `touch -r` all leave both unchanged, and mtime has coarse resolution on some filesystems, so that shortcut
could not promise that a byte flip is caught. What keeps the cost down instead: only artifacts that a stage about to
run reads are checked (a fully cached run hashes nothing but its outputs), each once per run, files in parallel; and a
distribution store's shards reuse the sha256 its writer computed as each shard was written (`store/meta.json`), so
finishing an extraction does not read the store again.

What is covered is the stage directory: a pretrained model kept elsewhere (`pointer.json`) is pinned by its location
only, and its files are the hub cache's or the user's to keep. Stages finished before checksums existed have no
`files` record: they are read unverified with a warning, and `fusebench verify --adopt` records their checksums as
they are now (or delete them to recompute).
A stage directory holds exactly the files its record lists (a file added later is a change too), and a stage
directory without its record (`.stage.json` deleted) is named, never silently skipped or overwritten.
`fusebench verify [WORKDIR]` checks every finished stage under WORKDIR (default `runs/`) and every stored results
run there (sealed by `fusebench.checksums`; the repo's `results/` too), or one bare store.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from fusebench.errors import FusebenchError
from fusebench.checksums import SEAL, check_sealed, compare, describe, seal, sha256_file  # noqa: F401 (sha256_file: re-exported)

RECORD = ".stage.json"
_KEYED = re.compile(r"-[0-9a-f]{16}$")   # a stage dir's name ends in its key's first 16 hex digits
FIX = "Delete {dir} and run again to recompute it."


def _store_hashes(root: Path) -> dict[Path, str]:
    """sha256 of every distribution-store shard file under root, as its writer recorded them in meta.json."""
    known: dict[Path, str] = {}
    for meta in root.rglob("meta.json"):
        try:
            shards = json.loads(meta.read_text()).get("shards") or []
        except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
            continue
        for shard in shards:
            for name, info in (shard.get("files") or {}).items() if isinstance(shard, dict) else ():
                if isinstance(info, dict) and info.get("sha256"):
                    known[meta.parent / f"shard-{shard['index']:05d}" / name] = info["sha256"]
    return known


def record_files(root: Path) -> dict[str, dict]:
    """{relative path: {"bytes", "sha256"}} for every file under root (the stage record itself excluded)."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != RECORD)
    return describe(root, files, _store_hashes(root))


def check_files(root: Path, files: dict[str, dict]) -> list[str]:
    """Problems with root's files against their record, one phrase each naming the file; [] when all match.
    The directory holds exactly the recorded files: one added later (an `added_tokens.json` beside a model's
    tokenizer changes what loads without touching any recorded file) is a problem too."""
    return compare(root, files, (RECORD,))


def read_record(stage_dir: Path) -> dict:
    try:
        return json.loads((stage_dir / RECORD).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise FusebenchError(f"{stage_dir / RECORD} cannot be read ({err}), so {stage_dir} cannot be verified. "
                             + FIX.format(dir=stage_dir)) from None


def verify_stage(stage_dir: Path) -> list[str] | None:
    """Problems with a finished stage directory ([] if it matches its record), or None if it has no record."""
    files = read_record(stage_dir).get("files")
    return None if files is None else check_files(stage_dir, files)


def corrupted_error(stage_dir: Path, problems: list[str], reader: str | None = None) -> FusebenchError:
    shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
    who = f", which {reader} reads," if reader else ""
    return FusebenchError(f"the finished stage {stage_dir}{who} was modified or corrupted on disk since it finished: "
                          f"{shown}. " + FIX.format(dir=stage_dir))


def lost_record_error(stage_dir: Path, stage_id: str | None = None) -> FusebenchError:
    who = f"the stage {stage_id}" if stage_id else "a stage"
    return FusebenchError(f"{who} lost its record: {stage_dir} exists but holds no {RECORD} (deleted, or the "
                          "directory was made by hand), so nothing says what its files should be and it cannot be "
                          "read or replaced. " + FIX.format(dir=stage_dir))


def stage_dirs(root: Path) -> tuple[list[Path], list[Path]]:
    """(finished stage dirs, stage dirs without a record) under root: `cache/<kind>/<name>-<key16>/` or any dir
    holding a record; `.partial` dirs (work in progress) are neither."""
    recorded = {p.parent for p in root.rglob(RECORD) if not p.parent.name.endswith(".partial")}
    lost = {d for kind in root.rglob("cache/*") if kind.is_dir() for d in kind.iterdir()
            if d.is_dir() and _KEYED.search(d.name) and d not in recorded}
    return sorted(recorded), sorted(lost)


def adopt(stage_dir: Path) -> None:
    """Record the checksums of a stage finished before checksums existed, as its files are now."""
    record = read_record(stage_dir)
    record["files"] = record_files(stage_dir)
    tmp = stage_dir / f".{RECORD}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(record, indent=2, default=str))
    os.replace(tmp, stage_dir / RECORD)


def result_runs(root: Path) -> list[Path]:
    """Stored result runs under root: every run of a results store (a `results/` dir, or root itself when it is
    one; `leaderboard/` is the board's, with its own hashes), and any other sealed dir outside the stage cache."""
    stores = [d for d in [root, *root.rglob("results")] if d.is_dir() and d.name == "results"
              and "cache" not in d.relative_to(root).parts]
    runs = {r for s in stores for r in s.iterdir() if r.is_dir() and not r.name.startswith(".")
            and r.name != "leaderboard"}
    runs |= {p.parent for p in root.rglob(SEAL) if "cache" not in p.relative_to(root).parts}
    return sorted(runs)


def _verify_stages(stages: list[Path], lost: list[Path], root: Path, adopting: bool) -> list[str]:
    bad, unrecorded = {}, []
    for stage_dir in stages:
        try:
            problems = verify_stage(stage_dir)
        except FusebenchError:  # an unreadable record: listed like any other damage, the rest still checked
            problems = [f"{stage_dir / RECORD} cannot be read as JSON"]
        if problems is None and adopting:
            adopt(stage_dir)
            print(f"adopted    {stage_dir} (checksums recorded as the files are now)")
        elif problems is None:
            unrecorded.append(stage_dir)
            print(f"unchecked  {stage_dir} (finished before checksums were recorded)")
        elif problems:
            bad[stage_dir] = problems
            print(f"CORRUPTED  {stage_dir}: {problems[0]}" + (f" (+{len(problems) - 1})" if len(problems) > 1 else ""))
        else:
            print(f"ok         {stage_dir}")
    for stage_dir in lost:
        print(f"NO RECORD  {stage_dir} (its {RECORD} is missing)")
    print(f"{len(stages) + len(lost)} stages: {len(stages) - len(bad) - len(unrecorded)} verified, {len(bad)} "
          f"corrupted, {len(lost)} without a record, {len(unrecorded)} without checksums"
          + (" (`fusebench verify --adopt` records them)" if unrecorded else ""))
    errors = []
    if lost:
        errors.append(f"{len(lost)} stage director(ies) under {root} lost their record ({RECORD}), so nothing "
                      f"vouches for their files: {', '.join(map(str, lost))}. Delete each and run its recipe again "
                      f"to recompute it (e.g. rm -r {lost[0]}).")
    if bad:
        errors.append(f"{len(bad)} finished stage(s) under {root} do not match their checksums: "
                      + "; ".join(f"{d} ({p[0]})" for d, p in bad.items()) + ". Delete each listed directory and "
                      f"run its recipe again to recompute it (e.g. rm -r {next(iter(bad))}).")
    return errors


def _verify_results(runs: list[Path], adopting: bool) -> list[str]:
    """Stored results must carry their seal (unlike old stages, never read without one): a report reads them."""
    bad, unsealed = {}, []
    for run in runs:
        problems = check_sealed(run)
        if problems is None and adopting:
            seal(run)
            print(f"adopted    {run} (results sealed as the files are now)")
        elif problems is None:
            unsealed.append(run)
            print(f"UNSEALED   {run} (no {SEAL})")
        elif problems:
            bad[run] = problems
            print(f"CHANGED    {run}: {problems[0]}" + (f" (+{len(problems) - 1})" if len(problems) > 1 else ""))
        else:
            print(f"ok         {run}")
    print(f"{len(runs)} result runs: {len(runs) - len(bad) - len(unsealed)} verified, {len(bad)} changed, "
          f"{len(unsealed)} without {SEAL}")
    errors = []
    if bad:
        errors.append("stored results changed since they were written: " + "; ".join(f"{d} ({p[0]})" for d, p in
                      bad.items()) + ". Restore the files from the run that wrote them, or move the run out of the "
                      "results store and run its recipe again.")
    if unsealed:
        errors.append(f"{len(unsealed)} result run(s) carry no {SEAL}: {', '.join(map(str, unsealed))}. If you trust "
                      "their files as they are, `fusebench verify --adopt` seals them; otherwise move them out of "
                      "the results store and run their recipes again.")
    return errors


def main(args) -> int:
    """`fusebench verify [WORKDIR]`: check every finished stage and stored result run (or a bare store)."""
    root = Path(args.workdir)
    if not root.exists():
        raise FusebenchError(f"{root} does not exist. Give a run's workdir (e.g. runs/tiny) or a parent of several.")
    if (root / "meta.json").exists() and (root / "shard-00000").exists():  # a store outside any workdir
        from fusebench.extract.store import DistributionStore

        DistributionStore.open(root).verify()
        print(f"ok  {root} (distribution store)")
        return 0
    (stages, lost), runs = stage_dirs(root), result_runs(root)
    if not stages and not lost and not runs:
        raise FusebenchError(f"{root} holds no finished stages (no {RECORD} under it) and no stored results. Give a "
                             "run's workdir or a results store.")
    errors = (_verify_stages(stages, lost, root, args.adopt) if stages or lost else []) \
        + (_verify_results(runs, args.adopt) if runs else [])
    if errors:
        raise FusebenchError(" ".join(errors))
    return 0
