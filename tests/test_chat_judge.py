"""MT-Bench-style judging (`--suite chat_judge --judge ...`): ratings parsed or recorded unparseable, never invented."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from fusebench.cli import main
from fusebench.errors import FusebenchError
from fusebench.evaluate.chat_judge import JudgeSettings, parse_rating

CONVERSATIONS = [
    [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "5."},
     {"role": "user", "content": "And 2 * 3?"}, {"role": "assistant", "content": "6."}],
    [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}],
]


@pytest.fixture(scope="module")
def tiny_chat_model(tmp_path_factory):
    from chat_models import build_tiny_chat_model

    return build_tiny_chat_model(tmp_path_factory.mktemp("chat_model"))


@pytest.fixture
def corpus(tmp_path):
    out = tmp_path / "chat"
    out.mkdir()
    (out / "test.jsonl").write_text("".join(json.dumps({"messages": c}) + "\n" for c in CONVERSATIONS))
    return out


def test_parse_rating_takes_the_last_bracketed_rating_in_range():
    assert parse_rating("Good answer. Rating: [[8]]") == 8.0
    assert parse_rating("[[3]] at first, but on reflection [[ 7.5 ]]") == 7.5
    assert parse_rating("Rating: 8") is None            # no [[N]]: unparseable, not guessed
    assert parse_rating("Rating: [[11]]") is None       # out of the 1-10 scale
    assert parse_rating("") is None


def test_without_a_judge_the_answers_are_kept_and_the_result_says_not_judged(capsys, tmp_path, tiny_chat_model,
                                                                              corpus):
    assert main(["eval", str(tiny_chat_model), "--suite", "chat_judge", "--corpus", f"qa={corpus}", "--device", "cpu",
                 "--results", str(tmp_path / "r"), "--workdir", str(tmp_path / "w"), "--name", "m"]) == 0
    out = capsys.readouterr().out
    assert "qa" in out and "not judged" in out
    folder = tmp_path / "r" / "adhoc" / "m"
    results = json.loads((folder / "chat_judge.json").read_text())
    assert results["results"]["chat_judge_qa"]["score,none"] == "not judged"
    records = json.loads((folder / "chat_judge.judgments.json").read_text())["qa"]
    assert [(r["conversation"], r["turn"]) for r in records] == [(0, 0), (0, 1), (1, 0)]
    assert all(r["status"] == "not judged" and r["score"] is None and isinstance(r["answer"], str) for r in records)
    assert json.loads((folder / "chat_judge.manifest.json").read_text())["judge"] == "not judged"


def test_a_local_judge_model_gives_ratings_that_parse_or_are_recorded_unparseable(tmp_path, tiny_chat_model,
                                                                                   tiny_neox_dir, corpus):
    from fusebench.evaluate.api import evaluate_model

    result = evaluate_model(tiny_chat_model, ["chat_judge"], corpora={"qa": corpus}, results_dir=tmp_path / "r",
                            workdir=tmp_path / "w", device="cpu",
                            judge=JudgeSettings(str(tiny_neox_dir), max_new_tokens=8, judge_max_new_tokens=12))
    folder = result.suites[0].results_path.parent
    records = json.loads((folder / "chat_judge.judgments.json").read_text())["qa"]
    assert len(records) == 3
    for r in records:
        assert isinstance(r["judgment"], str)
        assert (r["status"], r["score"]) == (("judged", parse_rating(r["judgment"])) if r["score"] is not None
                                             else ("unparseable", None))
    metrics = json.loads(result.suites[0].results_path.read_text())["results"]["chat_judge_qa"]
    assert metrics["judged,none"] + metrics["unparseable,none"] == 3
    manifest = json.loads(result.suites[0].manifest_path.read_text())
    assert manifest["judge"] == str(tiny_neox_dir) and len(manifest["judge_weights_sha256"]) == 64


class _Endpoint(BaseHTTPRequestHandler):
    """An OpenAI-compatible /v1/chat/completions that rates every answer 7 and keeps the requests it got."""

    bodies: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append({"path": self.path, **body})
        reply = json.dumps({"choices": [{"message": {"role": "assistant", "content": "Fine. Rating: [[7]]"}}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(reply.encode())

    def log_message(self, *args):
        pass


def test_an_openai_compatible_judge_rates_each_turn_with_the_conversation_before_it(tmp_path, tiny_chat_model,
                                                                                     corpus):
    from fusebench.evaluate.api import evaluate_model

    server = HTTPServer(("127.0.0.1", 0), _Endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"openai:http://127.0.0.1:{server.server_port}/v1"
        with pytest.raises(FusebenchError, match="--judge-model"):
            evaluate_model(tiny_chat_model, ["chat_judge"], corpora={"qa": corpus}, results_dir=tmp_path / "r0",
                           device="cpu", judge=JudgeSettings(url, max_new_tokens=4))
        result = evaluate_model(tiny_chat_model, ["chat_judge"], corpora={"qa": corpus}, results_dir=tmp_path / "r",
                                device="cpu", judge=JudgeSettings(url, "judge-x", max_new_tokens=4))
    finally:
        server.shutdown()
    assert result.score("qa", "score").value == 7.0
    bodies = _Endpoint.bodies
    assert len(bodies) == 3 and all(b["path"] == "/v1/chat/completions" and b["model"] == "judge-x" and
                                    b["temperature"] == 0 for b in bodies)
    second_turn = bodies[1]["messages"][0]["content"]
    assert "And 2 * 3?" in second_turn and "[The conversation before it]" in second_turn
    assert "What is 2 + 3?" in second_turn    # the first turn, as history


def test_a_recipe_runs_the_chat_suites_on_its_chat_corpus(tmp_path, tiny_chat_model):
    import yaml

    from fusebench.pipeline.graph import build_stages
    from fusebench.pipeline.recipe import load_recipe
    from fusebench.pipeline.runner import Runner

    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({
        "name": "chatrun",
        "corpora": {"chat": {"kind": "chat", "sources": ["gsm8k"], "train_chars": 2000, "test_chars": 1500}},
        "models": {"m": {"role": "target", "path": str(tiny_chat_model)}},
        "evaluate": {"suites": ["chat", "chat_judge"], "perplexity_corpora": ["chat"], "limit": 1}}))
    runner = Runner(build_stages(load_recipe(path, [f"evaluate.judge={tiny_chat_model}"])), tmp_path / "work")
    runner.run()
    bpb = json.loads((runner.path("eval:m.chat") / "chatrun" / "m" / "chat.json").read_text())
    assert bpb["results"]["chat_bpb_chat"]["bits_per_byte,none"] > 0
    judged = runner.path("eval:m.chat_judge") / "chatrun" / "m"
    metrics = json.loads((judged / "chat_judge.json").read_text())["results"]["chat_judge_chat"]
    assert metrics["judged,none"] + metrics["unparseable,none"] == metrics["turns,none"] == 1
    assert json.loads((judged / "chat_judge.manifest.json").read_text())["judge"] == str(tiny_chat_model)
