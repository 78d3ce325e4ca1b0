"""What makes an evaluation reproducible, written beside each results file as `<suite>.manifest.json`.

The manifest names the model (path, sha256 of its weights, and for a model made by a fusebench stage the commit
and config hash it was trained with, from the stage's `.stage.json`), the run it belongs to, every lm-eval task with its
version and the benchmark it stands for, the data files read (with checksums and provenance), the seeds, the
backend, the versions of the packages that shape scores, and the git commit the evaluating process started on. It also holds the
tidy score list (task, metric, value, stderr) so readers need not parse lm-eval's nested keys.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from fusebench.environment import environment
from fusebench.evaluate.offline_data import write_atomic
from fusebench.environment import package_versions as environment_package_versions
from fusebench.sandbox import SECCOMP_FILTERED, UNSANDBOXED, modes_used, requested

PACKAGES = ("torch", "transformers", "lm_eval", "datasets", "tokenizers", "accelerate", "fusebench")


@dataclass(frozen=True)
class Score:
    """One number a table can show: `task` is the benchmark within its suite (e.g. "arc_easy", "navigate")."""

    task: str
    metric: str
    value: float
    stderr: float | None


def weights_sha256(model: str | Path) -> str | None:
    """sha256 over the model's config.json and safetensors files (names and bytes, in name order); for a fusebench
    ensemble, over its members' as well. None for a hub id."""
    path = Path(model)
    if not path.is_dir():
        return None
    digest = hashlib.sha256()
    # top level only: an ensemble's members/ and a merge's inputs/ hold other models (members are hashed below)
    for f in [path / "config.json", *sorted(path.glob("*.safetensors"))]:
        if f.is_file():
            digest.update(str(f.relative_to(path)).encode())
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    digest.update(block)
    config = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else {}
    for member in config.get("members") or []:  # an ensemble's weights live in its member directories
        member_path = Path(member) if Path(member).is_absolute() else path / member
        digest.update((weights_sha256(member_path) or str(member)).encode())
    return digest.hexdigest()


def package_versions() -> dict[str, str | None]:
    """The versions of the packages that shape scores (the full environment record sits beside them)."""
    return environment_package_versions(PACKAGES)


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit fusebench's source was at when this process first asked (with "+dirty" when it had uncommitted
    changes), or None. Read once per process: a checkout moving on during a long run does not change what the
    running code is."""
    repo = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=30).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def trained_with(model: str | Path) -> dict | None:
    """The stage, key, commit and config hash a fusebench-made model was made with (its `.stage.json`), or None."""
    record_path = Path(model) / ".stage.json"
    try:
        record = json.loads(record_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return {"stage": record.get("id"), "key": record.get("key"), "git_commit": record.get("git_commit"),
            "config_sha256": record.get("config_sha256")}


def code_sandbox_record() -> dict:
    """How generated code was run in this process: `unsandboxed` is true when the weaker mode was named or used;
    `seccomp` is true when every program ran under the syscall filter (the bwrap engine's)."""
    used = modes_used()
    return {"requested": requested(), "modes_used": used,
            "unsandboxed": requested() in UNSANDBOXED or any(m in UNSANDBOXED for m in used),
            "seccomp": bool(used) and all(m in SECCOMP_FILTERED for m in used)}


def build_manifest(*, suite: str, model: str | Path, model_name: str, weights_hash: str | None, run_id: str,
                   plan, results: dict, scores: list[Score], handle, limit: int | None, seed: int,
                   online: bool) -> dict:
    """The manifest dict for one suite's evaluation (JSON-ready)."""
    versions = results.get("versions", {})
    n_samples = results.get("n-samples", {})
    tasks = {}
    for benchmark, task in plan.tasks.items():
        data = plan.data.get(benchmark)
        tasks[benchmark] = {
            "lm_eval_task": task, "version": versions.get(task),
            "n_docs": n_samples.get(task, {}).get("effective"),
            "data": None if data is None else {"path": str(data.path), "sha256": data.sha256(),
                                               "source": data.source, "split": data.split},
            # the commit of the pinned hub data read (checked offline: fusebench/evaluate/revisions.py)
            "dataset_revision": getattr(plan, "revisions", {}).get(benchmark),
        }
    return {
        "suite": suite, "run_id": run_id,
        "model": {"name": model_name, "path": str(Path(model).resolve()) if Path(model).exists() else str(model),
                  "weights_sha256": weights_hash, "trained_with": trained_with(model)},
        "backend": {"name": handle.backend, "device": handle.device, "dtype": handle.dtype,
                    "max_length": handle.max_length},
        "gen_kwargs": plan.gen_kwargs,
        "data_source": "hub (online)" if online else "packaged (offline)",
        "tasks": tasks, "limit": limit,
        "seeds": {"random": seed, "numpy": seed, "torch": seed, "fewshot": seed},
        "packages": package_versions(), "git_commit": git_commit(), "code_sandbox": code_sandbox_record(),
        "environment": environment(),  # CPU kernels, threads, library versions: what the recipe cannot pin
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "scores": [asdict(s) for s in scores],
    }


def write_json(obj: dict, path: Path) -> Path:
    """Write JSON atomically; values JSON cannot hold (functions in task configs, numpy numbers) become strings."""
    from lm_eval.utils import handle_non_serializable

    return write_atomic(path, json.dumps(obj, indent=2, default=handle_non_serializable, ensure_ascii=False))
