"""The stage runner: a DAG of stages, each cached under a key, written atomically, resumable after a crash.

A stage's key hashes its kind, its config, the keys of its inputs and the source of the code that implements it, so
a finished stage is never recomputed and a change anywhere reruns exactly what depends on it.

On disk, under `<workdir>/cache/<kind>/`:
- `<name>-<key16>/`          a finished artifact (appears by one atomic rename, with `.stage.json` inside);
- `<name>-<key16>.partial/`  work in progress; resumable stages keep checkpoints / shards there across crashes,
                             the others start it afresh;
- `<name>-<key16>.lock`      held while the stage runs, so two runs sharing a cache never write the same stage.
`.stage.json` records every file's size and sha256; a finished artifact is checked against it before a stage reads
it, once per run (`fusebench.pipeline.integrity`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Callable

from filelock import FileLock

from fusebench.environment import environment
from fusebench.errors import FusebenchError, is_disk_full
from fusebench.pipeline import integrity
from fusebench.pipeline.codehash import code_hash

log = logging.getLogger("fusebench")


@dataclass
class StageContext:
    """What a stage's function sees: where to write, and its finished inputs by stage id."""

    out: Path
    inputs: dict[str, Path]
    workdir: Path

    def input(self, stage_id: str) -> Path:
        return self.inputs[stage_id]


@dataclass
class Stage:
    id: str                                  # "model:target"; unique in a run
    kind: str                                # "model", "extract", ...: the cache folder
    config: dict                             # JSON-able; part of the key
    inputs: list[str]                        # ids of the stages whose outputs this one reads
    run: Callable[[StageContext], None]
    code: tuple[str, ...] = ()               # what its key hashes (pipeline/codehash.py: stage_code)
    resumable: bool = False                  # keep `.partial/` across crashes (the stage resumes from it)
    distributed: bool = False                # under `accelerate launch`, every process runs it (extract, train)
    key: str = field(default="", init=False)

    @property
    def name(self) -> str:
        return self.id.split(":", 1)[-1].replace("/", "_").replace(":", "_")


def collective_timeout() -> timedelta:
    """How long a rank waits in a collective (a barrier while another rank finishes a stage) before the run fails:
    FUSEBENCH_COLLECTIVE_TIMEOUT_MIN minutes, default 180. Long CPU stages are split over the ranks (alignment) or
    shared out (evaluations); what still runs on the main process alone (corpus download, chunking, vocab maps,
    converting .bin weights) takes minutes at the paper's scale, well inside it."""
    return timedelta(minutes=float(os.environ.get("FUSEBENCH_COLLECTIVE_TIMEOUT_MIN", "180")))


@contextmanager
def _single_process_env():
    """RANK 0 of 1 for the code a shared-out stage calls; the launch's values are restored after."""
    keys = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _from_main(value: str) -> str:
    """The main process's `value`, on every process of a launch (a collective: every rank calls it)."""
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value], from_process=0)[0]


class Runner:
    def __init__(self, stages: list[Stage], workdir: Path):
        self.workdir = Path(workdir)
        self.stages = {s.id: s for s in stages}
        self.order = self._toposort()
        for sid in self.order:  # keys depend on input keys, so compute in topological order
            s = self.stages[sid]
            payload = {"kind": s.kind, "config": s.config, "inputs": [self.stages[i].key for i in s.inputs],
                       "code": code_hash(s.code)}
            s.key = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
        self._verified: set[Path] = set()  # finished artifacts checked (or written) by this run
        from fusebench.evaluate.manifest import git_commit

        git_commit()  # read once, now: a stage finishing hours later records the commit this run started on

    def _toposort(self) -> list[str]:
        order, state = [], {}

        def visit(sid: str, path: tuple[str, ...]) -> None:
            if state.get(sid) == "done":
                return
            if state.get(sid) == "visiting":
                raise FusebenchError(f"the recipe's stages form a cycle: {' -> '.join((*path, sid))}. "
                                     "A model cannot (indirectly) train from itself.")
            if sid not in self.stages:
                raise FusebenchError(f"stage {path[-1]!r} needs {sid!r}, which the recipe does not define.")
            state[sid] = "visiting"
            for dep in self.stages[sid].inputs:
                visit(dep, (*path, sid))
            state[sid] = "done"
            order.append(sid)

        for sid in self.stages:
            visit(sid, ())
        return order

    def path(self, sid: str) -> Path:
        s = self.stages[sid]
        return self.workdir / "cache" / s.kind / f"{s.name}-{s.key[:16]}"

    def is_done(self, sid: str) -> bool:
        return (self.path(sid) / ".stage.json").exists()

    def closure(self, prefix: str | None) -> list[str]:
        """Stages whose id starts with `prefix`, and everything they need (all stages when prefix is None)."""
        if not prefix:
            return list(self.order)
        wanted: set[str] = set()
        stack = [s for s in self.order if s.startswith(prefix)]
        if not stack:
            raise FusebenchError(f"no stage id starts with {prefix!r}; stages: {', '.join(self.order)}")
        while stack:
            sid = stack.pop()
            if sid not in wanted:
                wanted.add(sid)
                stack.extend(self.stages[sid].inputs)
        return [s for s in self.order if s in wanted]

    def plan(self) -> list[tuple[str, str, Path]]:
        return [(sid, "cached" if self.is_done(sid) else "would run", self.path(sid)) for sid in self.order]

    def run(self, only: str | None = None) -> dict[str, Path]:
        """Run the stages `only` selects (all by default), in order, skipping finished ones.

        Under `accelerate launch` / torchrun (WORLD_SIZE > 1) the main process owns the cache: it alone takes locks,
        prepares and finishes stages; `distributed` stages (extraction, alignment, training) run on every process
        between barriers, evaluations are shared out over the ranks (`_run_share`), and the others run on the main
        process alone while the rest wait, at most `collective_timeout()`."""
        todo = self.closure(only)
        world = int(os.environ.get("WORLD_SIZE", "1"))
        barrier, main = (lambda: None), True
        if world > 1:
            import torch
            from accelerate import PartialState

            # cpu=True on CPU-only machines: a bare PartialState would not join the gloo process group there. It is a
            # singleton, so extraction and training later share this one.
            state = PartialState(cpu=not torch.cuda.is_available(), timeout=collective_timeout())
            barrier, main = state.wait_for_everyone, state.is_main_process
        if main:  # everything this run will read, checked before any work starts
            for sid in todo:
                if not self.is_done(sid):
                    self._check_not_orphaned(sid)
                    self.check_inputs(sid)
        # evaluations are independent of each other: under a launch every rank takes its share of them (below)
        # instead of one rank running them all while the others wait
        spread = [sid for sid in todo if world > 1 and self.stages[sid].kind == "eval"]
        in_order = [sid for sid in todo if sid not in spread]
        for n, sid in enumerate(in_order, 1):
            final, stage, counter = self.path(sid), self.stages[sid], f"[{n}/{len(in_order)}]"
            barrier()
            if world > 1:
                self._launch_step(stage, final, counter, main, barrier)
                continue
            if self.is_done(sid):
                log.info("%s %s: cached (%s)", counter, sid, final.name)
                continue
            final.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(final) + ".lock"):
                if self.is_done(sid):  # another run sharing this cache finished it while we waited
                    log.info("%s %s: finished by another run", counter, sid)
                    continue
                self.check_inputs(sid)  # inputs another run finished while we waited are checked here
                self._run_stage(stage, final, counter)
        if spread:
            barrier()  # the models they read are finished
            self._run_share(spread, state.process_index, world)
            barrier()
        if main:  # what the run hands back (evaluations to publish, the model asked for) is read next
            for sid in todo:
                if not any(sid in self.stages[o].inputs for o in todo):
                    self.check(sid)
        barrier()
        return {sid: self.path(sid) for sid in todo}

    def _launch_step(self, stage: Stage, final: Path, counter: str, main: bool, barrier) -> None:
        """One stage under a launch. The main process alone looks at the cache, before and again under the stage's
        lock (a run sharing the workdir may finish the stage meanwhile), and every process follows its answer: a
        rank deciding for itself could find the stage finished a moment after another rank did not, and the two
        would then wait in different collectives."""
        done = main and self.is_done(stage.id)
        if main and not done:
            final.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(final) + ".lock") if main and not done else nullcontext():
            status = _from_main("cached" if done else "finished by another run" if main and self.is_done(stage.id)
                                else "run")
            if status != "run":
                log.info("%s %s: %s", counter, stage.id, f"cached ({final.name})" if status == "cached" else status)
                return
            if main:
                self.check_inputs(stage.id)
                self._run_stage(stage, final, counter, barrier if stage.distributed else None)
            elif stage.distributed:
                self._run_stage(stage, final, counter, barrier, worker=True)

    def reads(self, sid: str) -> list[str]:
        """The finished stages `sid` reads: its inputs, and an ensemble's members (it loads their weights)."""
        out = []
        for i in self.stages[sid].inputs:
            out.append(i)
            if self.stages[i].kind == "model" and self.stages[i].config.get("ensemble"):
                out.extend(x for x in self.reads(i) if x not in out)
        return out

    def check_inputs(self, sid: str) -> None:
        for i in self.reads(sid):
            self.check(i, reader=sid)

    def _check_not_orphaned(self, sid: str) -> None:
        """A stage dir without its record can be neither read nor replaced (the rename onto it would fail)."""
        if self.path(sid).is_dir() and not self.is_done(sid):
            raise integrity.lost_record_error(self.path(sid), sid)

    def check(self, sid: str, reader: str | None = None) -> None:
        """Verify a finished stage against the checksums recorded when it finished, once per run."""
        path = self.path(sid)
        if path in self._verified or not self.is_done(sid):
            return
        start = time.time()
        problems = integrity.verify_stage(path)
        if problems:
            raise integrity.corrupted_error(path, problems, reader)
        if problems is None and self.stages[sid].kind == "eval":  # published as is: never without checksums
            raise FusebenchError(f"{path} ({sid}) was finished before fusebench recorded checksums, and its scores "
                                 "are published from it, so nothing would vouch for them. If you trust its files as "
                                 f"they are, `fusebench verify --adopt {self.workdir}` records them; otherwise delete "
                                 "it and run again to recompute it.")
        if problems is None:
            log.warning("%s was finished before fusebench recorded checksums, so it is read unverified; "
                        "`fusebench verify --adopt %s` records them as the files are now (or delete it to recompute)",
                        path, self.workdir)
        elif time.time() - start > 1:
            log.info("verified %s in %.1fs", path.name, time.time() - start)
        self._verified.add(path)

    def _run_share(self, sids: list[str], rank: int, world: int) -> None:
        """Rank r runs stages r, r+W, ... of `sids`, each as a single-process stage (its own lock, `.partial` and
        rename): an evaluation reads one finished model and is independent of the others. Inside, the process
        looks single (RANK 0 of 1) to the code it calls, so lm-eval returns its results here, not only on rank 0."""
        import torch

        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))  # this rank's GPU, not GPU 0 for all
        mine = sids[rank::world]
        for n, sid in enumerate(mine, 1):
            final, counter = self.path(sid), f"[rank {rank}: {n}/{len(mine)}]"
            final.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(final) + ".lock"):
                if self.is_done(sid):
                    log.info("%s %s: cached (%s)", counter, sid, final.name)
                    continue
                with _single_process_env():
                    self._run_stage(self.stages[sid], final, counter)

    def _run_stage(self, stage: Stage, final: Path, counter: str, barrier=None, worker: bool = False) -> None:
        """Run one stage into its `.partial` dir and rename it into place. With `barrier`, the other processes run
        the same stage function at the same time (as workers, which neither prepare nor finish the directory)."""
        partial = final.with_name(final.name + ".partial")
        if not worker:
            if partial.exists() and not stage.resumable:
                shutil.rmtree(partial)
            resumed = partial.exists()
            partial.mkdir(parents=True, exist_ok=True)
            log.info("%s %s: %s", counter, stage.id, "resuming" if resumed else "running")
        if barrier:
            barrier()  # the partial dir exists before any worker writes into it
        start = time.time()
        ctx = StageContext(out=partial, inputs={i: self.path(i) for i in stage.inputs}, workdir=self.workdir)
        try:
            stage.run(ctx)
            if barrier:
                barrier()  # every process has finished its share
            if worker:
                return
            self._finish(stage, partial, final, start)
        except Exception as err:
            # a full disk says so plainly (torch and safetensors report it in their own words); the partial dir
            # is never mistaken for a finished stage, and a resumable one keeps its last checkpoint
            if is_disk_full(err, partial if partial.exists() else self.workdir):
                raise FusebenchError(f"the disk holding {self.workdir} is full: {stage.id} could not write to "
                                     f"{partial}. Free space (or use --workdir on another disk) and run again: "
                                     "finished stages are kept and this one resumes.") from None
            raise
        self._verified.add(final)  # just hashed from the files as written
        log.info("%s %s: done in %.1fs", counter, stage.id, time.time() - start)

    def _finish(self, stage: Stage, partial: Path, final: Path, start: float) -> None:
        shutil.rmtree(partial / "_resume", ignore_errors=True)
        from fusebench.evaluate.manifest import git_commit

        record = {"id": stage.id, "kind": stage.kind, "key": stage.key, "config": stage.config,
                  # what the artifact was made with: the commit this process started on and the config's hash,
                  # carried into the manifests of its evaluations (evaluate/manifest.py: trained_with)
                  "git_commit": git_commit(), "config_sha256": hashlib.sha256(
                      json.dumps(stage.config, sort_keys=True, default=str).encode()).hexdigest(),
                  "inputs": {i: self.stages[i].key for i in stage.inputs}, "code_modules": list(stage.code),
                  "seconds": round(time.time() - start, 2), "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                  # what can change the bytes across machines: CPU kernels, threads, library versions
                  "environment": environment(), "files": integrity.record_files(partial)}
        (partial / ".stage.json").write_text(json.dumps(record, indent=2, default=str))
        self._check_not_orphaned(stage.id)  # its record deleted while this ran: say so, not ENOTEMPTY
        partial.rename(final)  # the one atomic step that makes the stage finished
