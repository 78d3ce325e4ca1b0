"""A stage's cache key covers the code it really runs (issue 18): derived from what its body imports, transitively,
never from a hand-kept list that goes stale (align/vocabmap missed align/tokens.py; eval missed the offline data,
BBH, MultiPL-E, sandboxed execution, manifests, item records and the task templates, so editing any of them kept
serving old results).

Edits are made to a copy of the package (never to the checkout other tests import), and the key's code hash is
computed over that copy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fusebench.pipeline.codehash import code_hash
from fusebench.pipeline.graph import build_stages
from fusebench.pipeline.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def stages() -> dict[str, object]:
    recipe = load_recipe(REPO / "recipes" / "smoke.yaml", ["evaluate.suites=[perplexity,commonsense,bbh,multipl-e]"])
    found = {}
    for s in build_stages(recipe):
        found.setdefault(s.kind if s.kind != "model" or not s.config.get("init") else "continual", s)
    return found


@pytest.fixture
def tree(tmp_path) -> Path:
    """A copy of what a key hashes: the package and the task templates beside it."""
    shutil.copytree(REPO / "fusebench", tmp_path / "fusebench", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "tasks", tmp_path / "tasks")
    return tmp_path


EDITED = [  # (stage kind, file whose edit must change its key)
    ("align", "fusebench/align/tokens.py"),
    ("vocabmap", "fusebench/align/tokens.py"),
    ("align", "fusebench/align/corpus.py"),
    ("eval", "fusebench/evaluate/offline_data.py"),
    ("eval", "fusebench/evaluate/bbh_offline.py"),
    ("eval", "fusebench/evaluate/multipl_e.py"),
    ("eval", "fusebench/evaluate/code_exec.py"),
    ("eval", "fusebench/evaluate/manifest.py"),
    ("eval", "fusebench/evaluate/items.py"),
    ("eval", "fusebench/sandbox/bwrap.py"),
    ("eval", "tasks/perplexity/perplexity.yaml.in"),
    ("eval", "tasks/multipl_e/multipl_e_cpp.yaml"),
    ("corpus", "fusebench/data/corpora.py"),
    ("continual", "fusebench/fuse/loss.py"),
    ("continual", "fusebench/train/loop.py"),
]


@pytest.mark.parametrize("kind, rel", EDITED)
def test_editing_a_file_a_stage_runs_changes_its_key(stages, tree, kind, rel):
    stage = stages[kind]
    path = tree / rel
    assert path.is_file(), f"{rel} moved: update this test"
    before = code_hash(stage.code, tree / "fusebench")
    path.write_text(path.read_text() + "\n# edited\n")
    assert code_hash(stage.code, tree / "fusebench") != before


def test_editing_the_stage_body_changes_only_that_stage_kinds_key(stages, tree):
    body = tree / "fusebench" / "pipeline" / "stages.py"
    before = {k: code_hash(s.code, tree / "fusebench") for k, s in stages.items()}
    text = body.read_text()
    head = next(line for line in text.splitlines(keepends=True) if line.startswith("def vocab_map("))
    body.write_text(text.replace(head, head + "    # edited\n"))
    after = {k: code_hash(s.code, tree / "fusebench") for k, s in stages.items()}
    assert [k for k in stages if before[k] != after[k]] == ["vocabmap"]


@pytest.mark.parametrize("kind, unrelated", [("corpus", "fusebench/evaluate/harness.py"),
                                             ("corpus", "fusebench/align/dtw.py"),
                                             ("tokenizer", "fusebench/fuse/loss.py"),
                                             ("vocabmap", "fusebench/evaluate/code_exec.py")])
def test_editing_code_a_stage_never_runs_leaves_its_key_alone(stages, tree, kind, unrelated):
    stage = stages[kind]
    before = code_hash(stage.code, tree / "fusebench")
    path = tree / unrelated
    path.write_text(path.read_text() + "\n# edited\n")
    assert code_hash(stage.code, tree / "fusebench") == before


def test_the_stage_record_names_the_code_its_key_covers(stages):
    align = stages["align"].code
    assert "fusebench.align.tokens" in align and "fusebench.pipeline.stages:align" in align
    assert {"fusebench.evaluate.offline_data", "fusebench.evaluate.bbh_offline", "fusebench.evaluate.multipl_e",
            "fusebench.evaluate.code_exec", "fusebench.evaluate.manifest", "fusebench.evaluate.items",
            "files:tasks"} <= set(stages["eval"].code)
