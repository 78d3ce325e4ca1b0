"""The leaderboard ranks by the board's own metric (bits per byte) with intervals: paired by document where both
entries kept per-item scores, ties share a rank, reference models stand outside the ranking; `show` reads its flags;
the rendered page and figure are checked as a reader sees them (headless chromium, matplotlib's text extents)."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from fusebench.cli import main as fusebench_main
from fusebench.report.board import entry_from_manifests, load_board, ranked, write_entry

from tests.test_leaderboard import SHA, board_yaml, manifest

LN2 = math.log(2)


def _items(bpb: dict[str, list[float]], nbytes: int = 100) -> dict:
    """A per-item record (evaluate/items.py's format) whose documents score `bpb[task]` bits per byte each."""
    return {"format": 1, "tasks": {f"ppl_{t}": {"none": {
        "doc_ids": list(range(len(v))),
        "metrics": {"bits_per_byte": [[-b * nbytes * LN2, nbytes] for b in v]}}} for t, v in bpb.items()}}


def _scored(bpb: dict[str, list[float]]) -> tuple[dict, dict]:
    """(manifest, items) of one evaluation whose per-document bits per byte are `bpb`."""
    m = manifest({t: sum(v) / len(v) for t, v in bpb.items()}, docs=len(next(iter(bpb.values()))))
    for t in bpb:
        m["tasks"][t]["lm_eval_task"] = f"ppl_{t}"
    return m, _items(bpb)


def _entry(board, name, bpb, reference=False):
    m, items = _scored(bpb)
    return entry_from_manifests(board, name, name, "hub", [m], items=[items], reference=reference)


def _board(tmp_path):
    return load_board(board_yaml(tmp_path, docs=6))


def test_rank_is_mean_bits_per_byte_with_intervals_paired_by_document_and_ties_share_a_rank(tmp_path):
    board = _board(tmp_path)
    base = {"legal": [2.0, 2.4, 1.8, 2.2, 2.6, 2.0], "code": [3.0, 3.4, 2.8, 3.2, 3.6, 3.0]}
    noise = [0.001, -0.002, 0.0015, -0.001, 0.002, -0.0005]   # far below the spread between documents
    best = _entry(board, "best", {t: [v - 0.3 for v in vs] for t, vs in base.items()})
    a = _entry(board, "a", base)
    b = _entry(board, "b", {t: [v + n for v, n in zip(vs, noise)] for t, vs in base.items()})
    rows = ranked(board, [b, a, best])
    assert [r["name"] for r in rows] == ["best", "a", "b"]
    assert rows[0]["score"] == pytest.approx((2.0 + 3.0) / 2 + 0.1667 - 0.3, abs=1e-3)   # mean bpb, lower first
    assert [r["rank"] for r in rows] == [1, 2, 2]              # a and b differ by noise: they share rank 2
    diff = rows[1]["vs_above"]
    assert diff.basis == "items" and diff.low > 0 and diff.mean == pytest.approx(0.3)   # paired: a clear gap
    assert rows[2]["vs_above"].basis == "items" and rows[2]["vs_above"].low < 0 < rows[2]["vs_above"].high


def test_without_per_item_scores_the_interval_is_the_independent_one_and_says_so(tmp_path):
    board = _board(tmp_path)
    one = entry_from_manifests(board, "one", "m", "hub", [manifest({"legal": 2.0, "code": 3.0}, docs=6)])
    two = entry_from_manifests(board, "two", "m", "hub", [manifest({"legal": 2.001, "code": 3.001}, docs=6)])
    rows = ranked(board, [two, one])
    diff = rows[1]["vs_above"]
    assert diff.basis == "independent" and diff.mean == pytest.approx(0.001)
    assert diff.high - diff.mean == pytest.approx(1.96 * math.sqrt(4 * 0.01 ** 2) / 2, rel=1e-3)
    assert [r["rank"] for r in rows] == [1, 1]


def test_reference_models_are_listed_outside_the_ranking(tmp_path):
    board = _board(tmp_path)
    base = {"legal": [2.0, 2.4, 1.8, 2.2, 2.6, 2.0], "code": [3.0, 3.4, 2.8, 3.2, 3.6, 3.0]}
    ref = _entry(board, "smol", {t: [v - 1.5 for v in vs] for t, vs in base.items()}, reference=True)
    rows = ranked(board, [ref, _entry(board, "a", base)])
    assert [(r["name"], r["rank"]) for r in rows] == [("a", 1), ("smol", None)]
    write_entry(tmp_path, ref)
    write_entry(tmp_path, _entry(board, "a", base))
    out = tmp_path / "out"
    assert fusebench_main(["leaderboard", "--board", str(tmp_path), "--out", str(out)]) == 0
    md = (out / "leaderboard.md").read_text()
    assert md.index("| 1 | a |") < md.index("Reference models") < md.index("smol")


def test_show_reads_suite_and_limit(tmp_path, capsys):
    board = _board(tmp_path)
    base = {"legal": [2.0, 2.4, 1.8, 2.2, 2.6, 2.0], "code": [3.0, 3.4, 2.8, 3.2, 3.6, 3.0]}
    for i, name in enumerate(("first", "second", "third")):
        write_entry(tmp_path, _entry(board, name, {t: [v + i for v in vs] for t, vs in base.items()}))
    argv = ["leaderboard", "show", "--board", str(tmp_path), "--out", str(tmp_path / "o")]
    assert fusebench_main([*argv, "--suite", "bogus", "--limit", "3"]) == 2
    err = capsys.readouterr().err
    assert "bogus" in err and "perplexity" in err and "Traceback" not in err
    assert fusebench_main([*argv, "--suite", "perplexity", "--limit", "2"]) == 0
    printed = capsys.readouterr().out
    assert "| first |" in printed and "| second |" in printed and "| third |" not in printed
    assert fusebench_main([*argv, "--limit", "0"]) == 2
    assert "--limit" in capsys.readouterr().err


def test_help_explains_every_flag_and_names_gguf(capsys):
    with pytest.raises(SystemExit):
        fusebench_main(["leaderboard", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--results", "--out", "--workdir", "--suite", "--limit"):
        assert re.search(re.escape(flag) + r" \S+ [a-z(]", text), flag       # each flag has a help sentence
    assert "gguf:" in text


def _rendered(tmp_path) -> Path:
    board = _board(tmp_path)
    base = {"legal": [2.0, 2.4, 1.8, 2.2, 2.6, 2.0], "code": [3.0, 3.4, 2.8, 3.2, 3.6, 3.0]}
    for i, name in enumerate(("fusellm", "clm", "a-model-with-a-rather-long-name")):
        write_entry(tmp_path, _entry(board, name, {t: [v + 0.01 * i for v in vs] for t, vs in base.items()}))
    write_entry(tmp_path, _entry(board, "SmolLM2", {t: [v - 1 for v in vs] for t, vs in base.items()}, True))
    out = tmp_path / "out"
    assert fusebench_main(["leaderboard", "--board", str(tmp_path), "--out", str(out)]) == 0
    return out


def test_the_figures_text_never_overlaps(tmp_path):
    from fusebench.report.board import load_entries
    from fusebench.report.plots import board_figure

    out = _rendered(tmp_path)
    fig = board_figure(ranked(load_board(tmp_path), load_entries(tmp_path)), "test-board")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    hidden = {id(label) for ax in fig.axes for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim()))
              for tick in axis.get_major_ticks() if not min(lo, hi) <= tick.get_loc() <= max(lo, hi)
              for label in (tick.label1, tick.label2)}                 # ticks outside the view are not drawn
    texts = [t for t in fig.findobj(lambda a: type(a).__name__ == "Text")
             if t.get_visible() and t.get_text() and id(t) not in hidden]
    assert any("REPRODUCED" in t.get_text() for t in texts) and any("Leaderboard" in t.get_text() for t in texts)
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    for i, (a, box_a) in enumerate(boxes):
        assert fig.bbox.contains(box_a.x0 + 0.5, box_a.y0 + 0.5) and fig.bbox.contains(box_a.x1 - 0.5, box_a.y1 - 0.5), a
        for b, box_b in boxes[i + 1:]:
            assert not box_a.overlaps(box_b), f"{a!r} overlaps {b!r}"
    assert (out / "leaderboard.png").stat().st_size > 5_000


_OVERLAP_PROBE = """<script>
window.addEventListener('load', () => {
  const boxes = [...document.querySelectorAll('h2, h3, p, th, td, code, img')].map(e => [e, e.getBoundingClientRect()]);
  let clashes = [];
  for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
    const [ea, a] = boxes[i], [eb, b] = boxes[j];
    if (ea.contains(eb) || eb.contains(ea)) continue;
    if (a.left < b.right - 1 && b.left < a.right - 1 && a.top < b.bottom - 1 && b.top < a.bottom - 1)
      clashes.push(ea.tagName + ':' + ea.textContent.slice(0, 20) + ' / ' + eb.tagName + ':' + eb.textContent.slice(0, 20));
  }
  document.body.setAttribute('data-overlaps', JSON.stringify(clashes));
});
</script>"""


def test_the_page_renders_in_headless_chromium_with_its_table_and_no_overlapping_text(tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (.ci/setup-toolchains.sh installs Debian's chromium)")
    out = _rendered(tmp_path)
    page = (out / "leaderboard.html").read_text()
    assert "`" not in page and "<code>" in page                                  # markdown code became HTML
    probe = out / "probe.html"
    probe.write_text(page.replace("</body>", _OVERLAP_PROBE + "</body>"))
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,1600",
             "--allow-file-access-from-files", f"--user-data-dir={tmp_path / 'profile'}"]
    shot = subprocess.run([*flags, f"--screenshot={out / 'shot.png'}", probe.as_uri()], capture_output=True,
                          timeout=120)
    assert shot.returncode == 0 and (out / "shot.png").stat().st_size > 10_000, shot.stderr[-2000:]
    dom = subprocess.run([*flags, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()], capture_output=True,
                         text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "<table" in dom.stdout and dom.stdout.count("<tr") == 1 + 3 + 1 + 1    # header, 3 ranked, reference
    overlaps = re.search(r'data-overlaps="([^"]*)"', dom.stdout)
    assert overlaps is not None, "the overlap probe did not run"
    assert json.loads(overlaps.group(1).replace("&quot;", '"')) == []
