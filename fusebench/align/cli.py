"""`fusebench align`: tokenize one text with two tokenizers, align them and print the path and its cost.

Also which source position each target position receives a distribution from (`transfer`, -1 for none: only where
the path closes a block and both tokens end at the same byte of the text, as the align stage transfers) and the
alignment's quality: `coverage` (share of target positions that receive one) and `precision` (share of those whose
tokens end together; 1 by construction, reported so that it is checked).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fusebench.align.ends import quality, token_ends, transfer_sources
from fusebench.align.registry import get_aligner
from fusebench.align.tokens import Alignment, Tokenization, tokenize_for_alignment
from fusebench.errors import FusebenchError


def main(args: argparse.Namespace) -> int:
    aligner = get_aligner(args.aligner)  # fail on a bad name before loading anything
    text = _read_text(args)
    source = tokenize_for_alignment(resolve_tokenizer(args.source), text)
    target = tokenize_for_alignment(resolve_tokenizer(args.target), text)
    alignment = aligner(source, target)
    src_end, tgt_end = token_ends(source, target)
    transfer = transfer_sources(alignment.pairs, src_end, tgt_end)
    figures = quality(transfer, src_end, tgt_end)
    vmap = _vocab_map_figures(args, text, source, target, transfer) if getattr(args, "vocab_map", None) else None
    if args.json:
        print(json.dumps({"source_tokens": source.tokens, "target_tokens": target.tokens,
                          "pairs": alignment.pairs.tolist(), "cost": alignment.cost, "transfer": transfer.tolist(),
                          "coverage": figures["coverage"], "precision": figures["precision"],
                          **({"vocab_map": vmap} if vmap else {})}, ensure_ascii=False))
    else:
        print(format_alignment(source, target, alignment))
        print(f"transfer: coverage {100 * figures['coverage']:.1f}% of target positions receive a source "
              f"distribution, precision {100 * figures['precision']:.1f}% of those end where their source does")
        if vmap:
            print(f"vocab map {vmap['kind']}: {100 * vmap['coverage']:.1f}% of source ids mapped; on this text it "
                  f"sends {100 * vmap['agreement']:.1f}% of transferred positions' source tokens to the target token")
    return 0


def _vocab_map_figures(args: argparse.Namespace, text: str, source: Tokenization, target: Tokenization,
                       transfer) -> dict:
    """The vocab map's coverage (share of source ids with a target id) and agreement (`statistics.map_agreement`:
    share of transferred positions whose source token the map sends to exactly the target's token)."""
    from fusebench.align.registry import build_vocab_map
    from fusebench.align.statistics import map_agreement

    source_tok, target_tok = resolve_tokenizer(args.source), resolve_tokenizer(args.target)
    corpus = {"texts": [text]} if args.vocab_map == "statistics" else {}
    vmap = build_vocab_map(args.vocab_map, source_tok, target_tok, **corpus)
    return {"kind": vmap.kind, "coverage": vmap.coverage(),
            "agreement": map_agreement(vmap.src_to_tgt, source.ids, target.ids, transfer)}


def resolve_tokenizer(spec: str):
    """A local directory or hub id; a bundled llama.cpp vocabulary name (`llama-spm`, `mpt`, ...) when no
    directory of that name exists."""
    from fusebench.models.real_tokenizers import ALIASES, REAL_TOKENIZERS, load_real_tokenizer
    from fusebench.models.tokenizers import load_tokenizer

    if not Path(spec).exists() and (spec in REAL_TOKENIZERS or spec in ALIASES):
        return load_real_tokenizer(spec)
    return load_tokenizer(spec)


def format_alignment(source: Tokenization, target: Tokenization, alignment: Alignment) -> str:
    lines = [f"source ({len(source)} tokens): {' '.join(map(repr, source.tokens))}",
             f"target ({len(target)} tokens): {' '.join(map(repr, target.tokens))}",
             "", f"{'src':>5} {'tgt':>5}  {'source token':<20} {'target token':<20}"]
    for i, j in alignment.pairs.tolist():
        lines.append(f"{i:>5} {j:>5}  {source.tokens[i]!r:<20} {target.tokens[j]!r:<20}")
    lines += ["", f"path length {len(alignment.pairs)}, total cost {alignment.cost:g}"]
    return "\n".join(lines)


def _read_text(args: argparse.Namespace) -> str:
    if args.text is not None:
        text = args.text
    else:
        try:
            text = Path(args.file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise FusebenchError(f"cannot read the text to align from {args.file}: {err}. Give a readable UTF-8 "
                                 "file with --file, or the text itself with --text.") from None
    if not text:
        raise FusebenchError("the text to align is empty: give some text with --text or a non-empty --file.")
    return text
