"""Turn BBH items into multiple choice: the options a BBH question lists become the choices lm-eval scores.

BBH lists options as "(A) text" or "- text" lines after "Options:"; tasks without a list answer from a fixed pair
(True/False, Yes/No, yes/no). Choices are the option *texts*, so even a model too small to reason in chains shows
a signal. The 3 exemplars are lm-eval's own `bbh/fewshot` ones (plain answers), given choices the same way.
"""

import re
from pathlib import Path

import yaml

_LETTERED = re.compile(r"^\(([A-Z])\) (.*)$")
_PAIRS = (("True", "False"), ("Yes", "No"), ("yes", "no"))


def choices_and_gold(doc: dict) -> dict:
    """{"choices": [...], "gold": index} for one BBH item {"input", "target"}."""
    text, target = doc["input"], doc["target"].strip()
    if "Options:\n" in text:
        lines = text.rsplit("Options:\n", 1)[1].splitlines()
        lettered = [_LETTERED.match(line) for line in lines]
        if all(lettered):
            letters = [m.group(1) for m in lettered]
            return {"choices": [m.group(2) for m in lettered], "gold": letters.index(target.strip("()"))}
        choices = [line.removeprefix("- ") for line in lines]
        return {"choices": choices, "gold": choices.index(target)}
    for pair in _PAIRS:
        if target in pair:
            return {"choices": list(pair), "gold": pair.index(target)}
    raise ValueError(f"BBH item has no options and a free-form answer ({target!r}); it cannot be multiple choice")


def process_docs(dataset):
    return dataset.map(choices_and_gold)


def _fewshot(task: str) -> list[dict]:
    import lm_eval.tasks

    path = Path(lm_eval.tasks.__file__).parent / "bbh" / "fewshot" / f"{task}.yaml"
    samples = yaml.safe_load(path.read_text(encoding="utf-8"))["fewshot_config"]["samples"]
    return [{**s, **choices_and_gold(s)} for s in samples]


MC_TASKS = (
    "boolean_expressions", "causal_judgement", "date_understanding", "disambiguation_qa", "formal_fallacies",
    "geometric_shapes", "hyperbaton", "logical_deduction_five_objects", "logical_deduction_seven_objects",
    "logical_deduction_three_objects", "movie_recommendation", "navigate", "penguins_in_a_table",
    "reasoning_about_colored_objects", "ruin_names", "salient_translation_error_detection", "snarks",
    "sports_understanding", "temporal_sequences", "tracking_shuffled_objects_five_objects",
    "tracking_shuffled_objects_seven_objects", "tracking_shuffled_objects_three_objects", "web_of_lies",
)
# lm-eval resolves `!function utils.fewshot_<task>` by attribute name, one per task.
for _task in MC_TASKS:
    globals()[f"fewshot_{_task}"] = (lambda t: lambda: _fewshot(t))(_task)
