"""The real pretrained model shipped in a package (SmolLM2-135M) scored through fusebench and through plain lm-eval.

Slow (a few minutes on 2 CPU cores): 200 ARC-Easy test questions, 0-shot.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

LIMIT = 200


def test_smollm2_arc_easy_beats_chance_and_matches_plain_lm_eval(tmp_path):
    import lm_eval
    from lm_eval.tasks import TaskManager

    from fusebench.evaluate.api import evaluate_model
    from fusebench.models.gguf import smollm2_dir

    model = smollm2_dir()
    ours = evaluate_model(model, ["commonsense:arc_easy"], limit=LIMIT, workdir=tmp_path / "work",
                          results_dir=tmp_path / "results", batch_size=8, device="cpu")
    acc, acc_norm = ours.score("arc_easy", "acc"), ours.score("arc_easy", "acc_norm")
    print(f"fusebench: acc {acc.value:.4f} ± {acc.stderr:.4f}, acc_norm {acc_norm.value:.4f} ± {acc_norm.stderr:.4f}")
    assert acc_norm.value > 0.35  # four choices: chance is ~0.25

    # The same task YAML and data, but lm-eval builds the model itself from the directory.
    plain = lm_eval.simple_evaluate(
        model="hf", model_args={"pretrained": str(model), "dtype": "float32"}, tasks=["arc_easy_offline"],
        task_manager=TaskManager(include_path=str(tmp_path / "work" / "tasks" / "commonsense"),
                                 include_defaults=False), limit=LIMIT,
        batch_size=8, device="cpu", log_samples=False)
    res = plain["results"]["arc_easy_offline"]
    print(f"plain lm-eval: acc {res['acc,none']:.4f}, acc_norm {res['acc_norm,none']:.4f}")
    assert acc.value == pytest.approx(res["acc,none"], abs=1e-4)
    assert acc_norm.value == pytest.approx(res["acc_norm,none"], abs=1e-4)
