"""JSON Lines read back exactly as fusebench writes them: one record per "\n".

fusebench writes JSON Lines with `ensure_ascii=False`, which escapes every control character below U+0020 but
leaves U+0085, U+2028 and U+2029 raw inside strings, and Python's `str.splitlines` splits at those three. So
records are split at "\n" alone, never with `splitlines`.
"""

from __future__ import annotations

import json
from pathlib import Path


def read_jsonl(path: str | Path) -> list:
    """Every record of a JSON Lines file, in order (blank lines skipped, a trailing "\r" tolerated)."""
    text = Path(path).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.split("\n") if line.strip()]
