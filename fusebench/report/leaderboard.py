"""`fusebench leaderboard`: a board of comparable numbers (board.py holds its definition and ranking).

- `fusebench leaderboard`              render the board: Markdown, HTML (table and plot), CSV, PNG/SVG;
- `fusebench leaderboard add MODEL`    score one model (a local directory, a hub id, or `gguf:package:NAME` /
                                       `gguf:PATH`) on the board's data, rebuilt and checked by content hash, and
                                       add one row; nothing else is recomputed;
- `fusebench leaderboard sync`         enter the published runs in results/ that were scored on exactly the board's
                                       data (seed-dependent models: the mean over their seeds); others are listed
                                       as refused, with the reason.
"""

from __future__ import annotations

import csv
import hashlib
import html
import json
from pathlib import Path

from fusebench.errors import FusebenchError
from fusebench.report.board import (BOARD_DIR, Board, Entry, entry_from_manifests, load_board, load_entries, ranked,
                                    write_entry)
from fusebench.report.store import check_run

REPO = Path(__file__).resolve().parents[2]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rebuild_corpora(board: Board, workdir: Path) -> dict[str, Path]:
    """Every board task's corpus, rebuilt by its recipe's corpus stage (cached in `workdir`), checked by sha256."""
    from fusebench.pipeline.graph import GraphBuilder
    from fusebench.pipeline.recipe import load_recipe
    from fusebench.pipeline.runner import Runner

    out: dict[str, Path] = {}
    for suite in board.suites.values():
        for task, spec in suite.tasks.items():
            g = GraphBuilder(load_recipe(REPO / spec.rebuild.recipe))
            sid = g.corpus(spec.rebuild.corpus)
            runner = Runner(list(g.stages.values()), workdir / "corpora")
            runner.run(sid)
            test = runner.path(sid) / "test.jsonl"
            if _sha256(test) != spec.sha256:
                raise FusebenchError(f"the rebuilt corpus {spec.rebuild.corpus!r} of {spec.rebuild.recipe} "
                                     f"({test}) does not match the board's sha256 {spec.sha256[:12]}… for task "
                                     f"{task!r}: this fusebench version builds other text, so its scores would not "
                                     "be comparable. Use the fusebench version the board was made with.")
            out[task] = test.parent
    return out


def _resolve_model(model: str, workdir: Path) -> tuple[str, str, str]:
    """(what evaluate_model loads, kind, what the entry records: portable, no path of this machine)."""
    if model.startswith("gguf:"):
        from fusebench.models.gguf import converted, resolve_gguf

        source = model.removeprefix("gguf:")
        gguf = resolve_gguf(source)
        out, digest = converted(gguf, workdir / "gguf")   # once per file content: package and path share it
        label = model if source.startswith("package:") else f"gguf:{gguf.name} (sha256 {digest[:16]})"
        return str(out), "gguf", label
    if Path(model).exists():
        return model, "directory", Path(model.rstrip("/")).name
    return model, "hub", model


def add_model(model: str, name: str | None, board_dir: Path, workdir: Path) -> Entry:
    if not model.startswith("gguf:"):  # a missing path says so first, not later as a complaint about corpora
        from fusebench.models.load import check_source

        check_source(model)
    board = load_board(board_dir)
    name = name or Path(model.rstrip("/")).name
    if any(e.name == name for e in load_entries(board_dir)):
        raise FusebenchError(f"{name!r} is already on the board in {board_dir}. Give the new model another name "
                             "with --name.")
    location, kind, label = _resolve_model(model, workdir)
    corpora = rebuild_corpora(board, workdir)
    from fusebench.evaluate.api import evaluate_model   # heavy (torch, lm-eval): only when adding

    manifests = []
    for suite_name, suite in board.suites.items():
        result = evaluate_model(location, [f"{suite_name}:{t}" for t in suite.tasks], name=name, limit=suite.limit,
                                workdir=workdir / "eval", results_dir=workdir / "results", run_id="leaderboard",
                                corpora=corpora, max_length=suite.max_length)
        manifests += [json.loads(s.manifest_path.read_text()) for s in result.suites]
    entry = entry_from_manifests(board, name, label, kind, manifests)
    write_entry(board_dir, entry)
    return entry


def _model_manifests(model_dir: Path) -> list[tuple[int | None, list[dict]]]:
    found = [(None, sorted(model_dir.glob("*.manifest.json")))]
    found += [(int(d.name.removeprefix("seed-")), sorted(d.glob("*.manifest.json")))
              for d in sorted(model_dir.glob("seed-*"))]
    return [(seed, [json.loads(p.read_text()) for p in paths]) for seed, paths in found if paths]


def sync(board_dir: Path, results: Path) -> tuple[list[str], list[str]]:
    """Enter every published model scored on the board's data; returns (added, refused with reasons)."""
    board = load_board(board_dir)
    known = {e.name for e in load_entries(board_dir)}
    added, refused = [], []
    for run_dir in sorted(p for p in results.iterdir() if (p / "run.json").exists()):
        try:
            check_run(run_dir)  # a score edited since the run was published never enters the board
        except FusebenchError as err:
            refused.append(f"{run_dir.name}: {err}")
            continue
        recipe = json.loads((run_dir / "run.json").read_text()).get("recipe") or run_dir.name
        for model_dir in sorted(p for p in run_dir.iterdir() if p.is_dir()):
            name = f"{recipe}/{model_dir.name}"
            if name in known:
                continue
            per_seed = _model_manifests(model_dir)
            manifests = [m for _, ms in per_seed for m in ms]
            seeds = [s for s, _ in per_seed if s is not None]
            try:
                entry = entry_from_manifests(board, name, f"{results.name}/{run_dir.name}/{model_dir.name}", "run",
                                             manifests, seeds)
            except FusebenchError as err:
                refused.append(f"{name}: {err}")
                continue
            write_entry(board_dir, entry)
            known.add(name)
            added.append(name)
    return added, refused


def render(board: Board, entries: list[Entry], out: Path) -> list[Path]:
    from fusebench.report.plots import board_bars

    rows = ranked(board, entries)
    cols = [f"{s}/{t}" for s, t in board.columns()]
    metric = {f"{s}/{t}": board.suites[s] for s, t in board.columns()}
    header = ["rank", "model", *(f"{c} ({metric[c].metric} {'↑' if metric[c].higher_is_better else '↓'})"
                                 for c in cols), "average (normalised)", "seeds"]
    body = [[str(r["rank"]), r["name"], *(f"{r[c]:.4f}" for c in cols), f"{r['average']:.2f}",
             ",".join(map(str, r["seeds"])) or "—"] for r in rows]
    note = (f"Board `{board.name}`: {board.description} Every model was scored on exactly the board's data "
            f"(content hashes in results/leaderboard/board.yaml). Ranked by {board.ranking}. Reproduced numbers.")
    out.mkdir(parents=True, exist_ok=True)
    md = ["## Leaderboard", "", note, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(line) + " |" for line in body]
    (out / "leaderboard.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    with open(out / "leaderboard.csv", "w", newline="") as f:
        csv.writer(f).writerows([header, *body])
    figure = board_bars(rows, out / "leaderboard", board.name)
    table = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    table_rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in line) + "</tr>\n" for line in body)
    (out / "leaderboard.html").write_text(
        f'<!doctype html>\n<html><head><meta charset="utf-8"><title>Leaderboard</title></head><body>\n'
        f"<h2>Leaderboard</h2>\n<p>{html.escape(note)}</p>\n<table border=1 cellpadding=3>\n<tr>{table}</tr>\n"
        f'{table_rows}</table>\n<img src="leaderboard.svg" alt="mean normalised score per model">\n</body></html>\n',
        encoding="utf-8")
    return [out / f"leaderboard.{x}" for x in ("md", "csv", "html")] + figure


def main(args) -> int:
    board_dir = Path(getattr(args, "board", None) or BOARD_DIR)
    out = Path(args.out)
    board = load_board(board_dir)     # a missing or broken board file is the first thing to say
    if args.action == "add":
        if not args.model:
            raise FusebenchError("`fusebench leaderboard add` needs a model: a model directory, a hub id or "
                                 "gguf:package:NAME, e.g. `fusebench leaderboard add runs/x/model --name x`.")
        entry = add_model(args.model, args.name, board_dir, Path(args.workdir or "runs/leaderboard"))
        print(f"added {entry.name}: " + ", ".join(f"{k} {v:.4f}" for k, v in entry.scores.items()))
    elif args.action == "sync":
        added, refused = sync(board_dir, Path(args.results))
        print(f"added {len(added)}: {', '.join(added) or '-'}")
        for line in refused:
            print(f"refused {line}")
    entries = load_entries(board_dir)
    if not entries:
        raise FusebenchError(f"the board in {board_dir} has no entries yet, so there is nothing to rank. Add models "
                             "with `fusebench leaderboard add MODEL` or `fusebench leaderboard sync`.")
    paths = render(board, entries, out)
    print((out / "leaderboard.md").read_text())
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
