"""The offline `ifeval` suite: instruction-following prompts written for fusebench, scored by lm-eval's IFEval
checkers (lm_eval/tasks/ifeval: instructions_registry, utils.process_results), unchanged.

No registry package ships IFEval's 541 prompts (checked: if-verifiable, nvidia-ifbench, alpaca-eval, fschat), so
offline the prompts are `tasks/ifeval/ifeval_offline.jsonl`, written here in IFEval's row format (`key`, `prompt`,
`instruction_id_list`, `kwargs`). Each prompt states its rules in plain words and its kwargs give the checkers the
same rules. They are not IFEval's prompts: scores are not comparable to published IFEval numbers. Online the suite
runs lm-eval's own `ifeval` task on google/IFEval.
"""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

from fusebench.evaluate import offline_data as od
from fusebench.jsonl import read_jsonl

PROMPTS = od.TEMPLATES_DIR / "ifeval" / "ifeval_offline.jsonl"
SOURCE = "written for fusebench (not IFEval's prompts): tasks/ifeval/ifeval_offline.jsonl"
# The checkers that call nltk's punkt_tab tokenizers (sentence splitting, word_tokenize), which no registry package
# ships: the written prompts use none of them.
NEEDS_PUNKT = ("length_constraints:number_sentences", "change_case:capital_word_frequency")
_UTIL = "lm_eval.tasks.ifeval.instructions_util"


def rows(path: Path = PROMPTS) -> list[dict]:
    return read_jsonl(path)


def data_file() -> od.DataFile:
    return od.DataFile(PROMPTS, SOURCE, "test")


def instruction_families() -> dict[str, int]:
    """Instruction id -> how many written prompts use it."""
    counts: dict[str, int] = {}
    for row in rows():
        for iid in row["instruction_id_list"]:
            counts[iid] = counts.get(iid, 0) + 1
    return counts


def import_checkers_offline() -> None:
    """Import lm-eval's IFEval checker modules without letting nltk reach the network.

    lm-eval's instructions_util calls `nltk.download("punkt_tab")` at import when punkt_tab is not installed. nltk
    fetches it from raw.githubusercontent.com: where the host does not resolve the download fails at once (and
    lm-eval still prints "Downloaded punkt_tab"), but on a network that drops packets each socket read waits up to
    nltk's 120 s timeout (nltk.downloader.NETWORK_TIMEOUT). Offline the download cannot succeed, so the module is
    imported once here with `nltk.download` switched off (and that print silenced); Python keeps the imported
    module, so the task YAML's `!function utils.process_results` reuses it and never downloads. Without punkt_tab
    only the NEEDS_PUNKT checkers fail (a LookupError when they check a response), and the written prompts use
    none of them. With punkt_tab installed, or the module already imported, this changes nothing.
    """
    import nltk

    if _UTIL in sys.modules:
        return
    try:
        nltk.data.find("tokenizers/punkt_tab")
        missing = False
    except LookupError:
        missing = True
    download = nltk.download
    if missing:
        nltk.download = lambda *args, **kwargs: False
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            import lm_eval.tasks.ifeval.instructions_registry  # noqa: F401  (imports instructions_util)
    finally:
        nltk.download = download
