"""A miniature FuseChat through the stage runner on real tiny models: a pivot, two sources of other architectures
and tokenizer, pairwise fusion (greater_gt_hard, statistics vocab map), and the VaRM merge of the pairwise targets."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from fusebench.cli import main

SMOKE = Path(__file__).resolve().parents[1] / "recipes" / "smoke.yaml"


def test_pairwise_fusion_then_varm_on_tiny_models(tmp_path):
    data = yaml.safe_load(SMOKE.read_text())
    data["models"]["target"]["train"] = {**data["models"]["target"]["train"], "steps": 3}  # a pivot sources beat
    pair = copy.deepcopy(data["models"]["fusellm"])
    pair.update(pairwise=True, fusion={**pair["fusion"], "function": "greater_gt_hard", "vocab_map": "statistics"})
    data["models"]["pair"] = pair
    data["models"]["pair_varm"] = {"merge": {"method": "varm", "base": "target", "models": ["pair"]}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(data))
    assert main(["run", str(tmp_path / "r.yaml"), "--only", "model:pair_varm", "--workdir", str(tmp_path / "wd")]) == 0
    models = tmp_path / "wd" / "models"

    sequences = None
    for source in ("src_neox", "src_mpt"):
        choices = json.loads((models / f"pair-{source}" / "fusion_choices.json").read_text())
        assert set(choices) == {"(own)", source}  # one teacher per pairwise target
        assert choices[source] > 0  # sequences where the source's CE beat the pivot's: its distribution
        sequences = sequences or sum(choices.values())
        assert sum(choices.values()) == sequences  # every other sequence trained on the gold tokens
    assert list((tmp_path / "wd" / "cache" / "vocabmap").glob("*statistics*/vocab_map/alignment_counts.npz"))

    pivot, a, b = (load_file(str(models / m / "model.safetensors")) for m in ("target", "pair-src_neox",
                                                                               "pair-src_mpt"))
    merged = load_file(str(models / "pair_varm" / "model.safetensors"))
    weights = json.loads((models / "pair_varm" / "varm_weights.json").read_text())["weights"]
    assert any(abs(w[0] - 0.5) > 1e-3 for w in weights.values())  # the two targets moved the pivot differently
    for name in pivot:
        da, db = ((t[name].double() - pivot[name].double()).square().sum() for t in (a, b))
        wa = float(da / (da + db)) if da + db > 0 else 0.5
        assert weights[name][0] == wa or abs(weights[name][0] - wa) < 1e-12, name
        expected = wa * a[name].double() + (1 - wa) * b[name].double()
        torch.testing.assert_close(merged[name].double(), expected, atol=2e-6, rtol=0, msg=name)
    assert (models / "pair_varm" / "mergekit_config.yml").is_file()
