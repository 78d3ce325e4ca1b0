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
import html
import json
import re
from pathlib import Path

from fusebench.errors import FusebenchError
from fusebench.evaluate.items import SUFFIX, read_items
from fusebench.extract.store import sha256_file
from fusebench.names import check_name, name_problem
from fusebench.report.board import (BOARD_DIR, Board, Entry, entry_from_manifests, load_board, load_entries,
                                    one_metric, ranked, restrict, write_entry)
from fusebench.report.store import check_run

REPO = Path(__file__).resolve().parents[2]


def resolve_gguf(source: str) -> Path:
    from fusebench.models.gguf import resolve_gguf as resolve

    return resolve(source)


def _sha256(path: Path) -> str:
    return sha256_file(path)


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
        from fusebench.models.gguf import converted

        source = model.removeprefix("gguf:")
        gguf = resolve_gguf(source)
        out, digest = converted(gguf, workdir / "gguf")   # once per file content: package and path share it
        label = model if source.startswith("package:") else f"gguf:{gguf.name} (sha256 {digest[:16]})"
        return str(out), "gguf", label
    if Path(model).exists():
        return model, "directory", Path(model.rstrip("/")).name
    return model, "hub", model


def weight_files(location: str) -> dict[str, str]:
    """sha256 of each weight file of what is scored: a GGUF file itself, or a model directory's weight files (an
    ensemble's under members/ too); empty for a hub id."""
    path = Path(location)
    if path.is_file():
        return {path.name: sha256_file(path)}
    if not path.is_dir():
        return {}
    found = [f for pattern in ("*.safetensors", "*.bin", "*.gguf", "members/*/*.safetensors", "members/*/*.bin")
             for f in path.glob(pattern) if f.is_file()]
    return {str(f.relative_to(path)): sha256_file(f) for f in sorted(found)}


def add_model(model: str, name: str | None, board_dir: Path, workdir: Path, reference: bool = False) -> Entry:
    # the name is a folder of the workdir's results and the entry's file name: checked before any work
    name = check_name(name, "--name") if name is not None else \
        check_name(Path(model.rstrip("/")).name, f"the name taken from {model!r} (no --name given),")
    if not model.startswith("gguf:"):  # a missing path says so first, not later as a complaint about corpora
        from fusebench.models.load import check_source

        check_source(model)
    board = load_board(board_dir)
    if any(e.name == name for e in load_entries(board_dir)):
        raise FusebenchError(f"{name!r} is already on the board in {board_dir}. Give the new model another name "
                             "with --name.")
    location, kind, label = _resolve_model(model, workdir)
    weights = weight_files(str(resolve_gguf(model.removeprefix("gguf:"))) if kind == "gguf" else location)
    corpora = rebuild_corpora(board, workdir)
    from fusebench.evaluate.api import evaluate_model   # heavy (torch, lm-eval): only when adding

    manifests, items = [], []
    for suite_name, suite in board.suites.items():
        result = evaluate_model(location, [f"{suite_name}:{t}" for t in suite.tasks], name=name, limit=suite.limit,
                                workdir=workdir / "eval", results_dir=workdir / "results", run_id="leaderboard",
                                corpora=corpora, max_length=suite.max_length)
        manifests += [json.loads(s.manifest_path.read_text()) for s in result.suites]
        items += [read_items(s.items_path) if s.items_path else None for s in result.suites]
    entry = entry_from_manifests(board, name, label, kind, manifests, items=items, weights=weights,
                                 reference=reference)
    write_entry(board_dir, entry)
    return entry


def _model_manifests(model_dir: Path) -> list[tuple[int | None, list[dict], list[dict | None]]]:
    """Per seed (None: unseeded): the manifests and the per-item records beside them (None where there is none)."""
    found = [(None, sorted(model_dir.glob("*.manifest.json")))]
    found += [(int(d.name.removeprefix("seed-")), sorted(d.glob("*.manifest.json")))
              for d in sorted(model_dir.glob("seed-*"))]
    return [(seed, [json.loads(p.read_text()) for p in paths], [_items_beside(p) for p in paths])
            for seed, paths in found if paths]


def _items_beside(manifest: Path) -> dict | None:
    path = manifest.with_name(manifest.name.removesuffix(".manifest.json") + SUFFIX)
    return read_items(path) if path.exists() else None


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
            problem = name_problem(recipe) or name_problem(model_dir.name)   # run.json is a file anyone can edit
            if problem:
                refused.append(f"{name}: the recipe or model name cannot be an entry's file name ({problem})")
                continue
            per_seed = _model_manifests(model_dir)
            manifests = [m for _, ms, _ in per_seed for m in ms]
            items = [r for _, _, rs in per_seed for r in rs]
            seeds = [s for s, _, _ in per_seed if s is not None]
            # the weights scored, as each evaluation's manifest hashed them (the model files are not in results/)
            weights = {f"seed-{s}" if s is not None else "model": ms[0]["model"]["weights_sha256"]
                       for s, ms, _ in per_seed if (ms[0].get("model") or {}).get("weights_sha256")}
            try:
                entry = entry_from_manifests(board, name, f"{results.name}/{run_dir.name}/{model_dir.name}", "run",
                                             manifests, seeds, items=items, weights=weights)
            except FusebenchError as err:
                refused.append(f"{name}: {err}")
                continue
            write_entry(board_dir, entry)
            known.add(name)
            added.append(name)
    return added, refused


def _interval(diff) -> str:
    if diff is None:
        return "no interval"
    basis = {"items": "paired by document", "independent": "independent"}.get(diff.basis, diff.basis)
    return f"{diff.mean:+.4f} [{diff.low:+.4f}, {diff.high:+.4f}] ({basis})"


def _code(text: str) -> str:
    """Escaped HTML with Markdown's `code` spans as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _html_table(header: list[str], body: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in line) + "</tr>\n" for line in body)
    return f"<table border=1 cellpadding=3>\n<tr>{head}</tr>\n{rows}</table>\n"


def render(board: Board, entries: list[Entry], out: Path, limit: int | None = None) -> list[Path]:
    from fusebench.report.plots import board_bars

    rows = ranked(board, entries)
    ranked_rows = [r for r in rows if not r["reference"]][:limit]
    references = [r for r in rows if r["reference"]]
    cols = [f"{s}/{t}" for s, t in board.columns()]
    metric = {f"{s}/{t}": board.suites[s] for s, t in board.columns()}
    unit = next(iter(board.suites.values())) if one_metric(board) else None
    mean_label = (f"mean {unit.metric} {'↑' if unit.higher_is_better else '↓'}" if unit
                  else "mean normalised score ↑")
    header = ["rank", "model", *(f"{c} ({metric[c].metric} {'↑' if metric[c].higher_is_better else '↓'})"
                                 for c in cols), mean_label, "vs the entry above: Δ [95% interval]", "seeds"]

    def line(r: dict, rank: str, first: bool) -> list[str]:
        return [rank, r["name"], *(f"{r[c]:.4f}" for c in cols), f"{r['score']:.4f}",
                "" if first else _interval(r["vs_above"]), ",".join(map(str, r["seeds"])) or "—"]

    body = [line(r, str(r["rank"]), i == 0) for i, r in enumerate(ranked_rows)]
    ref_body = [line(r, "—", True) for r in references]
    note = (f"Board `{board.name}`: {board.description} Every model was scored on exactly the board's data "
            f"(content hashes in `results/leaderboard/board.yaml`). Ranked by {board.ranking}. Intervals are paired "
            "by document where both entries kept per-document scores, otherwise independent (wider: the same "
            "documents' errors are correlated). Reproduced numbers.")
    ref_note = ("Reference models: listed for scale, not ranked (they may have been trained on these texts, or come "
                "from outside the tiny world).")
    out.mkdir(parents=True, exist_ok=True)
    md = ["## Leaderboard", "", note, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(cells) + " |" for cells in body]
    if ref_body:
        md += ["", "### Reference models", "", ref_note, "", "| " + " | ".join(header[:-2] + ["seeds"]) + " |",
               "|" + "---|" * (len(header) - 1)]
        md += ["| " + " | ".join(cells[:-2] + cells[-1:]) + " |" for cells in ref_body]
    (out / "leaderboard.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    with open(out / "leaderboard.csv", "w", newline="") as f:
        csv.writer(f).writerows([header + ["reference"], *(b + ["no"] for b in body),
                                 *(b + ["yes"] for b in ref_body)])
    figure = board_bars(ranked_rows + references, out / "leaderboard", board.name, mean_label)
    refs = (f"<h3>Reference models</h3>\n<p>{_code(ref_note)}</p>\n"
            + _html_table(header[:-2] + ["seeds"], [b[:-2] + b[-1:] for b in ref_body])) if ref_body else ""
    (out / "leaderboard.html").write_text(
        f'<!doctype html>\n<html><head><meta charset="utf-8"><title>Leaderboard</title></head><body>\n'
        f"<h2>Leaderboard</h2>\n<p>{_code(note)}</p>\n{_html_table(header, body)}{refs}"
        f'<img src="leaderboard.svg" alt="{html.escape(mean_label)} per model">\n</body></html>\n',
        encoding="utf-8")
    return [out / f"leaderboard.{x}" for x in ("md", "csv", "html")] + figure


def main(args) -> int:
    board_dir = Path(getattr(args, "board", None) or BOARD_DIR)
    out = Path(args.out)
    board = load_board(board_dir)     # a missing or broken board file is the first thing to say
    shown = restrict(board, args.suite)
    if args.limit is not None and args.limit < 1:
        raise FusebenchError(f"--limit {args.limit}: give how many ranked entries to show, 1 or more (or leave "
                             "--limit out to show them all).")
    if args.action == "add":
        if not args.model:
            raise FusebenchError("`fusebench leaderboard add` needs a model: a model directory, a hub id or "
                                 "gguf:package:NAME, e.g. `fusebench leaderboard add runs/x/model --name x`.")
        entry = add_model(args.model, args.name, board_dir, Path(args.workdir or "runs/leaderboard"),
                          reference=args.reference)
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
    paths = render(shown, entries, out, args.limit)
    print((out / "leaderboard.md").read_text())
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
