"""The bodies of the stages: each reads typed inputs, calls the module that does the work, writes into `ctx.out`.

Kept free of graph logic (that is `graph.py`) so a reader sees, per stage, exactly what goes in and what comes out.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from fusebench.pipeline.artifacts import Chunks, Corpus, Model, Tokenizer, write_chunks
from fusebench.pipeline.recipe import CorpusSpec, EvaluateSpec, ModelSpec, TokenizerSpec, TrainSpec
from fusebench.pipeline.runner import StageContext

log = logging.getLogger("fusebench")


def corpus(spec: CorpusSpec):
    def run(ctx: StageContext) -> None:
        from fusebench.data import corpora

        if spec.kind == "tiny_world":
            train, test, prov = corpora.tiny_world_splits(spec.domain, spec.seed, spec.train_chars, spec.test_chars,
                                                          spec.test_passage_chars, spec.decontaminate,
                                                          spec.spread_passages)
        elif spec.kind == "hub":
            train, test, prov = corpora.hub_splits(spec.path, spec.name, spec.text_field, spec.train_split,
                                                   spec.test_split, spec.train_chars, spec.test_chars, spec.revision)
        elif spec.kind == "chat":
            from fusebench.data import chat

            train, test, prov = chat.chat_splits(spec.sources, spec.seed, spec.train_chars, spec.test_chars, spec.turns)
            return chat.write_chat_corpus(ctx.out, train, test, {"spec": spec.model_dump(), **prov})
        else:
            train, test, prov = corpora.files_splits(spec.files, spec.seed, spec.train_chars, spec.test_chars,
                                                     spec.text_field)
        corpora.write_corpus(ctx.out, train, test, {"spec": spec.model_dump(), **prov})
    return run


def tokenizer(spec: TokenizerSpec, corpus_id: str | None):
    def run(ctx: StageContext) -> None:
        from fusebench.models.tokenizers import load_tokenizer, train_tokenizer

        if spec.kind == "pretrained":
            tok = load_tokenizer(spec.path)
        else:  # saved as trained
            tok = train_tokenizer(spec.kind, Corpus(ctx.input(corpus_id)).split("train"), spec.vocab_size, ctx.out)
        if spec.chat_template:  # a model trained from this tokenizer saves it too, so its chat chunks use it
            tok.chat_template = spec.chat_template
        if spec.kind == "pretrained" or spec.chat_template:
            tok.save_pretrained(ctx.out)
    return run


def chunks(corpus_id: str, tokenizer_id: str, seq_len: int, max_sequences: int | None):
    """The corpus packed into seq_len-token chunks (documents separated by EOS); at most `max_sequences` of them
    when the recipe caps training steps, else all (one epoch). `packing.json` says what was kept. A chat corpus
    gives one chunk per conversation rendered in this (the pivot's) tokenizer's template, with its reply spans."""
    def run(ctx: StageContext) -> None:
        from fusebench.train.data import pack_documents

        tok = _tokenizer_of(ctx.input(tokenizer_id))
        corpus = Corpus(ctx.input(corpus_id))
        conversations, replies = corpus.conversations("train"), None
        if conversations is None:
            texts = pack_documents(tok, corpus.split("train"), seq_len)
        else:
            from fusebench.train.chat import chat_chunks

            replies = chat_chunks(tok, conversations, seq_len)
            texts = [[c["text"]] for c in replies]
        kept = texts[:max_sequences] if max_sequences else texts
        write_chunks(ctx.out, kept, replies[:len(kept)] if replies is not None else None)
        (ctx.out / "packing.json").write_text(json.dumps({"seq_len": seq_len, "chunks": len(texts),
                                                          "kept": len(kept), "max_sequences": max_sequences}))
    return run


def _tokenizer_of(path: Path):
    """A tokenizer stage's or a model stage's tokenizer."""
    if (path / "tokenizer.json").exists() or (path / "tokenizer_config.json").exists():
        return Tokenizer(path).load()
    return Model(path).tokenizer()


def pointer_model(location: str, trust_remote_code: bool, revision: str | None = None):
    """A pretrained model: a local directory or a hub id at `revision`, resolved once (fusebench.models.hub).

    Safetensors weights are pointed to where they are (`pointer.json`: the local directory, plus the hub id and
    revision it came from); `.bin`-only models are converted into this stage's directory, once."""
    def run(ctx: StageContext) -> None:
        from transformers import AutoConfig

        from fusebench.errors import FusebenchError
        from fusebench.models.hub import convert_bin_to_safetensors, has_safetensors, is_hub_id, resolve_pretrained

        local = resolve_pretrained(location, revision, trust_remote_code)
        try:  # config only: proves the model is a transformers model without loading weights
            AutoConfig.from_pretrained(str(local), trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as err:
            raise FusebenchError(f"model {location!r} (at {local}) has no usable config.json: {str(err)[:300]}. "
                                 "Give a Hugging Face model directory or hub id.") from None
        origin = {"hub_id": location if is_hub_id(location) else None, "revision": revision,
                  "resolved": str(local), "trust_remote_code": trust_remote_code}
        if has_safetensors(local):
            (ctx.out / "pointer.json").write_text(json.dumps({"location": str(local), **origin}))
        else:
            convert_bin_to_safetensors(local, ctx.out)
            (ctx.out / "converted_from.json").write_text(json.dumps(origin))
    return run


def gguf_model(source: str):
    def run(ctx: StageContext) -> None:
        from fusebench.models.gguf import resolve_gguf, gguf_to_hf

        gguf_to_hf(resolve_gguf(source), ctx.out)
    return run


def trained_model(name: str, spec: ModelSpec, chunks_id: str, init_id: str | None, tokenizer_id: str | None,
                  teacher_ids: list[tuple[str, str]] | None, target_store_id: str | None):
    """Pretraining from config (`arch`) or continual training (`init`), with or without teachers."""
    def run(ctx: StageContext) -> None:
        import torch

        from fusebench.train.data import chunk_text, tokenize_chunks
        from fusebench.train.loop import TrainSettings, sum_over_processes, train

        torch.manual_seed(spec.train.seed)
        if init_id is not None:
            from fusebench.train.load import load_init_model

            base = Model(ctx.input(init_id))
            model = load_init_model(base.location, base.trust_remote_code)  # fp32; once per node under FSDP
            tok = base.tokenizer()
        else:
            from fusebench.models.build import ModelSize, build_model

            tok = Tokenizer(ctx.input(tokenizer_id)).load()
            model = build_model(spec.arch, len(tok), spec.size or ModelSize(), tok.bos_token_id, tok.eos_token_id,
                                spec.train.seed)
        chunks = Chunks(ctx.input(chunks_id))
        texts = chunks.texts()
        seqs = tokenize_chunks(tok, texts, spec.train.seq_len)
        replies = chunks.replies()
        loss_masks = None
        if replies is not None:  # chat: the loss counts reply tokens only
            from fusebench.train.chat import reply_masks

            loss_masks = reply_masks(tok, replies, spec.train.seq_len)
        train_spec = spec.train
        if train_spec.steps is None:  # `epochs` (default 1) of the packed chunks (a last partial batch is left out)
            epochs = train_spec.epochs or 1
            train_spec = train_spec.model_copy(update={"steps": max(1, epochs * (len(seqs) // train_spec.batch_size))})
        targets = None
        if teacher_ids:
            from fusebench.fuse.targets import FusedTargets

            targets = FusedTargets(ctx.input(target_store_id), [ctx.input(a) for _, a in teacher_ids],
                                   spec.fusion.function, seqs, [len(chunk_text(t).encode("utf-8")) for t in texts],
                                   include_own=spec.fusion.include_own, temperature=spec.fusion.temperature)
        settings = TrainSettings.from_specs(train_spec, spec.fusion if teacher_ids else None)
        history = train(model, seqs, settings, ctx.out / "_resume", tok.pad_token_id or 0, targets, desc=name,
                        save_dir=ctx.out, loss_masks=loss_masks)
        # each process counted the choices on its own slice of the batches: sum them (a collective: every rank)
        chosen = sum_over_processes(targets.chosen) if targets is not None else None
        if int(os.environ.get("RANK", "0")) == 0:  # the main process writes what goes beside the weights
            tok.save_pretrained(ctx.out)
            if init_id is not None and base.trust_remote_code:  # its class is the init's code, copied beside it
                (ctx.out / "trained_from.json").write_text(json.dumps({"init": base.location,
                                                                        "trust_remote_code": True}))
            (ctx.out / "train_log.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
            if targets is not None:  # how often MinCE chose each candidate (AvgCE: summed weights), for the report
                names = ["(own)"] + [t for t, _ in teacher_ids]
                (ctx.out / "fusion_choices.json").write_text(json.dumps(dict(zip(names, chosen.tolist()))))
    return run


def extract(model_id: str, chunks_id: str, top_k: int, batch_size: int, seq_len: int):
    def run(ctx: StageContext) -> None:
        from fusebench.extract.extract import extract_distributions
        from fusebench.train.data import tokenize_chunks

        from transformers import AutoConfig

        model = Model(ctx.input(model_id))
        tok = model.tokenizer()
        # sources may tokenize a chunk more finely than the target: give them room (4x), up to what the model can
        # read; a source still cut short is left out of that sequence's fusion by the align stage
        config = AutoConfig.from_pretrained(model.location, trust_remote_code=model.trust_remote_code)
        limit = next((getattr(config, k) for k in ("max_position_embeddings", "max_seq_len", "n_positions")
                      if getattr(config, k, None)), 4 * seq_len)
        seqs = tokenize_chunks(tok, Chunks(ctx.input(chunks_id)).texts(), min(4 * seq_len, limit))
        extract_distributions(model.location, [s.tolist() for s in seqs], ctx.out / "store", top_k=top_k,
                              batch_size=batch_size, shard_size=256, trust_remote_code=model.trust_remote_code)
    return run


def vocab_map(kind: str, source_tok_id: str, target_tok_id: str, chunks_id: str | None = None):
    def run(ctx: StageContext) -> None:
        from fusebench.align import build_vocab_map

        source, target = _tokenizer_of(ctx.input(source_tok_id)), _tokenizer_of(ctx.input(target_tok_id))
        if chunks_id is None:
            build_vocab_map(kind, source, target).save(ctx.out / "vocab_map")
            return
        from fusebench.align.statistics import alignment_counts  # `statistics`: DTW counts over the chunks
        from fusebench.train.data import chunk_pieces

        texts = [piece for chunk in Chunks(ctx.input(chunks_id)).texts() for piece in chunk_pieces(chunk)]
        counts = alignment_counts(source, target, texts)
        build_vocab_map(kind, source, target, counts=counts).save(ctx.out / "vocab_map")
        counts.save(ctx.out / "vocab_map")
    return run


def align(aligner: str, fallback: str, source_store_id: str, target_store_id: str, vocab_map_id: str,
          source_tok_id: str, target_tok_id: str):
    def run(ctx: StageContext) -> None:
        from fusebench.align.corpus import align_stores

        align_stores(aligner=aligner, fallback=fallback,
                     source_store=ctx.input(source_store_id) / "store",
                     target_store=ctx.input(target_store_id) / "store",
                     vocab_map=ctx.input(vocab_map_id) / "vocab_map",
                     source_tokenizer=_tokenizer_of(ctx.input(source_tok_id)),
                     target_tokenizer=_tokenizer_of(ctx.input(target_tok_id)),
                     out_dir=ctx.out / "store")
    return run


def ensemble(member_ids: list[str], weights: list[float] | None):
    def run(ctx: StageContext) -> None:
        from fusebench.ensemble import save_ensemble

        save_ensemble([Model(ctx.input(m)).location for m in member_ids], weights, ctx.out)
    return run


def merge(spec, member_ids: dict[str, str]):
    def run(ctx: StageContext) -> None:
        from fusebench.merge import merge_models

        where = {name: Model(ctx.input(sid)).location for name, sid in member_ids.items()}
        final = ctx.out.with_name(ctx.out.name.removesuffix(".partial"))  # the saved config names inputs there
        if spec.mergekit:  # a mergekit block: its model references are recipe names
            from fusebench.merge.merge import map_references

            merge_models(map_references(spec.mergekit, lambda ref: str(where.get(ref, ref))), ctx.out, final_dir=final)
            return
        if spec.method == "varm":  # FuseChat's VaRM: per-tensor weights from each target's change of the pivot
            from fusebench.merge.varm import varm_merge

            varm_merge(where[spec.base], [where[m] for m in spec.models], ctx.out)
            return
        weights = spec.weights or [1.0 / len(spec.models)] * len(spec.models)
        models = [{"path": where[m], "weight": w, **({"density": spec.density} if spec.method == "ties" else {})}
                  for m, w in zip(spec.models, weights)]
        merge_models({"method": spec.method, "models": models,
                      "base_model": where[spec.base] if spec.base else None}, ctx.out, final_dir=final)
    return run


def evaluate(model_name: str, model_id: str, suite: str, spec: EvaluateSpec, corpus_ids: dict[str, str],
             run_name: str):
    def run(ctx: StageContext) -> None:
        from fusebench.evaluate.api import evaluate_model
        from fusebench.evaluate.chat_judge import JudgeSettings

        model = Model(ctx.input(model_id))
        evaluate_model(model.location, [suite], name=model_name, limit=spec.limit,
                       workdir=ctx.workdir / "eval", results_dir=ctx.out, run_id=run_name,
                       corpora={c: ctx.input(sid) for c, sid in corpus_ids.items()}, batch_size=spec.batch_size,
                       online=spec.data_for(suite) == "hub", backend=spec.backend_for(suite),
                       max_length=spec.max_length_for(model_name), truncate_long_prompts=spec.truncate_for(model_name),
                       trust_remote_code=model.trust_remote_code, judge=JudgeSettings(spec.judge, spec.judge_model))
    return run
