"""The output ensemble on real tiny GPT-NeoX models: exact mixture maths, lm-eval scoring, generation, refusals."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from fusebench.ensemble import EnsembleForCausalLM, save_ensemble
from fusebench.errors import FusebenchError

TEXT = "def dumps(obj, indent=None):\n    return JSONEncoder(indent=indent).encode(obj)"


@pytest.fixture(scope="module")
def ensemble_dir(tmp_path_factory, tiny_neox_pair):
    return save_ensemble(tiny_neox_pair, [1.0, 3.0], tmp_path_factory.mktemp("ens") / "ensemble")


@pytest.fixture(scope="module")
def ensemble(ensemble_dir):
    return AutoModelForCausalLM.from_pretrained(str(ensemble_dir))


@pytest.fixture(scope="module")
def members(tiny_neox_pair):
    return [AutoModelForCausalLM.from_pretrained(str(p)) for p in tiny_neox_pair]


@pytest.fixture(scope="module")
def tokenizer(ensemble_dir):
    return AutoTokenizer.from_pretrained(str(ensemble_dir))


def _direct_log_probs(members, ids: torch.Tensor, weights=(0.25, 0.75)) -> torch.Tensor:
    """log(sum_i w_i softmax(logits_i)), computed the plain way from the members loaded on their own."""
    with torch.no_grad():
        mix = sum(w * m(ids).logits.double().softmax(-1) for w, m in zip(weights, members))
    return mix.log()


def test_ensemble_log_probs_are_log_of_weighted_mean_member_probs(ensemble, members, tokenizer):
    ids = tokenizer(TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        log_probs = ensemble(ids).logits
    assert isinstance(ensemble, EnsembleForCausalLM)
    torch.testing.assert_close(log_probs.double(), _direct_log_probs(members, ids), atol=1e-5, rtol=0)
    # a proper distribution at every position, and not just one member's
    torch.testing.assert_close(log_probs.logsumexp(-1), torch.zeros(ids.shape), atol=1e-5, rtol=0)
    assert (log_probs - members[1](ids).logits.log_softmax(-1)).abs().max() > 1e-3


def test_loss_is_the_mean_next_token_nll_of_the_mixture(ensemble, members, tokenizer):
    ids = tokenizer(TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        loss = ensemble(ids, labels=ids).loss
    expected = -_direct_log_probs(members, ids)[0, :-1].gather(-1, ids[0, 1:, None]).mean()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)


def test_members_are_stored_inside_so_a_copy_loads_after_the_originals_are_gone(tmp_path, tiny_neox_pair, members,
                                                                                tokenizer):
    run = tmp_path / "run"
    for name, src in zip(("a", "b"), tiny_neox_pair):
        shutil.copytree(src, run / "models" / name)
    save_ensemble([run / "models" / "a", run / "models" / "b"], None, run / "ensemble")
    config = json.loads((run / "ensemble" / "config.json").read_text())
    assert config["members"] == ["members/0", "members/1"] and str(tmp_path) not in json.dumps(config)
    assert (run / "ensemble" / "members" / "1" / "model.safetensors").read_bytes() == (
        run / "models" / "b" / "model.safetensors").read_bytes()
    copied = shutil.copytree(run / "ensemble", tmp_path / "elsewhere" / "ens")
    shutil.rmtree(run)  # the member models it was built from are gone
    ens = AutoModelForCausalLM.from_pretrained(str(copied))
    ids = tokenizer(TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        got = ens(ids).logits.double()
    torch.testing.assert_close(got, _direct_log_probs(members, ids, (0.5, 0.5)), atol=1e-5, rtol=0)


_FRESH_PROCESS = """
import json, sys
import torch
from transformers import AutoModelForCausalLM
ens = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True)
with torch.no_grad():
    log_probs = ens(torch.tensor([json.loads(sys.argv[2])])).logits
torch.save(log_probs, sys.argv[3])
print(json.dumps({"class": type(ens).__name__, "fusebench_imported": any(m.split('.')[0] == 'fusebench'
                                                                         for m in sys.modules)}))
"""


def test_a_copied_ensemble_loads_with_remote_code_in_a_process_that_never_imports_fusebench(
        tmp_path, ensemble_dir, ensemble, tokenizer):
    copied = shutil.copytree(ensemble_dir, tmp_path / "copy" / "ensemble")
    assert json.loads((copied / "config.json").read_text())["auto_map"]["AutoModelForCausalLM"] == (
        "modeling_fusebench_ensemble.EnsembleForCausalLM")
    ids = tokenizer(TEXT).input_ids
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "hf_modules"), "PYTHONPATH": ""}
    done = subprocess.run([sys.executable, "-c", _FRESH_PROCESS, str(copied), json.dumps(ids),
                           str(tmp_path / "lp.pt")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"class": "EnsembleForCausalLM", "fusebench_imported": False}
    with torch.no_grad():
        expected = ensemble(torch.tensor([ids])).logits
    torch.testing.assert_close(torch.load(tmp_path / "lp.pt"), expected, atol=1e-6, rtol=0)


_TOKENIZER_ONLY = """
import json, sys
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1], trust_remote_code=False)
print(json.dumps(tok(sys.argv[2]).input_ids))
"""


def test_the_ensembles_tokenizer_loads_without_running_its_remote_code(tmp_path, ensemble_dir, tokenizer):
    # transformers reads config.json before any tokenizer (and asks "[y/N]" for a custom architecture when
    # trust_remote_code is unset); the ensemble's tokenizer is its first member's, so trust_remote_code=False loads
    # it without asking and without importing the ensemble's modelling file
    modules = tmp_path / "hf_modules"
    env = {**os.environ, "HF_MODULES_CACHE": str(modules), "PYTHONPATH": ""}
    done = subprocess.run([sys.executable, "-c", _TOKENIZER_ONLY, str(ensemble_dir), TEXT], cwd=tmp_path, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[y/N]" not in done.stdout + done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == tokenizer(TEXT).input_ids
    assert not list(modules.rglob("modeling_fusebench_ensemble.py"))


def test_lm_eval_hflm_scores_the_ensemble_like_any_model(ensemble, members, tokenizer):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=ensemble, tokenizer=tokenizer, batch_size=2)
    context, continuation = "import json", "\nx = json.loads(s)"  # no trailing space: lm-eval would move it
    [(loglik, _)] = lm.loglikelihood([Instance("loglikelihood", {}, (context, continuation), 0)])
    ctx_ids = tokenizer(context).input_ids
    whole = tokenizer(context + continuation).input_ids
    log_probs = _direct_log_probs(members, torch.tensor([whole]))[0]
    expected = sum(log_probs[i - 1, whole[i]].item() for i in range(len(ctx_ids), len(whole)))
    assert loglik == pytest.approx(expected, abs=1e-4)

    [rolling] = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (TEXT,), 0)])
    ids = [tokenizer.eos_token_id] + tokenizer(TEXT).input_ids  # lm-eval conditions the first token on EOS
    log_probs = _direct_log_probs(members, torch.tensor([ids]))[0]
    assert rolling == pytest.approx(sum(log_probs[i - 1, ids[i]].item() for i in range(1, len(ids))), abs=1e-3)


def test_lm_eval_generate_until_batched_equals_greedy_one_prompt_at_a_time(ensemble, tokenizer):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    prompts = ["import json", "class JSONEncoder(object):\n    def default(self, o):"]  # different lengths: padding
    lm = HFLM(pretrained=ensemble, tokenizer=tokenizer, batch_size=2)
    outputs = lm.generate_until([Instance("generate_until", {}, (p, {"until": ["<never>"], "max_gen_toks": 6}), i)
                                 for i, p in enumerate(prompts)])
    for prompt, output in zip(prompts, outputs):
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        alone = ensemble.generate(ids, max_new_tokens=6, do_sample=False)
        assert output == tokenizer.decode(alone[0, ids.shape[1]:], skip_special_tokens=True)


def test_greedy_generation_uses_member_caches_and_matches_full_recomputation(ensemble, tokenizer):
    ids = tokenizer(TEXT, return_tensors="pt").input_ids
    seen = []  # (tokens fed, length of the member's own cache) at every member call

    def record(module, args, kwargs):
        member_cache = kwargs.get("cache", kwargs.get("past_key_values"))  # its name from transformers 5.24 on
        seen.append((kwargs["input_ids"].shape[1], member_cache.get_seq_length() if member_cache is not None else 0))

    hook = ensemble.members[0].register_forward_pre_hook(record, with_kwargs=True)
    try:
        cached = ensemble.generate(ids, max_new_tokens=8, do_sample=False)
    finally:
        hook.remove()
    # prefill once, then one new token per step on top of the member's own cache of everything before it
    assert seen == [(ids.shape[1], 0)] + [(1, ids.shape[1] + step) for step in range(7)]

    manual = ids
    with torch.no_grad():
        for _ in range(8):  # greedy by hand, recomputing the whole sequence every step
            next_id = ensemble(manual).logits[:, -1].argmax(-1, keepdim=True)
            manual = torch.cat([manual, next_id], dim=1)
    assert cached.tolist() == manual.tolist()


def test_ensemble_of_different_tokenizers_is_refused(tmp_path, tiny_neox_dir, tiny_llama_dir):
    with pytest.raises(FusebenchError, match="different tokenizers") as err:
        save_ensemble([tiny_neox_dir, tiny_llama_dir], None, tmp_path / "ens")
    assert str(tiny_neox_dir) in str(err.value) and "FuseLLM" in str(err.value)


def test_members_with_different_vocab_sizes_are_refused(tmp_path, tiny_neox_pair, bpe_tokenizer_dir):
    from fusebench.models.build import ModelSize, build_model

    tok = AutoTokenizer.from_pretrained(str(bpe_tokenizer_dir))
    padded = build_model("gpt_neox", len(tok) + 64, ModelSize(hidden=64, layers=2, heads=4), tok.bos_token_id,
                         tok.eos_token_id, seed=5)  # same tokenizer, padded embedding matrix (as Pythia's are)
    padded.save_pretrained(tmp_path / "padded")
    tok.save_pretrained(tmp_path / "padded")
    with pytest.raises(FusebenchError, match="different output vocabulary sizes"):
        save_ensemble([tiny_neox_pair[0], tmp_path / "padded"], None, tmp_path / "ens")


def test_non_positive_weights_are_refused(tmp_path, tiny_neox_pair):
    with pytest.raises(FusebenchError, match="must all be positive"):
        save_ensemble(tiny_neox_pair, [1.0, 0.0], tmp_path / "ens")
    with pytest.raises(FusebenchError, match="one weight per member"):
        save_ensemble(tiny_neox_pair, [1.0], tmp_path / "ens")
