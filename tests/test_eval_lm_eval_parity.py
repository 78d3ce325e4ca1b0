"""`fusebench eval` is a superset of `lm_eval run`: each lm_eval flag runs through both tools (stock lm_eval's own
CLI, in process, and `fusebench eval`) on a tiny real model and packaged offline tasks, and the results files,
samples files and printed header and tables are the same, provenance included."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fusebench.cli import main

# what differs between two runs of the same evaluation: clocks, and the process that ran
VOLATILE = {"date", "start_time", "end_time", "total_evaluation_time_seconds"}
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant:{% endif %}")


def _stock_lm_eval(argv: list[str]) -> None:
    from lm_eval._cli import HarnessCLI

    cli = HarnessCLI()
    cli.execute(cli._parser.parse_args(["run", *argv]))


def _outputs(out: Path) -> tuple[dict, dict[str, list]]:
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    (results_file,) = folder.glob("results_*.json")
    results = {k: v for k, v in json.loads(results_file.read_text()).items() if k not in VOLATILE}
    samples = {}
    for path in sorted(folder.glob("samples_*.jsonl")):
        task = path.name.removeprefix("samples_").rsplit("_", 1)[0]
        samples[task] = [json.loads(line) for line in path.read_text().splitlines()]
    return results, samples


def _printed(text: str) -> list[str]:
    """The header line and tables both tools print (lm_eval's JSON from --show_config has clock fields)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(("hf (", "vllm (")))
    return lines[start:]


def _both(tmp_path: Path, capsys, fusebench_argv: list[str], lm_eval_argv: list[str]):
    """Run fusebench first (it renders the packaged tasks that stock lm_eval then reads via --include_path)."""
    work = tmp_path / "work"
    assert main(["eval", *fusebench_argv, "-o", str(tmp_path / "fb"), "--workdir", str(work)]) == 0
    fb_out = capsys.readouterr().out
    _stock_lm_eval([*lm_eval_argv, "-o", str(tmp_path / "lm"), "--include_path", str(work / "tasks" / "commonsense")])
    lm_out = capsys.readouterr().out
    return _outputs(tmp_path / "fb"), _outputs(tmp_path / "lm"), fb_out, lm_out


@pytest.fixture()
def lm_cache(tmp_path, monkeypatch):
    import lm_eval.caching.cache as cache

    monkeypatch.setattr(cache, "PATH", str(tmp_path / "requests_cache"))  # never lm-eval's package folder
    return tmp_path / "requests_cache"


def test_flags_and_space_lists_match_stock_lm_eval(tmp_path, tiny_neox_dir, capsys, lm_cache):
    model = str(tiny_neox_dir)
    common = ["-t", "arc_easy", "arc_challenge", "--model", "hf", "-L", "4", "-s", "-b", "2", "-f", "1",
              "--system_instruction", "Answer briefly.", "--write_out", "--show_config", "--cache_requests", "true",
              "--use_cache", str(tmp_path / "responses"), "--max_batch_size", "4", "--metadata", "note=parity",
              "--verbosity", "WARNING", "--seed", "3", "--trust_remote_code", "--confirm_run_unsafe_code",
              "--device", "cpu"]
    (fb, fb_samples), (lm, lm_samples), fb_out, lm_out = _both(
        tmp_path, capsys, [model, *common, "--model_args", "dtype=float32"],
        [*common, "--model_args", f"pretrained={model}", "dtype=float32"])
    assert fb == lm
    assert fb_samples == lm_samples and set(fb_samples) == {"arc_easy", "arc_challenge"}
    assert len(fb_samples["arc_easy"]) == 4
    assert _printed(fb_out) == _printed(lm_out)
    assert _printed(fb_out)[0].startswith(f"hf ({{'pretrained': '{model}', 'dtype': 'float32'}}), gen_kwargs: ({{}}), "
                                          "limit: 4.0, num_fewshot: 1, batch_size: 2")
    assert fb_out.startswith('{\n  "results": {') and fb["system_instruction"] == "Answer briefly."  # --show_config
    # provenance as lm_eval writes it: the model class, its arguments, batch size, device, seeds
    assert fb["config"]["model"] == "hf" and fb["model_source"] == "hf"
    assert fb["config"]["model_args"] == {"pretrained": model, "dtype": "float32", "trust_remote_code": True}
    assert (fb["config"]["batch_size"], fb["config"]["device"]) == ("2", "cpu")
    assert [fb["config"][k] for k in ("random_seed", "numpy_seed", "torch_seed", "fewshot_seed")] == [3, 3, 3, 3]
    assert fb["configs"]["arc_easy"]["metadata"]["note"] == "parity"
    assert (tmp_path / "responses_rank0.db").exists() and any(lm_cache.iterdir())


def test_predict_only_and_samples_match_stock_lm_eval(tmp_path, tiny_neox_dir, capsys):
    model = str(tiny_neox_dir)
    common = ["--tasks", "arc_easy", "--model_args", f"pretrained={model}", "--predict_only", "--device", "cpu",
              "--samples", '{"arc_easy": [0, 3, 5]}']
    (fb, fb_samples), (lm, lm_samples), fb_out, lm_out = _both(tmp_path, capsys, common, common)
    # the one default that differs, and is recorded as used: fusebench's batch size 8, lm_eval's 1
    assert (fb["config"].pop("batch_size"), lm["config"].pop("batch_size")) == ("8", 1)
    assert fb == lm and fb_samples == lm_samples
    assert [s["doc_id"] for s in fb_samples["arc_easy"]] == [0, 3, 5]
    assert "acc,none" not in fb["results"]["arc_easy"]  # predictions only: lm-eval's bypass metric
    # lm_eval's defaults where fusebench has none of its own: seeds 0,1234,1234,1234
    assert [fb["config"][k] for k in ("random_seed", "numpy_seed", "torch_seed", "fewshot_seed")] == [0, 1234, 1234,
                                                                                                      1234]
    assert _printed(fb_out)[0].endswith("batch_size: 8") and _printed(lm_out)[0].endswith("batch_size: 1")


def test_config_yaml_and_chat_template_match_stock_lm_eval(tmp_path, tiny_neox_dir, capsys):
    chat = tmp_path / "chat_model"
    shutil.copytree(tiny_neox_dir, chat)
    tok_cfg = chat / "tokenizer_config.json"
    tok_cfg.write_text(json.dumps({**json.loads(tok_cfg.read_text()), "chat_template": CHAT_TEMPLATE}))
    config = tmp_path / "run.yaml"
    config.write_text(f"tasks: [arc_easy]\nlimit: 2\nnum_fewshot: 1\ndevice: cpu\nbatch_size: 4\n"
                      f"model_args: {{pretrained: {chat}, dtype: float32}}\nlog_samples: true\n")
    common = ["--config", str(config), "--apply_chat_template", "--fewshot_as_multiturn", "true",
              "--system_instruction", "Be brief."]
    (fb, fb_samples), (lm, lm_samples), fb_out, lm_out = _both(tmp_path, capsys, common, common)
    assert fb == lm and fb_samples == lm_samples
    assert fb["fewshot_as_multiturn"] is True and fb["chat_template"] == CHAT_TEMPLATE
    assert fb["config"]["batch_size"] == 4 and fb["n-samples"]["arc_easy"]["effective"] == 2
    prompt = fb_samples["arc_easy"][0]["arguments"]["gen_args_0"]["arg_0"]
    assert prompt.startswith("system: Be brief.\nuser: ")  # the chat template, one turn per few-shot example
    assert _printed(fb_out) == _printed(lm_out)


def test_check_integrity_runs_lm_evals_task_tests(tmp_path, tiny_neox_dir, capsys):
    # an installed lm-eval ships no tests/: lm_eval fails looking for them, fusebench says so in one paragraph
    argv = ["--tasks", "arc_easy", "-L", "2", "--device", "cpu", "--check_integrity"]
    assert main(["eval", str(tiny_neox_dir), *argv, "--workdir", str(tmp_path / "work")]) == 2
    assert "--check_integrity" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="package root"):
        _stock_lm_eval([*argv, "--model_args", f"pretrained={tiny_neox_dir}",
                        "--include_path", str(tmp_path / "work" / "tasks" / "commonsense")])
