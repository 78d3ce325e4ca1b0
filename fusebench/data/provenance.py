"""Which source document each held-out passage was cut from: the clusters of a passage corpus's test split.

A tiny-world corpus scored in passages (`test_passage_chars`) cuts each held-out document (a license text, a
standard-library module, twelve GO definitions, eight dictionary entries) into passages of ≤ 1000 characters.
Passages of one document are not independent draws from the domain, so a report that treats them as such
understates its intervals (fusebench/report/power.py). This re-derives, for each test passage in `test.jsonl` order,
the document it came from, from the corpus's own spec: the same pools and the same cut as `corpora.tiny_world_splits`
(read here, not recorded by the corpus stage, so that the runs published before this existed keep their cache keys
and can be published with their clusters). Publishing writes it as `clusters.json` beside the run's results.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from fusebench.data import corpora
from fusebench.errors import FusebenchError


def passage_sources(domain: str, seed: int, passage_chars: int, test: list[str], spread: bool = False) -> list[str]:
    """The source document of each test passage ("code/s0/7": the 8th document of code's test pool under split
    seed 0), in order: ids name one document across corpora, so the general mix's passages (cut from the same
    held-out documents as the domains') share their clusters with the domains'. A passage that occurs in several
    documents belongs to the first in the order the corpus takes them, as decontamination keeps the first
    occurrence."""
    names = list(corpora.DOMAINS) if domain in corpora.MIXES else [domain]
    owner: dict[str, str] = {}
    for name in names:
        for i, piece in corpora.held_out_passages(corpora._pools(name, seed)["test"], passage_chars, spread):
            owner.setdefault(piece, f"{name}/s{seed}/{i}")
    missing = sum(1 for t in test if t not in owner)
    if missing:
        raise FusebenchError(f"{missing} of {len(test)} test passages of the tiny-world corpus {domain!r} are not "
                             "passages of its held-out documents: the corpus was written by other code than this "
                             "(its pools or its cut changed). Run the corpus stage again (delete its cache "
                             "directory) before publishing.")
    return [owner[t] for t in test]


def corpus_clusters(spec, corpus_dir: Path) -> dict | None:
    """The clusters record of one corpus (None unless it is a tiny-world corpus scored in passages)."""
    if spec.kind != "tiny_world" or not spec.test_passage_chars:
        return None
    test_file = Path(corpus_dir) / "test.jsonl"
    ids = passage_sources(spec.domain, spec.seed, spec.test_passage_chars, corpora.read_split(corpus_dir, "test"),
                          spec.spread_passages)
    return {"unit": "source document of the held-out pool", "test_sha256": hashlib.sha256(
        test_file.read_bytes()).hexdigest(), "clusters": len(set(ids)), "documents": len(ids), "of_doc": ids}
