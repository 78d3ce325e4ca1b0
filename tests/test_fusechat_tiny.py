"""recipes/fusechat_tiny.yaml end to end, with sizes overridden small: chat corpus -> chat-tuned pivot and sources
(three architectures and tokenizers) -> pairwise fusion on replies only -> VaRM / SCE / TIES / TA / linear merges and
FuseLLM-style fusion -> bits per byte on held-out conversations."""

from __future__ import annotations

import json
import math
from pathlib import Path

from fusebench.cli import main

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "fusechat_tiny.yaml"
PRETRAINED = ("pivot_base", "neox_base", "mpt_base")
CHAT_TUNED = ("pivot", "src_neox", "src_mpt", "clm", "fusechat", "fusellm")
EVALUATED = ("pivot", "fusechat-src_neox", "fusechat_varm", "fusechat_sce", "fusellm")


def small() -> list[str]:
    """Sizes only; models, fusion settings, merges and the evaluation are the recipe's."""
    out = ["corpora.general.train_chars=40000", "corpora.chat.train_chars=12000", "corpora.chat.test_chars=3000",
           "evaluate.limit=4",
           f"evaluate.models=[{','.join(EVALUATED)}]"]
    out += [f"models.{m}.train.steps=3" for m in PRETRAINED]
    out += [f"models.{m}.train.batch_size=8" for m in CHAT_TUNED]
    return out


def test_fusechat_tiny_runs_end_to_end(tmp_path):
    wd = tmp_path / "wd"
    assert main(["run", str(RECIPE), *small(), "--workdir", str(wd), "--results", str(tmp_path / "results"),
                 "--reports", str(tmp_path / "reports")]) == 0
    models = wd / "models"
    [chunks] = [p for p in (wd / "cache" / "chunks").glob("chat.sp.512.epoch-*") if p.is_dir()]
    replies = [json.loads(line) for line in (chunks / "replies.jsonl").read_text().splitlines()]
    texts = [json.loads(line)[0] for line in (chunks / "chunks.jsonl").read_text().splitlines()]
    assert [r["text"] for r in replies] == texts and texts[0].startswith("### User:\n")
    assert all(t[lo:hi].endswith("</s>\n") or hi == len(t) for r, t in zip(replies, texts) for lo, hi in r["replies"])
    # epochs: steps = epochs x (sequences // batch) where the recipe gives no steps
    for name, epochs in (("pivot", 1), ("src_neox", 3), ("fusechat-src_mpt", 1)):
        log = (models / name / "train_log.jsonl").read_text().splitlines()
        seqs = len(texts) if name != "src_neox" else None
        if seqs is not None:
            assert len(log) == epochs * (seqs // 8), name
        assert all(math.isfinite(json.loads(line)["loss"]) for line in log)
    for source in ("src_neox", "src_mpt"):
        choices = json.loads((models / f"fusechat-{source}" / "fusion_choices.json").read_text())
        assert set(choices) == {"(own)", source}
    for merged in ("fusechat_varm", "fusechat_sce", "fusechat_ties", "fusechat_ta", "fusechat_linear"):
        assert (models / merged / "mergekit_config.yml").is_file(), merged
    for name in EVALUATED:
        [found] = list((tmp_path / "results").glob(f"*/{name}/perplexity.json"))
        bpb = json.loads(found.read_text())["results"]["ppl_chat"]["bits_per_byte,none"]
        assert 0 < bpb < 20, (name, bpb)
