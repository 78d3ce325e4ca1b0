"""MT-Bench-style single-answer grading (`--suite chat_judge --judge JUDGE`): answers rated 1-10 by a judge model.

The evaluated model answers each user turn of a chat corpus's test conversations in its own chat template, greedy,
seeing its own earlier answers (as in MT-Bench's second turn). A judge then reads each answer, with the
conversation before it, and rates it with the prompt below; the rating is the last `[[N]]` of its reply, 1 to 10.
A reply without one is recorded as unparseable (with its text), never guessed. The judge is a model directory or
hub id (run locally with transformers), or `openai:URL` for an OpenAI-compatible chat-completions endpoint
(`--judge-model` names the model there; OPENAI_API_KEY, when set, is sent). With no judge the answers are still
written, and the result says "not judged": there is no stand-in judge.

LLM-as-judge scores depend on the judge: compare models only under the same judge (recorded in the manifest, with
the judge prompt's sha256). The paper judged with GPT-4 on MT-Bench's 80 questions, which no registry package
ships; here the questions are a held-out chat split, so the numbers are not the paper's metric.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fusebench.data.chat import read_conversations
from fusebench.errors import FusebenchError
from fusebench.evaluate.manifest import package_versions, weights_sha256, write_json

SUITE = "chat_judge"
NOT_JUDGED = "not judged"
NO_RATING = "no parseable rating"     # judged, but no reply held a rating
WORD_SCORES = (NOT_JUDGED, NO_RATING)  # scores that are words: reports print them, never as numbers

JUDGE_PROMPT = """You are grading one reply of an AI assistant in a conversation with a user.
Judge the final reply only: is it correct, helpful, relevant to the request, and as detailed as the request needs?
Do not reward length for its own sake. First explain your judgment in a few sentences, then give a rating from 1
(useless or wrong) to 10 (excellent) in exactly this form: [[rating]], for example: Rating: [[4]].

{history}[The user's request]
{question}

[The assistant's reply]
{answer}
[End of the reply]"""

_RATING = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")


def parse_rating(reply: str) -> float | None:
    """The last [[N]] of a judge's reply when 1 <= N <= 10, else None (unparseable)."""
    found = _RATING.findall(reply)
    value = float(found[-1]) if found else None
    return value if value is not None and 1 <= value <= 10 else None


def judge_prompt(history: list[dict], question: str, answer: str) -> str:
    earlier = "".join(f"[{'User' if m['role'] == 'user' else 'Assistant'}]\n{m['content']}\n\n" for m in history)
    return JUDGE_PROMPT.format(history=f"[The conversation before it]\n{earlier}" if earlier else "",
                               question=question, answer=answer)


# --- models that write text ---------------------------------------------------------------------------------------

def local_generator(model: str | Path, *, device: str | None, max_new_tokens: int,
                    require_template: bool) -> Callable[[list[dict]], str]:
    """messages -> the model's greedy reply, in its chat template (a judge without one reads the bare prompt)."""
    import torch

    from fusebench.evaluate.chat_bpb import chat_tokenizer
    from fusebench.models.load import load_causal_lm, load_tokenizer

    tok = chat_tokenizer(model) if require_template else load_tokenizer(model)
    lm = load_causal_lm(model, device=device)

    def reply(messages: list[dict]) -> str:
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        else:
            text = messages[-1]["content"]
        ids = tok(text, add_special_tokens=False, return_tensors="pt").input_ids.to(lm.device)
        with torch.no_grad():
            out = lm.generate(ids, max_new_tokens=max_new_tokens, do_sample=False,
                              pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
        return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
    return reply


def openai_generator(url: str, model: str | None, max_tokens: int) -> Callable[[list[dict]], str]:
    """messages -> the reply of an OpenAI-compatible /chat/completions endpoint (plain HTTP; temperature 0)."""
    import urllib.error
    import urllib.request

    if not model:
        raise FusebenchError(f"--judge openai:{url} needs the judge's model name at that endpoint: add "
                             "--judge-model NAME (e.g. gpt-4o), as the endpoint's /models lists it.")
    endpoint = url.rstrip("/") + ("" if url.rstrip("/").endswith("/chat/completions") else "/chat/completions")
    headers = {"Content-Type": "application/json"}
    if os.environ.get("OPENAI_API_KEY"):
        headers["Authorization"] = f"Bearer {os.environ['OPENAI_API_KEY']}"

    def reply(messages: list[dict]) -> str:
        body = json.dumps({"model": model, "messages": messages, "temperature": 0, "max_tokens": max_tokens})
        request = urllib.request.Request(endpoint, body.encode(), headers)
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                data = json.loads(response.read())
            return data["choices"][0]["message"]["content"] or ""
        except (urllib.error.URLError, OSError, KeyError, IndexError, json.JSONDecodeError) as err:
            raise FusebenchError(f"the judge endpoint {endpoint} (model {model!r}) gave no reply: {err}. Check the "
                                 "URL (an OpenAI-compatible server's base, e.g. http://host:8000/v1), the model "
                                 "name and OPENAI_API_KEY, or judge with a local model (--judge DIR).") from None
    return reply


def judge_generator(judge: str, judge_model: str | None, device: str | None,
                    max_new_tokens: int) -> Callable[[list[dict]], str]:
    if judge.startswith("openai:"):
        return openai_generator(judge.removeprefix("openai:"), judge_model, max_new_tokens)
    return local_generator(judge, device=device, max_new_tokens=max_new_tokens, require_template=False)


# --- the evaluation ----------------------------------------------------------------------------------------------

@dataclass
class JudgeSettings:
    judge: str | None = None
    judge_model: str | None = None
    max_new_tokens: int = 256          # the evaluated model's answers
    judge_max_new_tokens: int = 256    # the judge's explanation and rating


def answer_and_judge(answer: Callable[[list[dict]], str], judge: Callable[[list[dict]], str] | None,
                     conversations: list[list[dict]]) -> list[dict]:
    """One record per user turn: the model's answer (given its own earlier answers) and the judge's rating."""
    records = []
    for c, conv in enumerate(conversations):
        history: list[dict] = []
        for turn, message in enumerate(m for m in conv if m["role"] == "user"):
            reply = answer([*history, message])
            record = {"conversation": c, "turn": turn, "question": message["content"], "answer": reply,
                      "judgment": None, "score": None, "status": NOT_JUDGED}
            if judge is not None:
                record["judgment"] = judge([{"role": "user",
                                             "content": judge_prompt(history, message["content"], reply)}])
                record["score"] = parse_rating(record["judgment"])
                record["status"] = "judged" if record["score"] is not None else "unparseable"
            records.append(record)
            history += [message, {"role": "assistant", "content": reply}]
    return records


def summarise(records: list[dict], benchmark: str, judged: bool) -> dict:
    """lm-eval's results layout: the mean rating and its stderr over parsed ratings, and the counts."""
    scores = [r["score"] for r in records if r["score"] is not None]
    task = f"{SUITE}_{benchmark}"
    metrics: dict = {"alias": task, "turns,none": len(records)}
    if not judged:
        metrics["score,none"] = NOT_JUDGED   # a word: the report prints it, it never becomes a number
    else:
        mean = sum(scores) / len(scores) if scores else math.nan
        var = sum((s - mean) ** 2 for s in scores) / (len(scores) - 1) if len(scores) > 1 else math.nan
        metrics.update({"score,none": mean if scores else NO_RATING,
                        "score_stderr,none": math.sqrt(var / len(scores)) if len(scores) > 1 else "N/A",
                        "judged,none": len(scores), "unparseable,none": len(records) - len(scores)})
    return {"results": {task: metrics}, "higher_is_better": {task: {"score": True}},
            "n-samples": {task: {"original": len(records), "effective": len(records)}}}


def evaluate_judged(model: str | Path, corpora: dict[str, Path], settings: JudgeSettings, *, target: Path,
                    model_name: str, run_id: str, limit: int | None, device: str | None, seed: int) -> tuple:
    """Answer, judge and write `<target>/chat_judge.json` (+ manifest, + judgments); returns (paths, records)."""
    import torch

    if not corpora:
        raise FusebenchError("the chat_judge suite asks the questions of a chat corpus's test split: add "
                             "--corpus NAME=DIR (a corpus of `kind: chat`).")
    torch.manual_seed(seed)
    answer = local_generator(model, device=device, max_new_tokens=settings.max_new_tokens, require_template=True)
    judge = judge_generator(settings.judge, settings.judge_model, device, settings.judge_max_new_tokens) \
        if settings.judge else None
    results: dict = {"results": {}, "higher_is_better": {}, "n-samples": {}}
    records_all, data = {}, {}
    for name, corpus in corpora.items():
        conversations = read_conversations(corpus, "test")[:limit]
        records = answer_and_judge(answer, judge, conversations)
        for key, value in summarise(records, name, judge is not None).items():
            results[key].update(value)
        records_all[name] = records
        data[name] = {"path": str((Path(corpus) / "test.jsonl").resolve()),
                      "sha256": hashlib.sha256((Path(corpus) / "test.jsonl").read_bytes()).hexdigest()}
    results_path = write_json(results, target / f"{SUITE}.json")
    judgments_path = write_json(records_all, target / f"{SUITE}.judgments.json")
    manifest = {"suite": SUITE, "model": str(model), "model_name": model_name, "weights_sha256": weights_sha256(model),
                "run_id": run_id, "judge": settings.judge or NOT_JUDGED, "judge_model": settings.judge_model,
                "judge_weights_sha256": weights_sha256(settings.judge) if settings.judge and
                not settings.judge.startswith("openai:") else None,
                "judge_prompt_sha256": hashlib.sha256(JUDGE_PROMPT.encode()).hexdigest(),
                "generation": {"do_sample": False, "max_new_tokens": settings.max_new_tokens,
                               "judge_max_new_tokens": settings.judge_max_new_tokens},
                "limit": limit, "seed": seed, "data": data, "packages": package_versions(),
                "judgments_file": judgments_path.name}
    manifest_path = write_json(manifest, target / f"{SUITE}.manifest.json")
    return results_path, manifest_path, results


def not_judged_lines(results_paths) -> list[str]:
    """Table lines for the benchmarks whose score is a word ("not judged", "no parseable rating")."""
    lines = []
    for path in results_paths:
        for task, metrics in json.loads(Path(path).read_text())["results"].items():
            if isinstance(metrics["score,none"], str):
                lines.append(f"{task.removeprefix(SUITE + '_'):<42} {'score':<18} {metrics['score,none']:>9}")
    return lines
