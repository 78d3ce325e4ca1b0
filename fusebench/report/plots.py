"""Figures (PNG and SVG) drawn from the same Table objects the text tables come from.

matplotlib is imported inside the functions, with the Agg backend, so `fusebench report` starts fast and never
needs a display.
"""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

from fusebench.report.tables import Table

_COLORS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974",
           "#64b5cd"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False,
                         "svg.hashsalt": "fusebench",
                         "svg.fonttype": "none"})   # text stays text in SVG: smaller, searchable, faster to write   # stable SVG ids, so unchanged figures diff as unchanged
    return plt


def _paths(stem: Path) -> list[Path]:
    return [stem.with_suffix(".png"), stem.with_suffix(".svg")]


def _fresh(stem: Path, *content) -> bool:
    """True when the figure at `stem` was drawn from exactly this content: drawing dominates the report's run
    time, so an unchanged figure is not drawn again. The key sits beside the figure as `<stem>.key`."""
    key = hashlib.sha256(repr((_VERSION, content)).encode()).hexdigest()
    key_file = stem.with_suffix(".key")
    if key_file.exists() and key_file.read_text() == key and all(p.exists() for p in _paths(stem)):
        return True
    key_file.unlink(missing_ok=True)
    _pending_keys[stem] = key
    return False


_VERSION = 4            # bump when the drawing code changes, so cached figures are redrawn
_pending_keys: dict[Path, str] = {}


def _table_content(table: Table) -> tuple:
    return (table.title, table.rows, table.columns, table.higher_is_better, table.decimals,
            sorted((k, c.value, c.change) for k, c in table.cells.items()))


def _save(fig, stem: Path) -> list[Path]:
    paths = _paths(stem)
    fig.savefig(paths[0], dpi=130)
    fig.savefig(paths[1], metadata={"Date": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    if stem in _pending_keys:
        stem.with_suffix(".key").write_text(_pending_keys.pop(stem))
    return paths


# chance level (%) of multiple-choice tasks, by the task key in the lm-eval task name (1 / number of choices), and
# the majority-class rate where the labels are unbalanced: BoolQ validation, 2033 of 3270 answers are "yes" (62.2%)
CHANCE = {"arc_easy": 25.0, "arc_challenge": 25.0, "hellaswag": 25.0, "openbookqa": 25.0, "boolq": 50.0,
          "piqa": 50.0, "winogrande": 50.0}
MAJORITY = {"boolq": 62.2}


def _baseline(group: str, table: dict[str, float]) -> float | None:
    key = group.lower().replace("-", "_")
    return next((v for k, v in table.items() if k == key or key.startswith(k + "_") or key.endswith("_" + k)
                 or f"_{k}_" in f"_{key}_"), None)


def provenance(table: Table) -> str:
    return {"paper": "REPORTED in the paper (not reproduced)", "run": "REPRODUCED by fusebench",
            "comparison": "reported (paper) beside reproduced (fusebench)"}.get(table.kind, table.kind)


def _stamp(fig, text: str) -> None:
    """Whether the numbers are reported or reproduced, written on the image itself."""
    fig.text(0.995, 0.995, text, ha="right", va="top", fontsize=8, color="#a00000", fontweight="bold")


def _title(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width))


def _unit_label(table: Table) -> str:
    direction = "higher is better" if table.higher_is_better else "lower is better"
    unit = "%" if table.decimals == 2 and table.higher_is_better else ""
    return f"score{' (' + unit + ')' if unit else ''}, {direction}"


def grouped_bars(table: Table, stem: Path, groups_are_rows: bool, ylabel: str | None = None) -> list[Path]:
    """A group of bars per benchmark/task, one bar per model."""
    if _fresh(stem, "grouped", _table_content(table), groups_are_rows, ylabel):
        return _paths(stem)
    plt = _pyplot()
    groups = table.rows if groups_are_rows else table.columns
    series = table.columns if groups_are_rows else table.rows
    width = 0.8 / max(len(series), 1)
    fig_width = min(16.0, max(6.5, 0.18 * len(groups) * len(series) + 2))
    rotate = len(groups) * max(map(len, groups)) > fig_width * 13    # labels would touch: slant them
    fig, ax = plt.subplots(figsize=(fig_width, 4.6), layout="constrained")
    values_seen = []
    for i, name in enumerate(series):
        xs, ys, errs = [], [], []
        for g, group in enumerate(groups):
            cell = table.cell(group, name) if groups_are_rows else table.cell(name, group)
            if cell.value is not None and not cell.signed:
                xs.append(g + (i - (len(series) - 1) / 2) * width)
                ys.append(cell.value)
                errs.append(cell.stderr or 0.0)
        values_seen += ys
        ax.bar(xs, ys, width, label=name, color=_COLORS[i % len(_COLORS)],
               yerr=errs if any(errs) else None, capsize=2, error_kw={"elinewidth": 0.8})
    if table.higher_is_better and table.decimals == 2:    # accuracy in %: where guessing lands
        for g, group in enumerate(groups):
            for level, style, label in ((_baseline(group, CHANCE), "--", "chance"),
                                        (_baseline(group, MAJORITY), ":", "majority class")):
                if level is not None:
                    ax.hlines(level, g - 0.45, g + 0.45, colors="black", linestyles=style, linewidth=1,
                              label=label if not any(h.get_label() == label for h in ax.collections) else None)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=35 if rotate else 0, ha="right" if rotate else "center")
    ax.set_ylabel(ylabel or _unit_label(table))
    if values_seen and not table.higher_is_better:
        # lower-is-better scores differ by a few percent: start the axis near them so the differences show
        low, high = min(values_seen), max(values_seen)
        span = high - low + 1e-9
        ax.set_ylim(max(0.0, low - 0.25 * span), high + 0.1 * span)
    ax.set_title(_title(table.title, int(fig_width * 10)), fontsize=10, loc="left")
    fig.legend(*ax.get_legend_handles_labels(), ncol=min(len(series), 5), fontsize=8, frameon=False,
               loc="outside lower center")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    _stamp(fig, provenance(table))
    return _save(fig, stem)


def change_bars(table: Table, stem: Path) -> list[Path] | None:
    """Per task, each derived model's relative change against the target (horizontal bars, 0 = the target).
    A change off a near-zero target (0.8 -> 4.8 is +500%) would flatten every other bar, so the axis covers the
    bulk of the changes and longer bars are cut at the edge with their value written beside them."""
    models = [c for c in table.columns if any(table.cell(r, c).change is not None for r in table.rows)]
    if not models:
        return None
    if _fresh(stem, "change", _table_content(table)):
        return _paths(stem)
    plt = _pyplot()
    rows = list(reversed(table.rows))    # first task at the top
    changes = sorted(abs(table.cell(r, m).change) for r in rows for m in models
                     if table.cell(r, m).change is not None)
    limit = max(5.0, 1.25 * changes[int(0.9 * (len(changes) - 1))])
    height = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(7.5, 1.4 + 0.22 * len(rows) * max(1.0, len(models) * 0.75)),
                           layout="constrained")
    for i, model in enumerate(models):
        ys, xs = [], []
        for y, row in enumerate(rows):
            change = table.cell(row, model).change
            if change is None:
                continue
            ys.append(y + ((len(models) - 1) / 2 - i) * height)    # first model on top, as in the legend
            xs.append(max(-limit, min(limit, change)))
            if abs(change) > limit:
                ax.text(xs[-1], ys[-1], f" {change:+.0f}% " if change > 0 else f" {change:+.0f}% ",
                        va="center", ha="right" if change > 0 else "left", fontsize=7, color="white",
                        fontweight="bold")
        ax.barh(ys, xs, height, label=model, color=_COLORS[(i + 3) % len(_COLORS)])
    ax.set_xlim(-limit * 1.05, limit * 1.05)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(rows)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    better = "right" if table.higher_is_better else "left"
    ax.set_xlabel(f"relative change against the target (%); better is to the {better}")
    ax.set_title(_title(f"{table.title}: change against the target", 62), fontsize=10, loc="left")
    ax.legend(fontsize=8, frameon=True, loc="best")
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    _stamp(fig, provenance(table))
    return _save(fig, stem)


def board_figure(rows: list[dict], board_name: str, label: str = "mean bits_per_byte ↓"):
    """The leaderboard as bars of each entry's mean score (ranked entries by rank, then reference models in grey,
    unranked), with the provenance stamp as the figure's own title row so no text can sit on another."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 1.6 + 0.3 * len(rows)), layout="constrained")
    ys = list(range(len(rows)))[::-1]
    ax.barh(ys, [r["score"] for r in rows], color=[_COLORS[7] if r["reference"] else _COLORS[0] for r in rows])
    for y, r in zip(ys, rows):
        ax.text(r["score"], y, f" {r['score']:.3f}", va="center", fontsize=7)
    ax.set_yticks(ys)
    ax.set_yticklabels([f"{r['rank']}. {r['name']}" if r["rank"] else f"(reference) {r['name']}" for r in rows],
                       fontsize=8)
    ax.set_xlim(0, max(r["score"] for r in rows) * 1.15)      # room for the value labels inside the axes
    ax.set_xlabel(label.replace("↓", "(lower is better)").replace("↑", "(higher is better)"))
    ax.set_title(f"Leaderboard {board_name}: ranked by {label.rstrip(' ↑↓')}", fontsize=10, loc="left")
    # suptitle: constrained layout reserves its own row above the axes title (a free fig.text overlapped it)
    fig.suptitle("REPRODUCED by fusebench", x=0.99, ha="right", fontsize=8, color="#a00000", fontweight="bold")
    return fig


def board_bars(rows: list[dict], stem: Path, board_name: str, label: str = "mean bits_per_byte ↓") -> list[Path]:
    """The leaderboard's figure, PNG and SVG (redrawn only when its content changed)."""
    if _fresh(stem, "board", board_name, label, [(r["name"], r["score"], r["rank"]) for r in rows]):
        return _paths(stem)
    return _save(board_figure(rows, board_name, label), stem)
