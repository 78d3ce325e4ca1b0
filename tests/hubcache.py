"""A private Hugging Face cache that serves the paper recipes' hub ids offline, for tests that rehearse a real run.

`build_hub_cache(hf_home)` fills `hf_home` (a test's temp dir, used as that process's HF_HOME; never the user's
cache) with tiny real models and tiny datasets under the ids `recipes/paper.yaml`, `recipes/pythia_domains_paper.yaml`
and the online evaluation tasks use. With HF_HOME pointing there and HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1,
`AutoModelForCausalLM.from_pretrained("meta-llama/Llama-2-7b-hf")` and `load_dataset("allenai/ai2_arc", "ARC-Easy")`
work as they would against the hub, so the code paths of a real run execute.

Models: the hub cache layout `hub/models--ORG--NAME/snapshots/<commit>/` + `refs/<branch>` (what huggingface_hub
writes; files stored directly instead of as links to blobs, which its offline lookup accepts). They differ the ways
the real checkpoints do: SentencePiece (Llama-2, OpenLLaMA: different vocabularies) vs byte-level BPE (MPT, Pythia:
one shared GPT-NeoX-style vocabulary, model vocab padded past it); fp16 / bf16 / fp32 storage; sharded safetensors;
`pytorch_model.bin` only; one reachable only at a non-main revision.

Datasets: hub datasets cannot be served from the hub-cache layout offline (`load_dataset` then answers "Couldn't
reach ... (OfflineModeIsEnabled)"). `load_dataset` offline falls back to datasets' own prepared cache
(datasets/load.py `CachedDatasetModuleFactory`, packaged_modules/cache/cache.py `_find_hash_in_cache`):
`HF_HOME/datasets/ORG___snake(NAME)/<config>/<version>/<hash>/` holding `snake(NAME)-<split>.arrow` (Arrow stream
format, datasets' ArrowWriter) and a `dataset_info.json` whose `config_name` equals the folder name and whose
`splits` list the split names. Any version/hash folder name is accepted; the most recently modified one wins.
Prepared online, the hash folder is the dataset's commit sha; MultiPL-E is written under the commit fusebench's task
YAMLs pin, which fusebench checks offline (fusebench/evaluate/revisions.py).
"""

from __future__ import annotations

import hashlib
import sysconfig
from dataclasses import dataclass
from pathlib import Path

# The 27 BBH tasks, as the configs of lm-eval's bbh dataset (lm_eval/tasks/bbh/cot_fewshot/*.yaml: dataset_path).
BBH_DATASET = "SaylorTwift/bbh"
MULTIPL_E_LANGS = ("cpp", "go", "java", "js", "php", "py", "r", "rb", "rs", "ts")


@dataclass(frozen=True)
class HubModel:
    repo_id: str
    arch: str                   # llama | mpt | gpt_neox (fusebench.models.build)
    tokenizer: str              # key of TOKENIZERS
    seed: int
    hidden: int = 32
    dtype: str = "float32"      # the dtype the weights are stored in (config `dtype` says the same)
    weights: str = "safetensors"  # safetensors | bin (pytorch_model.bin only, as OpenLLaMA-v2 and MPT-7B on main)
    max_shard_size: str | None = None
    branch: str = "main"        # the ref that names the snapshot; not "main": reachable only at that revision
    pad_vocab_to: int = 0       # model vocab rounded up to a multiple of this (MPT 50432, Pythia 50304)
    # twice the real model's context (Llama-2 4096, the others 2048): these tiny vocabularies (700-1000 pieces)
    # need about twice the tokens of the real 32k / 50k ones for the same text, so the prompts that fit the real
    # models (3-shot BBH) fit these. Positions carry no weights in these architectures, so this costs nothing.
    context: int = 4096
    chat_template: str | None = None  # the real model's template (Jinja), saved with its tokenizer
    chat_tokens: tuple[str, ...] = ()  # the special tokens that template writes, added to the vocabulary as on the hub

    @property
    def commit(self) -> str:
        return hashlib.sha1(f"{self.repo_id}@{self.branch}".encode()).hexdigest()


# tokenizer key -> (kind, vocab size, slice of the stdlib documents it is trained on: their first 6000 characters,
# which keeps the three trainings to a few seconds)
TOKENIZERS = {"llama2": ("unigram", 1500, slice(0, 24)), "openllama": ("unigram", 1200, slice(6, 30)),
              "neox": ("bpe", 2000, slice(0, 30))}

MODELS = (
    HubModel("meta-llama/Llama-2-7b-hf", "llama", "llama2", 0, dtype="float16", max_shard_size="40KB", context=8192),
    HubModel("meta-llama/Llama-2-13b-hf", "llama", "llama2", 1, hidden=48, dtype="float16", max_shard_size="60KB",
             context=8192),
    HubModel("openlm-research/open_llama_7b_v2", "llama", "openllama", 2, dtype="float16", weights="bin"),
    HubModel("mosaicml/mpt-7b", "mpt", "neox", 3, dtype="bfloat16", weights="bin", pad_vocab_to=64),
    HubModel("EleutherAI/pythia-1b", "gpt_neox", "neox", 4, dtype="float16", pad_vocab_to=64),
    # Pythia publishes intermediate checkpoints as branches (step1000, ...); this id has no refs/main at all
    HubModel("EleutherAI/pythia-14m", "gpt_neox", "neox", 5, branch="step1000", pad_vocab_to=64),
)

# FuseChat (recipes/fusechat.yaml): the pivot in OpenChat-3.5's own template, the sources in Nous-Hermes-2's ChatML;
# all SentencePiece as the real ones, the pivot and SOLAR on one base vocabulary with different added chat tokens
OPENCHAT_TEMPLATE = ("{{ bos_token }}{% for message in messages %}{{ 'GPT4 Correct ' + message['role'].title() + ': ' "
                     "+ message['content'] + '<|end_of_turn|>'}}{% endfor %}{% if add_generation_prompt %}"
                     "{{ 'GPT4 Correct Assistant:' }}{% endif %}")
CHATML_TEMPLATE = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
                   "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
                   "{% endif %}")
FUSECHAT_MODELS = (
    HubModel("openchat/openchat_3.5", "llama", "llama2", 6, dtype="bfloat16", max_shard_size="40KB",
             chat_template=OPENCHAT_TEMPLATE, chat_tokens=("<|end_of_turn|>",)),
    HubModel("NousResearch/Nous-Hermes-2-Mixtral-8x7B-DPO", "llama", "openllama", 7, hidden=48, dtype="bfloat16",
             chat_template=CHATML_TEMPLATE, chat_tokens=("<|im_start|>", "<|im_end|>")),
    HubModel("NousResearch/Nous-Hermes-2-SOLAR-10.7B", "llama", "llama2", 8, hidden=48, dtype="bfloat16",
             chat_template=CHATML_TEMPLATE, chat_tokens=("<|im_start|>", "<|im_end|>")),
)


def stdlib_documents() -> list[str]:
    """Real text on every machine: the Python standard library's json, email and http sources."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [*sorted((root / "json").glob("*.py")), *sorted((root / "email").glob("*.py")),
             *sorted((root / "http").glob("*.py"))]
    return [f.read_text(encoding="utf-8") for f in files]


# ---- models -------------------------------------------------------------------------------------------------

def _train_tokenizers(work: Path, docs: list[str]) -> dict[str, Path]:
    from fusebench.models.tokenizers import train_tokenizer

    out = {}
    for key, (kind, size, part) in TOKENIZERS.items():
        out[key] = work / f"tok-{key}"
        train_tokenizer(kind, [d[:6000] for d in docs[part]], size, out[key])
    return out


def _save_model(spec: HubModel, tok_dir: Path, snapshot: Path) -> None:
    import torch
    from transformers import AutoTokenizer

    from fusebench.models.build import ModelSize, build_model

    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    if spec.chat_tokens:
        tok.add_special_tokens({"additional_special_tokens": list(spec.chat_tokens)})
    tok.chat_template = spec.chat_template
    vocab = len(tok)
    if spec.pad_vocab_to:
        vocab = -(-vocab // spec.pad_vocab_to) * spec.pad_vocab_to
    model = build_model(spec.arch, vocab, ModelSize(hidden=spec.hidden, layers=2, heads=4, max_positions=spec.context),
                        tok.bos_token_id, tok.eos_token_id, spec.seed)
    model = model.to(getattr(torch, spec.dtype))
    if spec.weights == "bin":
        # what pre-safetensors checkpoints are: a pickled state dict next to config.json
        model.config.save_pretrained(snapshot)
        if model.generation_config is not None:
            model.generation_config.save_pretrained(snapshot)
        torch.save(model.state_dict(), snapshot / "pytorch_model.bin")
    else:
        model.save_pretrained(snapshot, max_shard_size=spec.max_shard_size or "50GB")
    tok.save_pretrained(snapshot)
    if (tok_dir / "tokenizer.model").exists():  # the SentencePiece model ships next to tokenizer.json, as on the hub
        (snapshot / "tokenizer.model").write_bytes((tok_dir / "tokenizer.model").read_bytes())


def model_snapshot(hf_home: Path, spec: HubModel) -> Path:
    org, name = spec.repo_id.split("/")
    return Path(hf_home) / "hub" / f"models--{org}--{name}" / "snapshots" / spec.commit


def _write_models(hf_home: Path, work: Path, docs: list[str], models: tuple[HubModel, ...]) -> None:
    toks = _train_tokenizers(work, docs)
    for spec in models:
        snapshot = model_snapshot(hf_home, spec)
        snapshot.mkdir(parents=True, exist_ok=True)
        _save_model(spec, toks[spec.tokenizer], snapshot)
        refs = snapshot.parents[1] / "refs"
        refs.mkdir(exist_ok=True)
        (refs / spec.branch).write_text(spec.commit)


# ---- datasets -----------------------------------------------------------------------------------------------

def dataset_dir(hf_home: Path, repo_id: str, config: str, commit: str = "fusebench") -> Path:
    """Where `datasets` 5.x looks for a prepared copy of (repo_id, config) when the hub cannot be reached. Prepared
    online, the last folder is the dataset's commit sha (the builder's hash; fusebench/evaluate/revisions.py)."""
    from datasets.naming import camelcase_to_snakecase

    org, name = repo_id.split("/")
    return Path(hf_home) / "datasets" / f"{org}___{camelcase_to_snakecase(name)}" / config / "0.0.0" / commit


def write_dataset(hf_home: Path, repo_id: str, config: str, splits: dict[str, list[dict]], features,
                  commit: str = "fusebench") -> Path:
    """Write `splits` (split -> rows) as datasets' prepared cache of (repo_id, config), with datasets' own writer."""
    import datasets
    from datasets.arrow_writer import ArrowWriter
    from datasets.naming import camelcase_to_snakecase

    out = dataset_dir(hf_home, repo_id, config, commit)
    out.mkdir(parents=True, exist_ok=True)
    prefix = camelcase_to_snakecase(repo_id.split("/")[1])
    split_dict = datasets.SplitDict(dataset_name=prefix)
    for split, rows in splits.items():
        with ArrowWriter(features=features, path=str(out / f"{prefix}-{split}.arrow")) as writer:
            for row in rows:
                writer.write(features.encode_example(row))
            num_examples, num_bytes = writer.finalize()
        split_dict.add(datasets.SplitInfo(name=split, num_bytes=num_bytes, num_examples=num_examples,
                                          dataset_name=prefix))
    info = datasets.DatasetInfo(features=features, config_name=config, dataset_name=prefix, splits=split_dict,
                                builder_name="parquet", version="0.0.0")
    info.write_to_directory(str(out))
    return out


def _choices(texts: list[str], labels: list[str]) -> dict:
    return {"text": texts, "label": labels}


def _mc_rows(docs: list[str], n: int, offset: int) -> list[tuple[str, list[str]]]:
    """(question, 4 answer options) made of real lines of text, so every row differs."""
    lines = [ln.strip() for d in docs for ln in d.splitlines() if 20 < len(ln.strip()) < 90]
    return [(lines[offset + 5 * i], lines[offset + 5 * i + 1:offset + 5 * i + 5]) for i in range(n)]


def _write_datasets(hf_home: Path, docs: list[str], rows: int) -> None:
    from datasets import ClassLabel, Features, List, Value

    text = Features({"text": Value("string")})
    # MiniPile: train / validation / test, one `text` column
    write_dataset(hf_home, "JeanKaddour/minipile", "default",
                  {"train": [{"text": d} for d in docs[:-6]], "validation": [{"text": d} for d in docs[-6:-3]],
                   "test": [{"text": d} for d in docs[-3:]]}, text)
    # The Pile's components as configs (ArmelR/the-pile-splitted), text + meta.pile_set_name, train / test
    pile = Features({"text": Value("string"), "meta": {"pile_set_name": Value("string")}})
    for i, config in enumerate(("PhilPapers", "NIH ExPorter", "UPSTO Backgrounds")):
        part = docs[i * 8:(i + 1) * 8]
        write_dataset(hf_home, "ArmelR/the-pile-splitted", config,
                      {split: [{"text": d, "meta": {"pile_set_name": config}} for d in ds]
                       for split, ds in (("train", part[:6]), ("test", part[6:]))}, pile)

    arc = Features({"id": Value("string"), "question": Value("string"),
                    "choices": {"text": List(Value("string")), "label": List(Value("string"))},
                    "answerKey": Value("string")})
    for k, config in enumerate(("ARC-Easy", "ARC-Challenge")):
        write_dataset(hf_home, "allenai/ai2_arc", config, {
            split: [{"id": f"{config}-{split}-{i}", "question": q, "choices": _choices(opts, list("ABCD")),
                     "answerKey": "ABCD"[i % 4]} for i, (q, opts) in enumerate(_mc_rows(docs, rows, 40 * s + k))]
            for s, split in enumerate(("train", "validation", "test"))}, arc)
    obqa = Features({"id": Value("string"), "question_stem": Value("string"),
                     "choices": {"text": List(Value("string")), "label": List(Value("string"))},
                     "answerKey": Value("string")})
    write_dataset(hf_home, "allenai/openbookqa", "main", {
        split: [{"id": f"{split}-{i}", "question_stem": q, "choices": _choices(opts, list("ABCD")),
                 "answerKey": "ABCD"[(i + 1) % 4]} for i, (q, opts) in enumerate(_mc_rows(docs, rows, 300 + 40 * s))]
        for s, split in enumerate(("train", "validation", "test"))}, obqa)
    boolq = Features({"question": Value("string"), "passage": Value("string"), "idx": Value("int32"),
                      "label": ClassLabel(names=["False", "True"])})
    write_dataset(hf_home, "aps/super_glue", "boolq", {
        split: [{"question": q.lower().rstrip("?."), "passage": " ".join(opts), "idx": i, "label": i % 2}
                for i, (q, opts) in enumerate(_mc_rows(docs, rows, 600 + 40 * s))]
        for s, split in enumerate(("train", "validation", "test"))}, boolq)
    hella = Features({name: Value("string") for name in
                      ("ind", "activity_label", "ctx_a", "ctx_b", "ctx", "source_id", "split", "split_type")} |
                     {"endings": List(Value("string")), "label": Value("string")})
    write_dataset(hf_home, "Rowan/hellaswag", "default", {
        split: [{"ind": str(i), "activity_label": "Reading code", "ctx_a": q, "ctx_b": "then", "ctx": f"{q} then",
                 "endings": opts, "source_id": f"src-{i}", "split": split, "split_type": "indomain",
                 "label": str(i % 4)} for i, (q, opts) in enumerate(_mc_rows(docs, rows, 900 + 40 * s))]
        for s, split in enumerate(("train", "validation", "test"))}, hella)
    _write_bbh(hf_home, docs, rows)
    write_multipl_e(hf_home)
    _write_fusechat_mixture(hf_home)


def _write_fusechat_mixture(hf_home: Path) -> None:
    """FuseAI/FuseChat-Mixture: one `train` split of ShareGPT `conversations` ({from: human|gpt, value})."""
    from datasets import Features, List, Value
    from fixtures.make_chat_corpus import conversations  # tests/ is on sys.path under pytest

    turns = Features({"id": Value("string"), "conversations": List({"from": Value("string"),
                                                                      "value": Value("string")})})
    rows = [{"id": f"stdlib-{i}", "conversations": [{"from": "human" if m["role"] == "user" else "gpt",
                                                     "value": m["content"]} for m in conv]}
            for i, conv in enumerate(conversations()[:120])]
    write_dataset(hf_home, "FuseAI/FuseChat-Mixture", "default", {"train": rows}, turns)


def _write_bbh(hf_home: Path, docs: list[str], rows: int) -> None:
    from datasets import Features, Value

    from fusebench.evaluate.bbh_offline import BBH_TASKS

    features = Features({"input": Value("string"), "target": Value("string")})
    items = _mc_rows(docs, rows * len(BBH_TASKS), 1200)
    for t, task in enumerate(BBH_TASKS):
        mine = items[t * rows:(t + 1) * rows]
        write_dataset(hf_home, BBH_DATASET, task, {"test": [
            {"input": q + "\nOptions:\n" + "\n".join(f"({'ABCD'[j]}) {o}" for j, o in enumerate(opts)),
             "target": f"({'ABCD'[i % 4]})"} for i, (q, opts) in enumerate(mine)]}, features)


def multipl_e_pinned_revision() -> str:
    """The MultiPL-E revision fusebench's task YAMLs pin (dataset_kwargs.revision)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    path = Path(__file__).resolve().parents[1] / "tasks" / "multipl_e" / "_default_multipl_e_yaml"
    return load_yaml(path, resolve_func=False)["dataset_kwargs"]["revision"]


def write_multipl_e(hf_home: Path, commit: str | None = None, langs: tuple[str, ...] = MULTIPL_E_LANGS) -> None:
    """nuprl/MultiPL-E `humaneval-<lang>`: the rows of tests/multipl_e_rows.py (two HumanEval problems per language
    in MultiPL-E's row format, with its column names and stop tokens), as if prepared online at `commit` (default:
    the revision fusebench pins)."""
    from datasets import Features, List, Value
    from multipl_e_rows import rows  # tests/ is on sys.path under pytest

    features = Features({name: Value("string") for name in
                         ("name", "language", "prompt", "doctests", "original", "prompt_terminology", "tests")} |
                        {"stop_tokens": List(Value("string"))})
    for lang in langs:
        write_dataset(hf_home, "nuprl/MultiPL-E", f"humaneval-{lang}", {"test": rows(lang)}, features,
                      commit or multipl_e_pinned_revision())


# ---- the whole cache ----------------------------------------------------------------------------------------

def build_hub_cache(hf_home: Path, rows: int = 4, models: tuple[HubModel, ...] = MODELS,
                    docs: list[str] | None = None) -> Path:
    """Fill `hf_home` with the models in `models` and every dataset (`rows` items per evaluation split); returns
    `hf_home`. Use it as HF_HOME (with HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1) in the processes that read it."""
    hf_home = Path(hf_home)
    docs = docs if docs is not None else stdlib_documents()
    work = hf_home / "_build"  # tokenizers are trained here, then copied into each snapshot
    _write_models(hf_home, work, docs, models)
    _write_datasets(hf_home, docs, rows)
    return hf_home


def hub_env(hf_home: Path) -> dict[str, str]:
    """The environment variables that point a process at the private cache, offline."""
    return {"HF_HOME": str(hf_home), "HF_HUB_CACHE": str(Path(hf_home) / "hub"),
            "HF_DATASETS_CACHE": str(Path(hf_home) / "datasets"), "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


# ---- datasets as `hf download --repo-type dataset` leaves them -------------------------------------------------

def write_hub_dataset(hf_home: Path, repo_id: str, files: dict[str, bytes], branch: str = "main") -> str:
    """Files of a dataset repository in the hub-cache layout (`hub/datasets--ORG--NAME/snapshots/<commit>/...` +
    `refs/<branch>`), as `hf download --repo-type dataset ID` leaves them; returns the commit."""
    org, name = repo_id.split("/")
    commit = hashlib.sha1(f"dataset:{repo_id}@{branch}".encode()).hexdigest()
    repo = Path(hf_home) / "hub" / f"datasets--{org}--{name}"
    for rel, data in files.items():
        (repo / "snapshots" / commit / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / "snapshots" / commit / rel).write_bytes(data)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / branch).write_text(commit)
    return commit


def parquet_bytes(rows: list[dict]) -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    return buf.getvalue()


def arrow_bytes(rows: list[dict]) -> bytes:
    """An Arrow stream file, as `datasets`' save_to_disk writes its `data-*.arrow` shards."""
    import io

    import pyarrow as pa

    table = pa.Table.from_pylist(rows)
    buf = io.BytesIO()
    with pa.ipc.new_stream(buf, table.schema) as writer:
        writer.write_table(table)
    return buf.getvalue()


def jsonl_gz_bytes(rows: list[dict]) -> bytes:
    import gzip
    import json

    return gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode())
