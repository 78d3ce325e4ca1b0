"""The paper's reported numbers (`results/reported/`): CSVs in the paper's own layout plus a manifest saying how to
read each one.

The CSVs stay exactly as transcribed (a row per task and a column per model, or a row per model and a column per
benchmark); `manifest.json` carries what a reader needs to line them up with reproduced runs: the suite and
canonical task key of every row or column, each model's role and the relative-change target.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError

from fusebench.errors import FusebenchError

REPORTED_RUN_ID = "reported"
AVERAGE = "average"   # the task key of a suite's average (the paper's "Avg." rows and average columns)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ColumnSpec(_Strict):
    suite: str
    task: str


class ReferenceSpec(_Strict):
    """Relative changes taken against a row of another table (the ablation CSVs hold no Llama-2 row)."""

    table: str
    model: str


class TableSpec(_Strict):
    id: str
    file: str
    paper_table: str
    title: str
    layout: Literal["tasks_by_model", "models_by_column"]
    metric: str
    unit: str = ""
    decimals: int = 2
    higher_is_better: bool = True
    roles: dict[str, str] = {}
    target: str | None = None
    reference: ReferenceSpec | None = None
    # tasks_by_model: the suite, and the canonical key of every row label
    suite: str | None = None
    task_keys: dict[str, str] = {}
    # models_by_column: what every column is, which CSV column names the model, and an optional row filter
    columns: dict[str, ColumnSpec] = {}
    model_column: str | None = None
    select: dict[str, str] = {}
    # where a table's numbers come from when that is not the manifest's `citation` (another paper)
    source: str = ""


class ReportedManifest(_Strict):
    provenance: Literal["reported"]
    run_id: str = REPORTED_RUN_ID
    description: str = ""
    citation: str
    bibtex_key: str = ""
    url: str = ""
    tables: list[TableSpec]


def read_manifest(directory: Path) -> ReportedManifest:
    path = directory / "manifest.json"
    try:
        return ReportedManifest.model_validate(json.loads(path.read_text()))
    except FileNotFoundError:
        raise FusebenchError(f"{path} is missing: the reported results set needs a manifest naming its provenance "
                             "and how to read each CSV (see results/reported/README.md).") from None
    except (json.JSONDecodeError, ValidationError) as err:
        raise FusebenchError(f"{path} is not a valid reported-results manifest: {err}. Fix the key named above "
                             "(results/reported/README.md describes the format).") from None


def _read_csv(directory: Path, spec: TableSpec) -> pd.DataFrame:
    path = directory / spec.file
    try:
        # dtype=str keeps the printed digits ("74.40"), so the report can show exactly what the paper shows
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise FusebenchError(f"{path} is missing but results/reported/manifest.json lists it for table "
                             f"{spec.id!r}. Restore the file or remove the table from the manifest.") from None
    for column, wanted in spec.select.items():
        frame = frame[frame[column] == wanted]
    return frame


def _number(text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise FusebenchError(f"{where}: {text!r} is not a number. Fix the cell in the reported CSV.") from None


def reported_rows(directory: Path) -> list[dict]:
    """One tidy row per number in the reported set (the store's columns, plus `table` and `label`s)."""
    manifest = read_manifest(directory)
    rows: list[dict] = []
    for spec in manifest.tables:
        frame = _read_csv(directory, spec)
        source = str(directory / spec.file)

        def add(model: str, suite: str, task: str, row_label: str, col_label: str, text: str) -> None:
            rows.append(dict(
                run_id=manifest.run_id, provenance="reported", table=spec.id, model=model,
                role=spec.roles.get(model), method=None, suite=suite, task=task, metric=spec.metric,
                filter="none", value=_number(text, f"{source} row {row_label!r} column {col_label!r}"),
                stderr=float("nan"), higher_is_better=spec.higher_is_better, is_average=task == AVERAGE,
                unit=spec.unit, row_label=row_label, col_label=col_label, printed=text, date=None,
                source_file=source))

        if spec.layout == "tasks_by_model":
            label_column, *models = frame.columns
            for _, line in frame.iterrows():
                label = line[label_column]
                task = spec.task_keys.get(label)
                if task is None:
                    raise FusebenchError(f"{source}: row {label!r} has no entry in manifest.json task_keys of "
                                         f"table {spec.id!r}. Add its canonical task key there.")
                for model in models:
                    add(model, spec.suite or spec.id, task, label, model, line[model])
        else:
            model_column = spec.model_column or frame.columns[0]
            for _, line in frame.iterrows():
                for label, column in spec.columns.items():
                    add(line[model_column], column.suite, column.task, line[model_column], label, line[label])
    return rows


def reported_specs(directory: Path) -> list[TableSpec]:
    return read_manifest(directory).tables
