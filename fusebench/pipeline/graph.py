"""Recipe -> stage graph.

    corpus ─┬─> tokenizer ─> model (from config) ─┐
            └─> chunks (target tokenizer) ─┬─> extract (each teacher, and the target itself)
                                           │      └─> align (teacher -> target, through a vocab map)
                                           └─────────> model (continual: CLM / KD / FuseLLM)
    models ─> ensemble | merge ─> evaluate (per model x suite) ─> results/ ─> reports/

Stage ids read like paths of the data: `extract:src_neox@general.llama_sp`, `align:src_neox->target@...`.
"""

from __future__ import annotations

import difflib

from fusebench.errors import FusebenchError
from fusebench.pipeline import stages as S
from fusebench.pipeline.codehash import stage_code
from fusebench.pipeline.recipe import FusionSpec, ModelSpec, Recipe
from fusebench.pipeline.runner import Stage

# suites that score the test split of the recipe's `evaluate.perplexity_corpora`
CORPUS_SUITES = ("perplexity", "chat", "chat_judge")


def check_registry_names(recipe: Recipe) -> None:
    """Unknown registry names (fusion function, aligner, vocab map, suite) fail before any work starts."""
    from fusebench.align import ALIGNERS, VOCAB_MAPS
    from fusebench.evaluate.suites import SUITES
    from fusebench.fuse.functions import FUSION_FUNCTIONS

    def check(value: str, registry, where: str) -> None:
        if value not in registry:
            close = difflib.get_close_matches(value, list(registry), n=3)
            raise FusebenchError(f"{where}: unknown name {value!r}; valid: {', '.join(registry)}"
                                 + (f" (did you mean {', '.join(map(repr, close))}?)" if close else ""))

    for name, m in recipe.models.items():
        if m.fusion:
            check(m.fusion.function, FUSION_FUNCTIONS, f"models.{name}.fusion.function")
            check(m.fusion.aligner, ALIGNERS, f"models.{name}.fusion.aligner")
            check(m.fusion.vocab_map, VOCAB_MAPS, f"models.{name}.fusion.vocab_map")
            if m.fusion.aligner == "statistics" and m.fusion.vocab_map != "statistics":
                raise FusebenchError(f"models.{name}.fusion.aligner: 'statistics' weights blocks by the corpus "
                                     "alignment counts of the 'statistics' vocab map; set fusion.vocab_map: statistics")
    for suite in (recipe.evaluate.suites if recipe.evaluate else []):
        check(suite, SUITES, "evaluate.suites")


# roles of the fixed inputs of a comparison: trained once, whatever `seeds` says
SHARED_ROLES = {"target", "source", "teacher", "expert", "base", "reference"}


def seed_dependent(recipe: Recipe) -> set[str]:
    """The models trained once per seed when a recipe lists `seeds`.

    What a comparison varies is the continual training of the compared methods: the CLM control, KD and FuseLLM
    (`init:` models whose role is not one of SHARED_ROLES) - their training seed sets their data order. Models made
    from such a model (ensembles, merges, further training, a teacher) depend on the seed too. Everything else is
    shared by every seed: corpora, tokenizers, pretrained models and their continual variants that serve as inputs
    (sources, experts, teachers), and therefore the teachers' extracted stores and their alignments."""
    out: set[str] = set()
    changed = True
    while changed:
        changed = False
        for name, m in recipe.models.items():
            if name in out:
                continue
            own = bool(m.init) and m.role not in SHARED_ROLES
            inputs = [m.init, *m.teachers, *(m.ensemble or []), *((m.merge.models + [m.merge.base]) if m.merge else [])]
            if own or any(x in out for x in inputs if x):
                out.add(name)
                changed = True
    return out


class GraphBuilder:
    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.stages: dict[str, Stage] = {}
        self.dependent = seed_dependent(recipe) if recipe.seeds else set()
        self.seed: int | None = None          # the seed being built (build_stages sets it)

    def sfx(self, model: str) -> str:
        """`.s<seed>` after the name of a seed-dependent model's stages; empty for shared ones."""
        return f".s{self.seed}" if self.seed is not None and model in self.dependent else ""

    def add(self, sid: str, config: dict, inputs: list[str], run, resumable: bool = False) -> str:
        if sid not in self.stages:
            kind = sid.split(":", 1)[0]
            # extraction, alignment and training are the stages that shard over processes under `accelerate launch`
            distributed = resumable and kind in ("extract", "align", "model")
            # the key covers the code the body really runs, read off its source (pipeline/codehash.py)
            self.stages[sid] = Stage(sid, kind, config, inputs, run, stage_code(run), resumable, distributed)
        return sid

    # --- leaves ---
    def corpus(self, name: str) -> str:
        spec = self.recipe.corpora[name]
        # an unset revision stays out of the key, so corpora cached before `revision` existed keep their keys
        config = spec.model_dump(exclude={"revision"} if spec.revision is None else set())
        return self.add(f"corpus:{name}", config, [], S.corpus(spec))

    def tokenizer(self, name: str) -> str:
        spec = self.recipe.tokenizers[name]
        inputs = [self.corpus(spec.corpus)] if spec.corpus else []
        cfg = spec.model_dump(exclude={"chat_template"} if spec.chat_template is None else set())
        return self.add(f"tokenizer:{name}", cfg, inputs, S.tokenizer(spec, inputs[0] if inputs else None))

    def tokenizer_of(self, model: str) -> str:
        """The stage that carries `model`'s tokenizer: its tokenizer stage when it has one, else the model itself.
        Keying chunks and vocab maps by this (not by weights) keeps retraining a model from re-extracting others."""
        m = self.recipe.models[model]
        if m.tokenizer:
            return self.tokenizer(m.tokenizer)
        if m.init:
            return self.tokenizer_of(m.init)
        if m.ensemble:
            return self.tokenizer_of(m.ensemble[0])
        if m.merge:
            return self.tokenizer_of(m.merge.models[0])
        return self.model(model)

    def _tokenizer_files(self, model: str) -> tuple[str, str | None] | None:
        """(local directory or hub id, revision) holding `model`'s pretrained tokenizer, if it has one."""
        m = self.recipe.models[model]
        if m.tokenizer:
            t = self.recipe.tokenizers[m.tokenizer]
            return (t.path, None) if t.kind == "pretrained" else None
        nxt = m.init or (m.ensemble or [None])[0] or (m.merge.models[0] if m.merge else None)
        if nxt:
            return self._tokenizer_files(nxt)
        return (m.path, m.revision) if m.path else None

    def same_tokenizer(self, a: str, b: str) -> bool:
        """Whether models a and b tokenize identically: the same tokenizer stage, or pretrained tokenizers of the same
        identity (Llama-2-13B and Llama-2-7B; `models.hub.tokenizer_identity`). Such a teacher needs no vocab map
        and no alignment."""
        if self.tokenizer_of(a) == self.tokenizer_of(b):
            return True
        from fusebench.models.hub import tokenizer_identity

        fa, fb = (self._tokenizer_files(x) for x in (a, b))
        if fa is None or fb is None:
            return False
        ha = tokenizer_identity(*fa)
        return ha is not None and ha == tokenizer_identity(*fb)

    # --- models ---
    def model(self, name: str) -> str:
        sid = f"model:{name}{self.sfx(name)}"
        if sid in self.stages:
            return sid
        m = self.recipe.models[name]
        if self.sfx(name) and m.train:   # seed s offsets the model's own training seed: seed 0 is the plain run
            m = m.model_copy(update={"train": m.train.model_copy(update={"seed": m.train.seed + self.seed})})
        cfg = m.model_dump(exclude={"role"})
        if m.train and m.train.epochs is None:  # unset: the config (and key) stays what it was before `epochs`
            cfg["train"].pop("epochs")
        if m.path:
            return self.add(sid, cfg, [], S.pointer_model(m.path, m.trust_remote_code, m.revision))
        if m.gguf:
            return self.add(sid, cfg, [], S.gguf_model(m.gguf))
        if m.ensemble:
            members = [self.model(x) for x in m.ensemble]
            return self.add(sid, cfg, members, S.ensemble(members, m.weights))
        if m.merge:
            names = m.merge.models + ([m.merge.base] if m.merge.base else [])
            members = {x: self.model(x) for x in names}
            return self.add(sid, cfg, list(members.values()), S.merge(m.merge, members))
        return self._trained(name, m, sid, cfg)

    def _trained(self, name: str, m: ModelSpec, sid: str, cfg: dict) -> str:
        tok_stage = self.tokenizer_of(name)
        cap = m.train.steps * m.train.batch_size if m.train.steps else None
        chunks = self.chunks(m.train.corpus, tok_stage, m.train.seq_len, cap)
        inputs = [chunks]
        init = self.model(m.init) if m.init else None
        tokenizer = None if m.init else self.tokenizer(m.tokenizer)
        inputs += [x for x in (init, tokenizer) if x]
        teacher_stages, own_store = None, None
        if m.teachers:
            fusion = m.fusion or FusionSpec()
            cfg["fusion"] = fusion.model_dump()
            own_store = self.extract(m.init, chunks, fusion, m.train.seq_len)
            # a teacher sharing the target's tokenizer feeds its own store: its ids already are the target's
            teacher_stages = [(t, self.extract(t, chunks, fusion, m.train.seq_len) if self.same_tokenizer(t, m.init)
                               else self.aligned(t, m.init, chunks, own_store, fusion, m.train.seq_len))
                              for t in m.teachers]
            inputs += [own_store] + [a for _, a in teacher_stages]
            m = m.model_copy(update={"fusion": fusion})
        return self.add(sid, cfg, inputs, S.trained_model(name, m, chunks, init, tokenizer, teacher_stages, own_store),
                        resumable=True)

    # --- the fusion data path ---
    def chunks(self, corpus: str, tok_stage: str, seq_len: int, max_sequences: int | None) -> str:
        """The training texts, packed: one epoch, or what capped steps will read, so teachers extract nothing unused."""
        c = self.corpus(corpus)
        tok_name = tok_stage.split(":", 1)[1]
        return self.add(f"chunks:{corpus}.{tok_name}.{seq_len}.{f'n{max_sequences}' if max_sequences else 'epoch'}",
                        {"seq_len": seq_len, "max_sequences": max_sequences}, [c, tok_stage],
                        S.chunks(c, tok_stage, seq_len, max_sequences))

    def extract(self, model: str, chunks: str, fusion: FusionSpec, seq_len: int) -> str:
        mstage = self.model(model)
        cfg = {"top_k": fusion.top_k, "seq_len": seq_len}  # batch size does not change the result: not in the key
        return self.add(f"extract:{model}{self.sfx(model)}@{chunks.split(':', 1)[1]}", cfg, [mstage, chunks],
                        S.extract(mstage, chunks, fusion.top_k, fusion.extract_batch_size, seq_len), resumable=True)

    def aligned(self, teacher: str, target: str, chunks: str, target_store: str, fusion: FusionSpec,
                seq_len: int) -> str:
        src_store = self.extract(teacher, chunks, fusion, seq_len)
        src_tok, tgt_tok = self.tokenizer_of(teacher), self.tokenizer_of(target)
        # `statistics` counts DTW alignments over the training chunks, so those are an input (and in its name)
        corpus = [chunks] if fusion.vocab_map == "statistics" else []
        vmap = self.add(f"vocabmap:{src_tok.split(':', 1)[1]}->{tgt_tok.split(':', 1)[1]}.{fusion.vocab_map}"
                        + "".join(f"@{c.split(':', 1)[1]}" for c in corpus), {"kind": fusion.vocab_map},
                        [src_tok, tgt_tok, *corpus], S.vocab_map(fusion.vocab_map, src_tok, tgt_tok, *corpus))
        cfg = {"aligner": fusion.aligner, "fallback": fusion.fallback}
        return self.add(f"align:{teacher}{self.sfx(teacher)}->{target}{self.sfx(target)}@{chunks.split(':', 1)[1]}.{fusion.aligner}.{fusion.vocab_map}."
                        f"{fusion.fallback}", cfg, [src_store, target_store, vmap, src_tok, tgt_tok],
                        S.align(fusion.aligner, fusion.fallback, src_store, target_store, vmap, src_tok, tgt_tok),
                        resumable=True)  # shards are written atomically: a killed alignment resumes

    # --- evaluation ---
    def evaluations(self) -> list[str]:
        spec = self.recipe.evaluate
        if spec is None:
            return []
        corpus_ids = {c: self.corpus(c) for c in spec.perplexity_corpora}
        out = []
        for name in spec.models or list(self.recipe.models):
            mstage = self.model(name)
            for suite in spec.suites:
                scores_corpora = suite in CORPUS_SUITES
                inputs = [mstage] + (list(corpus_ids.values()) if scores_corpora else [])
                cfg = {**spec.model_dump(exclude={"models", "suites", "data", "backend", "max_length",
                                                  "truncate_long_prompts", "judge", "judge_model"}),
                       "data": spec.data_for(suite), "backend": spec.backend_for(suite),
                       "max_length": spec.max_length_for(name), "truncate_long_prompts": spec.truncate_for(name),
                       "suite": suite, "name": name}
                if suite == "chat_judge":
                    cfg.update(judge=spec.judge, judge_model=spec.judge_model)
                if self.sfx(name):
                    cfg["seed"] = self.seed       # publish_results files it under <model>/seed-<seed>/
                out.append(self.add(f"eval:{name}{self.sfx(name)}.{suite}", cfg, inputs,
                                    S.evaluate(name, mstage, suite, spec, corpus_ids if scores_corpora else {},
                                               self.recipe.name)))
        return out


def build_stages(recipe: Recipe) -> list[Stage]:
    check_registry_names(recipe)
    g = GraphBuilder(recipe)
    for seed in recipe.seeds or [None]:   # shared stages are added once (same id), seed-dependent ones per seed
        g.seed = seed
        for name in recipe.models:
            g.model(name)
        g.evaluations()
    return list(g.stages.values())
