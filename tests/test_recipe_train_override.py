"""A top-level `train.KEY=value` (README: `fusebench run recipes/paper.yaml train.lr=2e-5`) sets KEY in every model
that trains, over its own value; models that do not train are left alone; a misspelt key is named."""

from pathlib import Path

import pytest

from fusebench.errors import FusebenchError
from fusebench.pipeline.recipe import load_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def test_top_level_train_override_sets_every_trained_model_and_wins_over_theirs():
    before = load_recipe(RECIPES / "smoke.yaml")
    after = load_recipe(RECIPES / "smoke.yaml", ["train.lr=2e-5", "train.steps=3"])
    trained = [n for n, m in before.models.items() if m.train is not None]
    assert len({before.models[n].train.lr for n in trained}) > 1  # the recipe's own values differ per model
    for name in trained:
        assert (after.models[name].train.lr, after.models[name].train.steps) == (2e-5, 3)
        assert after.models[name].train.corpus == before.models[name].train.corpus  # the rest is kept
    for name in set(before.models) - set(trained):
        assert after.models[name].train is None
    assert after.train == {"lr": "2e-5", "steps": 3}


def test_a_misspelt_top_level_train_key_is_named_with_the_close_match():
    with pytest.raises(FusebenchError, match=r"train\.lrr: unknown training key.*did you mean 'lr'"):
        load_recipe(RECIPES / "smoke.yaml", ["train.lrr=2e-5"])
