"""What a paper-scale training run needs from the loop and its data: fp32 master weights from an fp16 checkpoint,
one epoch = every token once (packed chunks), and the recipe's micro-batch / accumulation under DeepSpeed."""

from __future__ import annotations

import numpy as np
import torch

from fusebench.train.loop import TrainSettings, train


def test_fp16_checkpoint_trains_with_fp32_master_weights(tmp_path, tiny_llama_dir, stdlib_texts):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # stored in fp16, as Llama-2 is released, and loaded in its stored dtype
    AutoModelForCausalLM.from_pretrained(tiny_llama_dir).half().save_pretrained(tmp_path / "fp16")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "fp16", dtype="auto")
    assert next(model.parameters()).dtype == torch.float16
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    seqs = [np.asarray(tok(t[:400])["input_ids"][:64]) for t in stdlib_texts[:4]]
    settings = TrainSettings(steps=1, batch_size=4, lr=1e-5, warmup_ratio=0.0, checkpoint_every=10)
    history = train(model, seqs, settings, tmp_path / "resume", tok.eos_token_id)
    assert np.isfinite(history[0]["loss"])
    params = list(model.parameters())
    assert all(torch.isfinite(p).all() for p in params)            # fp16 AdamW gives NaN here
    assert all(p.dtype == torch.float32 for p in params)          # master weights in fp32


def _chunks_of(tmp_path, train: dict):
    import yaml

    from fusebench.pipeline.artifacts import Chunks, Corpus
    from fusebench.pipeline.graph import build_stages
    from fusebench.pipeline.recipe import load_recipe
    from fusebench.pipeline.runner import Runner

    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"name": "pack", "corpora": {"c": {"kind": "tiny_world", "domain": "mix",
                                                                       "train_chars": 30000, "test_chars": 2000}},
                                    "tokenizers": {"sp": {"kind": "unigram", "vocab_size": 600, "corpus": "c"}},
                                    "models": {"m": {"arch": "llama", "tokenizer": "sp",
                                                     "train": {"corpus": "c", "seq_len": 64, "batch_size": 4,
                                                               **train}}}}))
    runner = Runner(build_stages(load_recipe(path)), tmp_path / "w")
    done = runner.run("chunks:")
    chunks = Chunks(next(p for s, p in done.items() if s.startswith("chunks:"))).texts()
    docs = Corpus(next(p for s, p in done.items() if s.startswith("corpus:"))).split("train")
    tok = __import__("fusebench.pipeline.artifacts", fromlist=["Tokenizer"]).Tokenizer(
        next(p for s, p in done.items() if s.startswith("tokenizer:"))).load()
    return chunks, docs, tok


def test_one_epoch_packs_every_document_into_seq_len_chunks(tmp_path):
    chunks, docs, tok = _chunks_of(tmp_path, {})
    # no text lost: the pieces, with one separator per EOS, give back every document in order
    stream = "".join("\x00".join(c if isinstance(c, list) else [c]) for c in chunks)
    assert stream.split("\x00") == docs + [""]
    # the chunk count is the corpus's tokens (one EOS per document included) over seq_len; a chunk that starts
    # inside a document keeps one position free for the word-start marker its first piece gets when re-tokenized
    total = sum(len(ids) for ids in tok(docs, add_special_tokens=False)["input_ids"]) + len(docs)
    assert -(-total // 64) <= len(chunks) <= -(-total // 63)
    # re-tokenized by the target, chunks are full seq_len windows (the first token of a cut piece may merge
    # differently: within a few tokens), the EOS sits between documents
    from fusebench.train.data import tokenize_chunks

    seqs = tokenize_chunks(tok, chunks, max_len=10_000)
    lengths = np.array([len(s) for s in seqs[:-1]])
    assert abs(lengths.mean() - 64) < 1.5 and (lengths <= 65).all()
    assert sum(max(0, len(s) - 64) for s in seqs) <= len(seqs) // 50  # what training's seq_len cut would lose
    assert sum(int((s == tok.eos_token_id).sum()) for s in seqs) == len(docs)
    # a recipe that caps steps reads only steps x batch_size of them
    capped, _, _ = _chunks_of(tmp_path / "capped", {"steps": 2})
    assert capped == chunks[:8]


def _deepspeed_launch_env(config: str, processes: int) -> dict[str, str]:
    """The environment `accelerate launch --config_file CONFIG` gives each process, from accelerate's own launcher
    code (launch_command up to the point where it would start DeepSpeed, which is not installable on CPU)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    args = launch_command_parser().parse_args(["--config_file", config, "--num_processes", str(processes),
                                               "--main_process_port", "0", "train.py"])
    args, defaults, mp_from_config = _validate_launch_command(args)
    assert args.use_deepspeed
    args.deepspeed_fields_from_accelerate_config = ",".join(list(defaults.deepspeed_config) +
                                                            (["mixed_precision"] if mp_from_config else []))
    return prepare_deepspeed_cmd_env(args)[1]


def test_deepspeed_zero2_gets_the_recipes_micro_batch_accumulation_and_clipping(monkeypatch):
    from pathlib import Path

    from fusebench.pipeline.recipe import load_recipe
    from fusebench.train.loop import deepspeed_plugin

    root = Path(__file__).resolve().parents[1]
    env = _deepspeed_launch_env(str(root / "configs" / "accelerate" / "deepspeed_zero2.yaml"), 8)
    assert env["ACCELERATE_GRADIENT_ACCUMULATION_STEPS"] == "1"  # what the config file alone would impose
    for key, value in env.items():
        if key.startswith("ACCELERATE_"):
            monkeypatch.setenv(key, value)
    train = load_recipe(root / "recipes" / "paper.yaml").models["fusellm"].train
    plugin = deepspeed_plugin(TrainSettings.from_specs(train), processes=8)
    config = plugin.deepspeed_config
    assert plugin.zero_stage == 2 and config["zero_optimization"]["stage"] == 2
    assert plugin.gradient_accumulation_steps == config["gradient_accumulation_steps"] == train.grad_accum == 16
    assert config["train_micro_batch_size_per_gpu"] == 128 // (16 * 8) == 1
    assert config["train_batch_size"] == train.batch_size == 128
    assert config["gradient_clipping"] == train.clip
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "false")
    assert deepspeed_plugin(TrainSettings.from_specs(train), processes=8) is None


def test_one_scheduler_step_per_optimizer_step_with_accumulation(tmp_path, tiny_llama_dir, stdlib_texts):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fusebench.train.loop import lr_lambda

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    seqs = [np.asarray(tok(t[:300])["input_ids"][:32]) for t in stdlib_texts[:8]]
    settings = TrainSettings(steps=3, batch_size=4, grad_accum=2, lr=1e-3, warmup_ratio=0.5, checkpoint_every=10)
    history = train(model, seqs, settings, tmp_path / "resume", tok.eos_token_id)
    assert [(h["optimizer_steps"], h["scheduler_steps"]) for h in history] == [(1, 1), (2, 2), (3, 3)]
    assert [h["lr"] for h in history] == [1e-3 * lr_lambda(settings)(s + 1) for s in range(3)]
