"""Bad input on the command line is one clear paragraph and exit status 2, never a traceback (issue 15, part 4)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fusebench.cli import main
from fusebench.errors import FusebenchError

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "recipes" / "smoke.yaml"


def _fails(capsys, argv: list[str], *fragments: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_recipe_path_that_is_a_directory(capsys, tmp_path):
    _fails(capsys, ["plan", str(tmp_path)], str(tmp_path), "is a directory", ".yaml")


def test_recipe_that_is_not_utf8(capsys, tmp_path):
    recipe = tmp_path / "latin1.yaml"
    recipe.write_bytes("name: café\nmodels: {}\n".encode("latin-1"))
    _fails(capsys, ["plan", str(recipe)], str(recipe), "UTF-8", "line 1")


def test_recipe_including_a_missing_file_names_the_including_recipe(capsys, tmp_path):
    recipe = tmp_path / "child.yaml"
    recipe.write_text("include: base.yaml\nname: child\n")
    _fails(capsys, ["plan", str(recipe)], str(tmp_path / "base.yaml"), "does not exist", f"included from {recipe}")


def test_override_with_malformed_yaml_value(capsys, tmp_path):
    _fails(capsys, ["plan", str(SMOKE), "name=[1,", "--workdir", str(tmp_path)],
           "override 'name=[1,'", "not valid YAML", "quote")


@pytest.mark.parametrize("config", ['{"model_type": "llama",', "[]"])
def test_eval_of_a_model_whose_config_json_is_malformed(capsys, tmp_path, config):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(config)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "test.jsonl").write_text(json.dumps({"text": "hello world"}) + "\n")
    _fails(capsys, ["eval", str(model), "--corpus", f"c={corpus}", "--workdir", str(tmp_path / "w"),
                    "--results", str(tmp_path / "results")], str(model / "config.json"), "not valid JSON")
    assert not (tmp_path / "results").exists()


def test_leaderboard_add_of_a_missing_path_says_the_path_is_missing(capsys, tmp_path):
    missing = tmp_path / "no-such-model"
    err = _fails(capsys, ["leaderboard", "add", str(missing), "--suite", "perplexity", "--results",
                          str(tmp_path / "results"), "--out", str(tmp_path / "out"), "--workdir", str(tmp_path / "w")],
                 str(missing), "does not exist")
    assert "corpus" not in err


def _store(path: Path):
    from fusebench.extract.store import SequenceDistributions, StoreWriter

    rng = np.random.default_rng(0)
    w = StoreWriter(path, "m", "t", 50, 4)
    seqs = []
    for n in (9, 5):
        ids = rng.integers(0, 50, size=n)
        top = np.stack([rng.permutation(50)[:4] for _ in range(n)])
        lp = np.sort(rng.normal(-3, 1, size=(n, 4)).astype(np.float32), axis=1)[:, ::-1].copy()
        seqs.append(SequenceDistributions(ids, top, lp, np.full(n - 1, -2.0, np.float32), 2.0))
    w.write_shard(0, seqs)
    return w.finalize()


@pytest.mark.parametrize("old, new", [(b"(14, 4)", b"(11, 4)"),      # parses, but the shape is wrong
                                      (b"'descr'", b"'descr\"")])     # does not parse at all
def test_store_with_a_corrupted_npy_header_names_the_file(tmp_path, old, new):
    from fusebench.extract.store import DistributionStore

    _store(tmp_path / "s")
    f = tmp_path / "s" / "shard-00000" / "topk_nlp.npy"
    raw = f.read_bytes()
    assert old in raw[:128]
    f.write_bytes(raw.replace(old, new, 1))
    store = DistributionStore.open(tmp_path / "s")
    with pytest.raises(FusebenchError, match=r"topk_nlp\.npy.*(header|cannot be read).*Delete"):
        [store.sequence(i) for i in range(len(store))]


def _mounted_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_disk_full_while_a_checkpoint_is_saved_keeps_the_last_checkpoint_and_resumes(tmp_path):
    """A real full disk: the workdir is a 2.8 MB tmpfs, so the first checkpoint (~1.7 MB) fits and the second
    does not. The run must say so in one paragraph, leave no finished-looking stage, keep step-2, and resume."""
    disk = tmp_path / "disk"
    if not _mounted_tmpfs(disk, "2800k"):
        pytest.skip("needs root and tmpfs mounts to fill a real disk")
    try:
        argv = [sys.executable, "-m", "fusebench.cli", "run", str(SMOKE), "models.target.train.steps=8",
                "models.target.train.checkpoint_every=2", "--only", "model:target", "--workdir", str(disk / "w"),
                "--results", str(tmp_path / "results"), "--reports", str(tmp_path / "reports")]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        full = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
        assert full.returncode == 2, full.stderr[-3000:]
        assert "Traceback" not in full.stderr and "Logging error" not in full.stderr, full.stderr[-3000:]
        assert "disk" in full.stderr and "full" in full.stderr and "model:target" in full.stderr
        assert not list(disk.glob("w/cache/model/target-*/.stage.json")), "a failed stage must not look finished"
        kept = list(disk.glob("w/cache/model/target-*.partial/_resume/step-2/model.safetensors"))
        assert kept, "the checkpoint before the full disk must survive"
        assert list(disk.glob("w/cache/corpus/general-*/.stage.json")), "finished stages must survive"

        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        resumed = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert "resuming" in resumed.stderr
        log = next(disk.glob("w/cache/model/target-*/train_log.jsonl")).read_text().splitlines()
        assert [json.loads(line)["step"] for line in log] == list(range(8))
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_resume_reads_the_history_saved_with_its_checkpoint_not_a_half_written_log(tmp_path, tiny_llama_dir,
                                                                                   stdlib_texts):
    """The run-level log.jsonl is rewritten after each checkpoint; a crash or a full disk while it is written leaves
    it cut short. Resuming must take the history that was saved inside the checkpoint instead (no traceback, no
    lost rows)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fusebench.train.loop import TrainSettings, train

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    seqs = [np.asarray(tok(t[:400])["input_ids"][:32]) for t in stdlib_texts[:4]]
    settings = TrainSettings(steps=4, batch_size=2, lr=1e-3, warmup_ratio=0.0, schedule="constant", checkpoint_every=2)
    full = train(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), seqs, settings, tmp_path / "a", 0)
    resume = tmp_path / "b"
    train(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), seqs,
          TrainSettings(**{**settings.__dict__, "steps": 3}), resume, 0)   # checkpoint at step 2, then "crash"
    assert (resume / "step-2").is_dir()
    (resume / "log.jsonl").write_text('{"step": 0, "lo')                    # cut short mid-write
    history = train(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), seqs, settings, resume, 0)
    assert [h["step"] for h in history] == [0, 1, 2, 3]
    assert [h["loss"] for h in history] == pytest.approx([h["loss"] for h in full], rel=1e-5)


# --- issue 18: recipes whose model graph loops, alias bombs, fusion that would be ignored, a file given as a model

def _smoke_with(tmp_path: Path, mutate) -> Path:
    import yaml

    data = yaml.safe_load(SMOKE.read_text())
    mutate(data)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("mutate, cycle", [
    (lambda d: d["models"]["kd"].update(teachers=["kd"]), "kd -> kd (teachers)"),                     # own teacher
    (lambda d: d["models"]["target"].update(init="clm", arch=None, tokenizer=None, size=None),          # mutual init
     "clm -> target (init) -> clm (init)"),
    (lambda d: d["models"]["ensemble"].update(ensemble=["expert_legal", "ensemble"]), "ensemble -> ensemble"),
    (lambda d: d["models"]["merged"]["merge"].update(models=["expert_legal", "kd"])
     or d["models"]["kd"].update(init="merged"), "kd -> merged (init) -> kd (merge)"),
])
def test_a_model_that_depends_on_itself_names_the_cycle(capsys, tmp_path, mutate, cycle):
    """Before: RecursionError, 3001 lines of traceback."""
    recipe = _smoke_with(tmp_path, mutate)
    _fails(capsys, ["plan", str(recipe), "--workdir", str(tmp_path / "w")], str(recipe), cycle, "depends on itself")


def test_run_refuses_a_cycle_before_any_work(capsys, tmp_path):
    recipe = _smoke_with(tmp_path, lambda d: d["models"]["kd"].update(teachers=["kd"]))
    _fails(capsys, ["run", str(recipe), "--workdir", str(tmp_path / "w"), "--results", str(tmp_path / "r"),
                    "--reports", str(tmp_path / "p")], "kd -> kd")
    assert not (tmp_path / "w" / "cache").exists()


LAUGHS = """\
a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
name: bomb
models: {}
"""


def test_billion_laughs_recipe_is_refused_without_expanding_it(tmp_path):
    """342 bytes that expand to 9^9 strings. Before: MemoryError after 93 s. Run in a child process with its memory
    capped, so a regression fails this test instead of the machine."""
    import resource

    assert len(LAUGHS) < 400
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text(LAUGHS)

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))

    proc = subprocess.run([sys.executable, "-m", "fusebench.cli", "plan", str(recipe), "--workdir", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, preexec_fn=cap,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert str(recipe) in proc.stderr and "alias" in proc.stderr


@pytest.mark.parametrize("text, says", [
    ("a: &a [" + ", ".join(["x"] * 50) + "]\n" + "b: &b [" + ", ".join(["*a"] * 50) + "]\n"
     + "c: [" + ", ".join(["*b"] * 50) + "]\nname: n\nmodels: {}\n", "alias"),   # 125 000 strings: refused, not slow
    ("a: &a [1, *a]\nname: n\nmodels: {}\n", "inside its own anchor"),                # an alias inside itself
    ("name: n\nmodels: {}\nx: " + "[" * 5000 + "]" * 5000 + "\n", "nested"),      # deeper than Python recurses
])
def test_yaml_that_expands_past_the_bound_or_loops_is_one_paragraph(capsys, tmp_path, text, says):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    _fails(capsys, ["plan", str(recipe), "--workdir", str(tmp_path / "w")], str(recipe), says)


def test_an_override_value_is_bounded_too(capsys, tmp_path):
    value = "[" + ", ".join(["&a [" + ", ".join(["x"] * 60) + "]"] + ["*a"] * 3000) + "]"
    _fails(capsys, ["plan", str(SMOKE), f"description={value}", "--workdir", str(tmp_path / "w")],
           "override", "alias")


def test_fusion_without_teachers_is_refused_not_trained_as_clm(capsys, tmp_path):
    """Before: `role: baseline`, `teachers: []` and a `fusion:` block trained silently as plain CLM."""
    recipe = _smoke_with(tmp_path, lambda d: d["models"]["kd"].update(teachers=[]))
    _fails(capsys, ["plan", str(recipe), "--workdir", str(tmp_path / "w")], str(recipe), "models.kd",
           "`fusion:`", "teachers", "CLM")


def test_eval_of_a_text_file_says_what_it_is_and_what_a_model_directory_holds(capsys, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model\n")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "test.jsonl").write_text(json.dumps({"text": "hello world"}) + "\n")
    _fails(capsys, ["eval", str(notes), "--corpus", f"c={corpus}", "--workdir", str(tmp_path / "w"), "--results", str(tmp_path / "r")],
           str(notes), "is a file", "not a model directory", "config.json", "safetensors")
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF\x03\x00\x00\x00")
    _fails(capsys, ["eval", str(gguf), "--corpus", f"c={corpus}", "--workdir", str(tmp_path / "w"), "--results", str(tmp_path / "r")],
           "gguf:")


@pytest.mark.parametrize("override, says", [
    ("models.target.size.hidden=0", "models.target.size.hidden"),            # before: ZeroDivisionError
    ("models.target.size.hidden=50", "divisible"),                            # 50 / 4 heads: transformers' ValueError
    ("models.target.size.layers=0", "models.target.size.layers"),
    ("evaluate.batch_size=0", "evaluate.batch_size"),                        # before: accepted
    ("evaluate.limit=-1", "evaluate.limit"),
    ("evaluate.max_length=-5", "evaluate.max_length"),
    ("evaluate.max_length={target: 0}", "evaluate.max_length"),
    ("models.merged.merge.models=[]", "models.merged.merge.models"),          # before: IndexError
    ("models.target.train.seed=-1", "models.target.train.seed"),             # before: numpy ValueError in training
    ("seed=4294967296", "seed"),
])
def test_sizes_and_counts_that_cannot_work_are_recipe_errors(capsys, tmp_path, override, says):
    _fails(capsys, ["plan", str(SMOKE), override, "--workdir", str(tmp_path / "w")], str(SMOKE), says)


@pytest.mark.parametrize("include", ["[a.yaml, b.yaml]", "{a: 1}", "1"])
def test_include_that_is_not_one_path_is_a_recipe_error(capsys, tmp_path, include):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"include: {include}\nname: x\nmodels: {{}}\n")       # before: TypeError traceback
    _fails(capsys, ["plan", str(recipe), "--workdir", str(tmp_path / "w")], str(recipe), "include", "one path")


def test_a_key_given_twice_is_refused_not_silently_the_last(capsys, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(SMOKE.read_text().replace("    role: baseline\n    init: target\n    train: &continual",
                                                "    role: baseline\n    init: target\n    init: src_neox\n"
                                                "    train: &continual", 1))
    assert recipe.read_text() != SMOKE.read_text()
    _fails(capsys, ["plan", str(recipe), "--workdir", str(tmp_path / "w")], str(recipe), "'init'", "twice",
           "lines 42 and 43")


@pytest.mark.parametrize("where", ["recipe", "include"])
def test_a_recipe_that_never_ends_is_refused_after_a_bounded_read(tmp_path, where):
    """`fusebench plan /dev/zero` (or an include of it) read until memory ran out before."""
    import resource

    recipe = Path("/dev/zero")
    if where == "include":
        recipe = tmp_path / "r.yaml"
        recipe.write_text("include: /dev/zero\nname: x\nmodels: {}\n")

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))

    proc = subprocess.run([sys.executable, "-m", "fusebench.cli", "plan", str(recipe), "--workdir", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, preexec_fn=cap,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "/dev/zero" in proc.stderr and "larger than" in proc.stderr


def test_a_chain_of_models_deeper_than_the_builder_recurses_is_a_recipe_error(capsys, tmp_path):
    """2 000 models, each the continual training of the one before: RecursionError before."""
    import yaml

    models = {"m0": {"arch": "llama", "tokenizer": "t", "size": {"hidden": 8, "layers": 1, "heads": 2},
                     "train": {"corpus": "c", "steps": 1}}}
    models.update({f"m{i}": {"init": f"m{i - 1}", "train": {"corpus": "c", "steps": 1}} for i in range(1, 2000)})
    recipe = tmp_path / "chain.yaml"
    recipe.write_text(yaml.safe_dump({"name": "chain", "corpora": {"c": {"kind": "tiny_world", "domain": "general"}},
                                      "tokenizers": {"t": {"kind": "bpe", "vocab_size": 100, "corpus": "c"}},
                                      "models": models}))
    _fails(capsys, ["plan", str(recipe), "--workdir", str(tmp_path / "w")], str(recipe), "more than 100 models")


def test_a_key_twice_in_a_flow_mapping_on_one_line_is_refused_too(capsys, tmp_path):
    _fails(capsys, ["plan", str(SMOKE), "models.clm.train={corpus: mix, steps: 4, steps: 40}",
                    "--workdir", str(tmp_path / "w")], "'steps'", "twice")
