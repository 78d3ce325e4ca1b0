"""Names users give (recipe, models, corpora, tokenizers, `--name`, `--run-id`) become folder and file names:
`runs/<recipe>/`, `results/<run>/<model>/`, `models/<name>`, rendered task files. A name is accepted only if it is
one harmless path component, so none can climb out of a workdir or results store (`../../x`), hide (`.x`), or carry
a separator, NUL, or a newline into a YAML template. Checked in one place, here; callers say where the name came from.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

from fusebench.errors import FusebenchError

MAX_LENGTH = 100          # far below NAME_MAX (255), leaving room for the suffixes stages add (`-<key16>.partial`)
_ALLOWED = re.compile(r"[A-Za-z0-9._+=@-]+")
RULE = ("letters, digits and . _ + - = @ only, not starting with a dot, at most "
        f"{MAX_LENGTH} characters")


def name_problem(name: str) -> str | None:
    """Why `name` cannot be one path component, or None when it can."""
    if not isinstance(name, str) or not name:
        return "it is empty"
    if "\0" in name:
        return "it contains a NUL byte"
    separators = [s for s in ("/", "\\") if s in name]
    if separators:
        return f"it contains {' and '.join(map(repr, separators))}, which would make it a path, not a name"
    if name.startswith("."):
        return "it starts with a dot ('..' climbs out of the folder, '.x' is hidden)"
    if len(name) > MAX_LENGTH:
        return f"it is {len(name)} characters long"
    bad = sorted(set(_ALLOWED.sub("", name)))
    if bad:
        return f"it contains {', '.join(map(repr, bad))}"
    return None


def suggestion(name: str) -> str:
    """A name close to `name` that passes (for the error message)."""
    return re.sub(r"[^A-Za-z0-9._+=@-]+", "_", str(name)).lstrip("._")[:MAX_LENGTH] or "x"


def explain(name: str, problem: str) -> str:
    return (f"{name!r} cannot be used as a name: {problem}. Names become folder and file names, so they may hold "
            f"{RULE}; e.g. {suggestion(name)!r}.")


def check_name(name: str, where: str) -> str:
    """`name` unchanged if it is one safe path component; otherwise a FusebenchError naming `where` it came from
    (a flag like `--name`, or a file and key)."""
    problem = name_problem(name)
    if problem:
        raise FusebenchError(f"{where} {explain(name, problem)} Give another name there and run again.")
    return name


def _valid(name: str) -> str:
    problem = name_problem(name)
    if problem:   # a ValueError inside a pydantic schema, so the error names the file and the key
        raise ValueError(explain(name, problem))
    return name


# a schema field or dict key that becomes a folder or file name (recipes, board files)
Name = Annotated[str, AfterValidator(_valid)]
