"""Pre-downloaded data is usable offline (issue 21 item 5): hub datasets in the layout `hf download --repo-type
dataset` leaves (parquet, JSON lines, Arrow; C4-style configs with a `validation` split; a pinned revision), and local
parquet / JSON / Arrow files read through `datasets`' own builders, never as text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hubcache import arrow_bytes, jsonl_gz_bytes, parquet_bytes, stdlib_documents, write_hub_dataset

from fusebench.data.corpora import files_splits, hub_splits
from fusebench.errors import FusebenchError

DOCS = [d[:3000] for d in stdlib_documents()]  # 30 documents
C4_README = """---
configs:
- config_name: en
  data_files:
  - split: train
    path: en/c4-train.*.json.gz
  - split: validation
    path: en/c4-validation.*.json.gz
- config_name: realnewslike
  data_files:
  - split: train
    path: realnewslike/c4-train.*.json.gz
---
# C4 (a few rows)
"""


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    import datasets
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf" / "datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    return tmp_path / "hf"


def _rows(docs):
    return [{"text": d, "url": f"https://example.org/{i}"} for i, d in enumerate(docs)]


def test_a_parquet_dataset_from_hf_download_reads_offline(hub):
    write_hub_dataset(hub, "JeanKaddour/minipile", {
        "data/train-00000-of-00002.parquet": parquet_bytes(_rows(DOCS[:12])),
        "data/train-00001-of-00002.parquet": parquet_bytes(_rows(DOCS[12:24])),
        "data/test-00000-of-00001.parquet": parquet_bytes(_rows(DOCS[24:]))})
    train, test, prov = hub_splits("JeanKaddour/minipile", None, "text", "train", "test", 10**9, 10**9)
    assert train == DOCS[:24] and test == DOCS[24:]
    assert prov["sources"][0]["hub"] == "JeanKaddour/minipile" and len(prov["sources"][0]["revision"]) == 40


def test_c4_style_configs_with_a_validation_split_read_offline(hub):
    write_hub_dataset(hub, "allenai/c4", {
        "README.md": C4_README.encode(),
        "en/c4-train.00000-of-00002.json.gz": jsonl_gz_bytes(_rows(DOCS[:10])),
        "en/c4-train.00001-of-00002.json.gz": jsonl_gz_bytes(_rows(DOCS[10:20])),
        "en/c4-validation.00000-of-00001.json.gz": jsonl_gz_bytes(_rows(DOCS[20:25])),
        "realnewslike/c4-train.00000-of-00001.json.gz": jsonl_gz_bytes(_rows(DOCS[25:]))})
    train, test, _ = hub_splits("allenai/c4", "en", "text", "train", "validation", 10**9, 10**9)
    assert train == DOCS[:20] and test == DOCS[20:25]


def test_arrow_shards_and_a_config_folder_without_a_readme_read_offline(hub):
    write_hub_dataset(hub, "org/arrowset", {"sub/train/data-00000-of-00001.arrow": arrow_bytes(_rows(DOCS[:8])),
                                            "sub/test/data-00000-of-00001.arrow": arrow_bytes(_rows(DOCS[8:12]))})
    train, test, _ = hub_splits("org/arrowset", "sub", "text", "train", "test", 10**9, 10**9)
    assert train == DOCS[:8] and test == DOCS[8:12]


def test_the_pinned_revision_is_read_and_a_missing_one_names_the_download_command(hub):
    write_hub_dataset(hub, "org/pinned", {"data/train.parquet": parquet_bytes(_rows(DOCS[:5])),
                                          "data/test.parquet": parquet_bytes(_rows(DOCS[5:7]))})
    v1 = write_hub_dataset(hub, "org/pinned", {"data/train.parquet": parquet_bytes(_rows(DOCS[10:15])),
                                               "data/test.parquet": parquet_bytes(_rows(DOCS[15:17]))}, branch="v1")
    train, _, prov = hub_splits("org/pinned", None, "text", "train", "test", 10**9, 10**9, revision="v1")
    assert train == DOCS[10:15] and prov["sources"][0]["revision"] == v1
    assert hub_splits("org/pinned", None, "text", "train", "test", 10**9, 10**9, revision=v1)[0] == DOCS[10:15]
    with pytest.raises(FusebenchError, match=r"hf download --repo-type dataset org/pinned --revision v2"):
        hub_splits("org/pinned", None, "text", "train", "test", 10**9, 10**9, revision="v2")
    with pytest.raises(FusebenchError, match=r"hf download --repo-type dataset org/absent"):
        hub_splits("org/absent", None, "text", "train", "test", 10**9, 10**9)


@pytest.mark.parametrize("suffix", ["parquet", "jsonl", "json.gz", "arrow"])
def test_local_files_are_read_by_their_format_not_as_text(tmp_path, suffix):
    encode = {"parquet": parquet_bytes, "arrow": arrow_bytes, "json.gz": jsonl_gz_bytes,
              "jsonl": lambda rows: "".join(json.dumps(r) + "\n" for r in rows).encode()}[suffix]
    for i in range(2):
        (tmp_path / f"part-{i}.{suffix}").write_bytes(encode(_rows(DOCS[i * 15:(i + 1) * 15])))
    train, test, _ = files_splits([str(tmp_path / f"part-*.{suffix}")], 0, 10**9, 10**9)
    assert sorted(train + test) == sorted(DOCS)
    assert not any(d.startswith(("PAR1", "\x00", "\x1f")) for d in train + test)


def test_a_binary_file_under_a_text_name_is_refused_in_words(tmp_path):
    (tmp_path / "data.txt").write_bytes(parquet_bytes(_rows(DOCS[:3])))
    with pytest.raises(FusebenchError, match=r"data\.txt.*not text.*\.parquet"):
        files_splits([str(tmp_path / "data.txt")], 0, 10**9, 10**9)
