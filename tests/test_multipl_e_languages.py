"""MultiPL-E, language by language, through the path a real run takes: lm-eval loads the `multipl_e_<lang>` task
(fusebench's YAML: stripped prompt, MultiPL-E's stop tokens as `until`), asks the model for a generation, cuts it
with lm-eval's own stop-sequence post-processing, and calls the task's `process_results` hook, which assembles the
program and runs it in the sandbox. Only the model is replaced: a scripted lm-eval `LM` that returns a fixed raw
generation per prompt (tests/multipl_e_rows.py, with text past the stop token) and cuts it as HFLM does.
"""

from __future__ import annotations

import json

import pytest
import yaml

from multipl_e_rows import PROBLEMS, STOP_TOKENS, generations, rows

LANGS = ("cpp", "go", "java", "js", "php", "py", "r", "rb", "rs", "ts")


def _scripted_lm(answers: dict[str, str]):
    from lm_eval.api.model import LM
    from lm_eval.models.utils import handle_stop_sequences, postprocess_generated_text

    class ScriptedLM(LM):
        """Returns the raw generation written for each prompt, cut at the request's `until` as HFLM cuts."""

        def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
            out = []
            for request in requests:
                context, gen_kwargs = request.args
                until = handle_stop_sequences(gen_kwargs.get("until"), eos=None)
                out.append(postprocess_generated_text(answers[context], until, None))
            return out

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            raise NotImplementedError

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            raise NotImplementedError

    return ScriptedLM()


@pytest.fixture(scope="module")
def code_tasks(tmp_path_factory):
    from fusebench.evaluate.multipl_e import prepare_code_tasks

    work = tmp_path_factory.mktemp("multipl_e_rows")
    files = {}
    for lang in LANGS:
        files[lang] = work / f"humaneval-{lang}.jsonl"
        files[lang].write_text("".join(json.dumps(r) + "\n" for r in rows(lang)))
    return prepare_code_tasks(work, languages=["py"], multipl_e_files=files)


def _run(code_tasks, which: str) -> dict:
    import lm_eval
    from lm_eval.tasks import TaskManager

    answers = {k: v for lang in LANGS for k, v in generations(lang, which).items()}
    return lm_eval.simple_evaluate(
        model=_scripted_lm(answers), tasks=[f"multipl_e_{lang}" for lang in LANGS],
        task_manager=TaskManager(include_path=str(code_tasks), include_defaults=False),
        confirm_run_unsafe_code=True, log_samples=True)


def test_task_yamls_carry_multipl_e_conventions():
    from fusebench.evaluate.code_exec import LANGUAGES
    from fusebench.evaluate.multipl_e import TASKS_DIR

    for lang in LANGS:
        config = yaml.safe_load((TASKS_DIR / "multipl_e" / f"multipl_e_{lang}.yaml").read_text())
        assert config["generation_kwargs"]["until"] == STOP_TOKENS[lang], lang
        assert config["generation_kwargs"]["max_length"] == 512 and "max_gen_toks" not in config["generation_kwargs"]
        assert list(LANGUAGES[lang].stop_tokens) == STOP_TOKENS[lang], lang
    default = (TASKS_DIR / "multipl_e" / "_default_multipl_e_yaml").read_text()
    assert "revision: d23b094346c5dbda1080a74bb2a24c18adbf7409" in default
    assert "--edition" not in LANGUAGES["rs"].command and "-std=c++17" in LANGUAGES["cpp"].command


@pytest.mark.toolchains
def test_each_language_passes_correct_and_fails_wrong_generations_through_lm_eval(code_tasks):
    for which, expected in (("correct", 1.0), ("wrong", 0.0)):
        out = _run(code_tasks, which)
        for lang in LANGS:
            task = f"multipl_e_{lang}"
            assert out["results"][task]["pass@1,none"] == expected, (which, lang)
            samples = out["samples"][task]
            assert len(samples) == len(PROBLEMS[lang])
            for sample in samples:  # the model saw the stripped prompt; the cut removed everything past a stop token
                assert sample["arguments"][0][0] == sample["doc"]["prompt"].strip()
                response = sample["resps"][0][0]
                assert not any(stop in response for stop in STOP_TOKENS[lang]), (lang, response)


@pytest.mark.toolchains
def test_go_stop_tokens_keep_the_closing_brace():
    """MultiPL-E's Go tests start with `func Test...`, so the completion must close its own function. Cutting at
    the old "\\n}" (which a fixture whose tests began with "}" hid) drops that brace and the program cannot build."""
    from lm_eval.models.utils import postprocess_generated_text

    from fusebench.evaluate.multipl_e import process_multipl_e

    row = rows("go")[0]
    assert row["tests"].startswith("func TestAdd(t *testing.T) {")
    raw = generations("go", "correct")[row["prompt"].strip()]
    assert process_multipl_e(row, [postprocess_generated_text(raw, STOP_TOKENS["go"], None)])["pass@1"] == 1.0
    old_cut = postprocess_generated_text(raw, ["\n}"], None)
    assert process_multipl_e({**row, "stop_tokens": ["\n}"]}, [old_cut])["pass@1"] == 0.0


def test_no_go_fixture_hides_the_closing_brace():
    """The sandbox tests' Go problem (also served as the hub cache's MultiPL-E Go row) is in MultiPL-E's shape:
    its tests begin with the test function, not with the solution's closing brace."""
    from test_sandbox import PROBLEMS as SANDBOX_PROBLEMS

    prompt, correct, _wrong, tests = SANDBOX_PROBLEMS["go"]
    assert tests.startswith("func Test") and correct.rstrip().endswith("}")
