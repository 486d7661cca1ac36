"""Executing a resolved spec, stage by stage, into a run directory.

Lifecycle (see docs/architecture.md for the diagram)::

    dataset → model (load weights and/or train) → probes.N → statistics.N → metrics → report

Each stage has a **key**: a hash of its plugin, plugin version, params, the spec's
seed and precision, and the keys of the stages it reads. A stage whose folder holds
a ``stage.json`` with the same key is reused, not recomputed; so is a finished stage
with the same key in an earlier run of the same experiment (hard-linked in). While a
stage runs it writes into ``stages/<name>.partial/``; that folder survives an
interruption (a training stage resumes from its checkpoints there) and is renamed to
``stages/<name>/`` only when the stage has finished, so a half-done stage is never
mistaken for a finished one.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime as _dt
import fcntl
import hashlib
import json
import logging
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml

from ._components import DataSplits, Metric, Model, StageContext, StageOutput, collate_items
from ._console import get_logger, progress
from ._device import Placement, resolve_placement
from ._environment import distribution_versions, lock_record
from ._errors import RunInterrupted, StageError, WavelensError
from ._evaluation import (
    item_scorer,
    metric_columns,
    presentation,
    split_items,
    summarize,
    summary_markdown,
)
from ._io import read_json, write_csv, write_json, write_text
from ._report import write_report
from ._spec import ResolvedComponent, ResolvedSpec

__all__ = ["Run", "StagePlan", "seed_everything", "default_runs_dir"]

RUNS_ENV = "WAVELENS_RUNS_DIR"
STAGE_RECORD = "stage.json"
KEY_FILE = ".key"


def default_runs_dir() -> Path:
    """``$WAVELENS_RUNS_DIR`` or ``./runs``."""
    return Path(os.environ.get(RUNS_ENV, "runs"))


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _hash(data: Any) -> str:
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class StagePlan:
    """One stage of a run: what it runs and which stages it reads."""

    name: str  # dataset, model, probes.0, statistics.1, metrics
    kind: str  # data, model, probe, statistics, metrics
    components: list[ResolvedComponent]
    depends_on: list[str]
    extra_key: dict[str, Any] = field(default_factory=dict)
    key: str = ""


def plan_stages(resolved: ResolvedSpec) -> list[StagePlan]:
    """The stages a spec declares, in execution order, with their keys."""
    spec = resolved.spec
    if spec.statistics and not spec.probes:
        raise WavelensError(
            "'statistics' needs 'probe' in the same spec to run; to fit a table file with this "
            "spec's statistics, use: wavelens stats fit TABLE --spec SPEC"
        )
    plans: list[StagePlan] = []
    data = resolved.component("dataset")
    model = resolved.component("model")
    upstream_data = ["dataset"] if data else []
    if data:
        plans.append(StagePlan("dataset", "dataset", [data], []))
    if model:
        # What happens when training diverges does not change a run that does not.
        train = spec.train.model_dump(exclude={"on_nonfinite"}) if spec.train else None
        extra: dict[str, Any] = {"train": train}
        if spec.model.weights is not None:
            weights = spec.model.weights
            extra["weights_sha256"] = _file_digest(weights)  # validation checked it exists
        plans.append(StagePlan("model", "model", [model], upstream_data, extra))
    probes = resolved.components_of("probes")
    for probe in probes:
        plans.append(StagePlan(probe.path, "probe", [probe], [*upstream_data, "model"]))
    for statistic in resolved.components_of("statistics"):
        plans.append(StagePlan(statistic.path, "statistic", [statistic], [p.path for p in probes]))
    metrics = resolved.components_of("metrics")
    if metrics:
        extra = {"evaluation": spec.evaluation.model_dump()}
        plans.append(StagePlan("metrics", "metric", metrics, [*upstream_data, "model"], extra))

    keys: dict[str, str] = {}
    for plan in plans:
        # Keys hash the stage names of spec_version 1 (data, probe.N), so that stages
        # computed before the rename are still found and reused.
        plan.key = _hash(
            {
                "stage": v1_stage_name(plan.name),
                "components": [
                    {**c.to_dict(), "version": c.plugin.version} for c in plan.components
                ],
                "extra": plan.extra_key,
                "seed": spec.seed,
                "precision": spec.precision,
                "inputs": {v1_stage_name(dep): keys[dep] for dep in plan.depends_on},
            }
        )
        keys[plan.name] = plan.key
    return plans


def v1_stage_name(name: str) -> str:
    """The name a stage had before spec_version 2 (``dataset`` was ``data``,
    ``probes.N`` was ``probe.N``)."""
    head, sep, rest = name.partition(".")
    return {"dataset": "data", "probes": "probe"}.get(head, head) + sep + rest


def _git_revision() -> dict[str, Any]:
    """The git revision of the wavelens source tree (if it is a checkout)."""
    top = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(
            ["git", "-C", str(top), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(top), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"revision": None}
    return {"revision": rev, "dirty": bool(dirty)}


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


@contextlib.contextmanager
def _interrupt_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into RunInterrupted so the run stops cleanly (main thread only)."""
    def handler(signum: int, frame: Any) -> None:
        raise RunInterrupted(f"received signal {signal.Signals(signum).name}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _link_tree(source: Path, target: Path) -> None:
    """Copy a folder by hard links (files are never modified in place), or by copy."""
    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link_or_copy)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


class Run:
    """One execution of a resolved spec in its run directory.

    ``Run(resolved).execute()`` picks the directory: the newest run of the same
    experiment whose spec and plugin versions hash the same (so a re-run resumes
    it), or a new ``runs/<name>/<timestamp>-<hash>/``. ``fresh=True`` always starts
    a new directory and reuses nothing.
    """

    def __init__(
        self,
        resolved: ResolvedSpec,
        runs_dir: Path | None = None,
        fresh: bool = False,
        placement: Placement | None = None,
        label: str | None = None,
    ):
        self.resolved = resolved
        self.label = label if label is not None else resolved.spec.variant
        self.spec = resolved.spec
        self.runs_dir = Path(runs_dir) if runs_dir is not None else default_runs_dir()
        self.fresh = fresh
        self.plans = plan_stages(resolved)
        # Resolving the device first means a bad device fails before anything is written.
        self.placement = placement or resolve_placement(self.spec.device, self.spec.precision)
        # Under torchrun every process runs this; rank 0 does the run, the others join
        # in the model stage's training only (see _execute_as_worker).
        self.rank, self.world = _torchrun_rank_world()
        # A group the caller set up is theirs to destroy; one this run joins is left at its end.
        self._owns_group = self.world > 1 and not dist.is_initialized()
        if self.world > 1:
            self.placement = _join_process_group(self.placement)
        self.run_hash = _hash(
            {
                "spec": resolved.digest(),
                "stages": [plan.key for plan in self.plans],
            }
        )[:8]
        self.experiment_dir = self.runs_dir / self.spec.name
        self.directory = self._choose_directory() if self.rank == 0 else Path()
        if self.world > 1:  # every rank uses rank 0's directory (a shared filesystem)
            chosen = [str(self.directory)]
            dist.broadcast_object_list(chosen, src=0)
            self.directory = Path(chosen[0])
        self.log = get_logger("run")
        self._cache: dict[str, Any] = {}
        self.outcomes: dict[str, str] = {}

    # -- directories ---------------------------------------------------------------

    def _choose_directory(self) -> Path:
        if not self.fresh:
            same = sorted(self.experiment_dir.glob(f"*-{self.run_hash}"))
            if same:
                return same[-1]
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        if self.label:
            stamp = f"{stamp}-{self.label}"
        candidate = self.experiment_dir / f"{stamp}-{self.run_hash}"
        count = 1
        while candidate.exists():  # --fresh twice within a second
            count += 1
            candidate = self.experiment_dir / f"{stamp}.{count}-{self.run_hash}"
        return candidate

    def stage_dir(self, name: str) -> Path:
        return self.directory / "stages" / name

    def _finished(self, directory: Path, key: str) -> bool:
        record = directory / STAGE_RECORD
        if not record.is_file():
            return False
        try:
            return read_json(record).get("key") == key
        except (OSError, ValueError):
            return False

    def _earlier_finished(self, plan: StagePlan) -> Path | None:
        """A finished stage with the same key in another run: of this experiment
        first (newest first), then of any other experiment under the runs folder. A
        stage's key hashes its plugins, their parameters and versions, the seed, the
        precision and the keys of its inputs, so two specs that build the same data
        and train the same model share those stages (a spec that analyses another
        spec's trained network reuses it)."""
        if self.fresh or not self.runs_dir.is_dir():
            return None
        experiments = [self.experiment_dir] + sorted(
            p for p in self.runs_dir.iterdir() if p.is_dir() and p != self.experiment_dir)
        for experiment in experiments:
            if not experiment.is_dir():
                continue
            for other in sorted(experiment.iterdir(), reverse=True):
                if other == self.directory:
                    continue
                for name in dict.fromkeys((plan.name, v1_stage_name(plan.name))):
                    candidate = other / "stages" / name
                    if self._finished(candidate, plan.key):
                        return candidate
        return None

    def _earlier_partial(self, plan: StagePlan) -> Path | None:
        """An interrupted stage with the same key in another run directory of this
        experiment (newest first) that no process holds, to resume rather than start
        over: a change elsewhere in the spec (a probe's new parameter, or one a new
        version of a plugin adds with its default) gives the run a new directory but
        leaves the model stage's key, and its checkpoints, as they were."""
        if self.fresh or not self.experiment_dir.is_dir():
            return None
        for other in sorted(self.experiment_dir.iterdir(), reverse=True):
            candidate = other / "stages" / f"{plan.name}.partial"
            key_file = candidate / KEY_FILE
            if other == self.directory or not key_file.is_file() or key_file.read_text() != plan.key:
                continue
            with open(other / "run.lock", "a") as handle:  # a run in progress holds its lock
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                fcntl.flock(handle, fcntl.LOCK_UN)
            return candidate
        return None

    # -- upstream access for stages -----------------------------------------------

    def _component(self, path: str) -> Any:
        cache_key = f"component:{path}"
        if cache_key not in self._cache:
            self._cache[cache_key] = self.resolved.components[path].build()
        return self._cache[cache_key]

    def _dataset(self) -> DataSplits:
        if "dataset" not in self._cache:
            self._cache["dataset"] = self._component("dataset").load(self.stage_dir("dataset"))
        return self._cache["dataset"]

    def _model(self) -> Model:
        return self._component("model")

    def _network(self) -> torch.nn.Module:
        if "network" not in self._cache:
            model = self._model()
            network = model.network()
            model.load_weights(network, self.stage_dir("model") / "model.pt")
            self._cache["network"] = network.to(self.placement.device).eval()
        return self._cache["network"]

    def _upstream(self, kind: str) -> list[StageOutput]:
        kind = {"data": "dataset", "statistics": "statistic"}.get(kind, kind)  # names before 2
        return [
            StageOutput(plan.name, plan.components[0].plugin.name, self.stage_dir(plan.name))
            for plan in self.plans
            if plan.kind == kind and self._finished(self.stage_dir(plan.name), plan.key)
        ]

    def _context(self, plan: StagePlan, workdir: Path) -> StageContext:
        has_data = self.resolved.component("dataset") is not None
        has_model = self.resolved.component("model") is not None
        return StageContext(
            stage=plan.name,
            workdir=workdir,
            placement=self.placement,
            seed=self._stage_seed(plan.name),
            rank=self.rank,
            world=self.world,
            log=self.log,
            spec_dir=self.resolved.spec_dir,
            _dataset=self._dataset if has_data else None,
            _network=self._network if has_model else None,
            _model=self._model if has_model else None,
            _upstream=self._upstream,
            _progress=progress,
        )

    def _stage_seed(self, stage: str) -> int:
        # Each stage's seed depends only on the spec seed and its name, so a stage
        # computes the same whether or not the stages before it were reused.
        # (with the stage's name of spec_version 1, as its key: same key, same data)
        name = v1_stage_name(stage)
        return int(hashlib.sha256(f"{self.spec.seed}:{name}".encode()).hexdigest()[:8], 16)

    # -- executing -----------------------------------------------------------------

    def _write_metadata(self, status: str, **extra: Any) -> None:
        """Update run.json; facts about the machine describe the latest attempt."""
        record_path = self.directory / "run.json"
        record = read_json(record_path) if record_path.is_file() else {"created": _now()}
        if status == "running":  # every attempt starts so
            record.update(
                name=self.spec.name,
                description=self.spec.description,
                run_hash=self.run_hash,
                spec_digest=self.resolved.digest(),
                spec_source=self.resolved.source,
                profile=self.spec.profile,
                variant=self.spec.variant,
                seed=self.spec.seed,
                python=sys.version.split()[0],
                platform=platform.platform(),
                git=_git_revision(),
                lock=lock_record(),
                device=self.placement.describe(),
                plugins={
                    c.path: {"plugin": c.plugin.name, "version": c.plugin.version,
                             "source": str(c.plugin.source)}
                    for c in self.resolved.components.values()
                },
                stages=[
                    {"name": p.name, "kind": p.kind, "key": p.key,
                     "plugins": [c.plugin.name for c in p.components]}
                    for p in self.plans
                ],
                report_formats=self.spec.report.formats,
            )
        for stale in ("stage", "reason", "error", "finished"):
            record.pop(stale, None)
        record.update(status=status, updated=_now(), **extra)
        write_json(record_path, record)

    def _prepare_directory(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "stages").mkdir(exist_ok=True)
        write_text(
            self.directory / "spec.yaml",
            yaml.safe_dump(self.resolved.to_dict(), sort_keys=False, allow_unicode=True),
        )
        if not (self.directory / "environment.json").is_file():
            write_json(self.directory / "environment.json",
                       {"packages": distribution_versions(), "lock": lock_record()})

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        lock_path = self.directory / "run.lock"
        handle = open(lock_path, "w")  # noqa: SIM115 - held for the whole run
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise WavelensError(
                    f"another wavelens process is running in {self.directory}; wait for it "
                    "or use --fresh for a separate run"
                ) from None
            yield
        finally:
            handle.close()

    @contextlib.contextmanager
    def _file_log(self) -> Iterator[None]:
        handler = logging.FileHandler(self.directory / "run.log", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = get_logger()
        root.addHandler(handler)
        try:
            yield
        finally:
            root.removeHandler(handler)
            handler.close()

    def execute(self, until: str | None = None) -> Path:
        """Run every stage that is not already finished; write the report.

        ``until`` names a stage (``dataset``; the names of spec_version 1, ``data``
        and ``probe.N``, are understood) to stop after: the run is left ``partial``,
        and running the whole spec later resumes it.

        Returns the run directory. Raises :class:`RunInterrupted` on SIGINT/SIGTERM
        (running again resumes), and re-raises a stage's error after recording it.
        """
        names = [plan.name for plan in self.plans]
        if until is not None and until not in names:  # a stage's name before spec_version 2
            until = {v1_stage_name(name): name for name in names}.get(until, until)
        if until is not None and until not in names:
            raise WavelensError(
                f"the spec has no stage {until!r}; its stages are {', '.join(names) or 'none'}"
            )
        if self.rank != 0:
            return self._execute_as_worker(until)
        self._prepare_directory()
        with self._locked(), self._file_log(), _interrupt_on_sigterm():
            self.log.info("run directory: %s", self.directory)
            self.log.info("device: %s (%s)", self.placement.device, self.placement.precision)
            self._write_metadata("running", pid=os.getpid())
            current = None
            try:
                for plan in self.plans:
                    current = plan.name
                    if self.world > 1:  # tell the other ranks whether to join this stage
                        dist.broadcast_object_list(
                            ["run" if self._will_compute(plan) else "skip"], src=0)
                    self._execute_stage(plan)
                    if self.world > 1:
                        dist.barrier()
                    if plan.name == until and not all(
                        self._finished(self.stage_dir(p.name), p.key) for p in self.plans
                    ):  # (a run whose every stage is finished goes on to complete)
                        self._write_metadata("partial", stage=until, pid=None)
                        self._release_workers()
                        return self.directory
                self._release_workers()
                current = "report"
                self._write_metadata("complete", finished=_now(), pid=None)
                written = write_report(self.directory)
                for path in written:
                    self.log.info("report: %s", path)
            except (KeyboardInterrupt, RunInterrupted) as exc:
                reason = str(exc) or "interrupted by the user"
                self._write_metadata("interrupted", stage=current, reason=reason, pid=None)
                self.log.warning(
                    "interrupted during stage %s (%s); run the same command again to resume",
                    current, reason,
                )
                raise RunInterrupted(f"stage {current}: {reason}") from None
            except BaseException as exc:
                self._write_metadata(
                    "failed", stage=current, error=f"{type(exc).__name__}: {exc}", pid=None
                )
                with open(self.directory / "run.log", "a", encoding="utf-8") as log_file:
                    traceback.print_exc(file=log_file)
                raise
        return self.directory

    def _will_compute(self, plan: StagePlan) -> bool:
        return not self._finished(self.stage_dir(plan.name), plan.key) and (
            self._earlier_finished(plan) is None
        )

    def _release_workers(self) -> None:
        if self.world > 1:
            dist.broadcast_object_list(["stop"], src=0)
            _leave_process_group(destroy=self._owns_group)

    def _execute_as_worker(self, until: str | None) -> Path:
        """A rank other than 0 under torchrun: follow rank 0 stage by stage (it says
        "run", "skip" or "stop"), and train with it when the model stage is
        computed. Writes nothing of the run's."""
        self.log.setLevel(logging.WARNING)
        for plan in self.plans:
            decision = [""]
            dist.broadcast_object_list(decision, src=0)
            if decision[0] == "stop":
                break
            if decision[0] == "run" and plan.kind == "model" and self.spec.train is not None:
                partial = self.stage_dir(plan.name).with_name(plan.name + ".partial")
                ctx = self._context(plan, partial)
                seed_everything(ctx.seed)
                model: Model = self._component("model")
                network = model.network()
                if self.spec.model.weights is not None:
                    model.load_weights(network, self.spec.model.weights)
                network.to(self.placement.device).train()
                model.train(network, ctx, self.spec.train)
            dist.barrier()
        else:
            dist.broadcast_object_list([""], src=0)  # rank 0's closing "stop"
        _leave_process_group(destroy=self._owns_group)
        return self.directory

    def _adopt_v1_folders(self, plan: StagePlan) -> None:
        """A run directory written before spec_version 2 names the stage as version
        1 did (``data``, ``probe.N``): its folders take the new name, so that the run
        resumes or reuses them."""
        old = v1_stage_name(plan.name)
        if old == plan.name:
            return
        for suffix in ("", ".partial"):
            legacy, current = self.stage_dir(old + suffix), self.stage_dir(plan.name + suffix)
            if legacy.is_dir() and not current.exists():
                os.replace(legacy, current)

    def _execute_stage(self, plan: StagePlan) -> None:
        self._adopt_v1_folders(plan)
        final = self.stage_dir(plan.name)
        if self._finished(final, plan.key):
            self.outcomes[plan.name] = "reused"
            self.log.info("stage %s: finished earlier, reused", plan.name)
            return
        earlier = self._earlier_finished(plan)
        if earlier is not None:
            linking = final.with_name(final.name + ".linking")
            _remove(linking)  # left by an attempt interrupted while linking
            _link_tree(earlier, linking)
            _remove(final)
            os.replace(linking, final)
            source = earlier.parent.parent
            where = source.name if source.parent == self.experiment_dir else (
                f"{source.parent.name}/{source.name}")
            self.outcomes[plan.name] = f"reused from {where}"
            self.log.info("stage %s: reused from %s", plan.name, source)
            return

        partial = final.with_name(final.name + ".partial")
        key_file = partial / KEY_FILE
        if not (partial.is_dir() and key_file.is_file() and key_file.read_text() == plan.key):
            adopted = self._earlier_partial(plan)
            if adopted is not None:  # interrupted in a run whose spec differs elsewhere
                _remove(partial)
                os.replace(adopted, partial)
                self.log.info("stage %s: taking over the interrupted stage of %s", plan.name,
                              adopted.parent.parent)
        if partial.is_dir() and key_file.is_file() and key_file.read_text() == plan.key:
            self.log.info("stage %s: resuming from %s", plan.name, partial)
        else:
            _remove(partial)
            partial.mkdir(parents=True)
            write_text(key_file, plan.key)

        ctx = self._context(plan, partial)
        seed_everything(ctx.seed)
        self.log.info("stage %s: running %s", plan.name,
                      ", ".join(c.plugin.name for c in plan.components))
        started = time.perf_counter()
        summary = STAGE_RUNNERS[plan.kind](self, plan, ctx) or {}
        duration = time.perf_counter() - started

        write_json(
            partial / STAGE_RECORD,
            {
                "stage": plan.name,
                "kind": plan.kind,
                "key": plan.key,
                "plugins": [
                    {"name": c.plugin.name, "version": c.plugin.version} for c in plan.components
                ],
                "seed": ctx.seed,
                "finished": _now(),
                "duration_s": round(duration, 3),
                "summary": summary,
            },
            sort_keys=False,  # a dataset summary's order is the order to show it in
        )
        _remove_leftovers(partial)
        if final.exists():
            stale = final.with_name(f"{final.name}.stale-{os.getpid()}")
            os.replace(final, stale)
            _remove(stale)
        os.replace(partial, final)
        self.outcomes[plan.name] = "computed"
        self.log.info("stage %s: done in %.1f s", plan.name, duration)


def _remove_leftovers(folder: Path) -> None:
    """Delete the temporary files of writes that a kill cut short (``atomic_write``
    names them ``.<name>.<random>.tmp``), so a finished stage holds only finished files."""
    for leftover in folder.rglob(".*.tmp"):
        if leftover.is_file():
            leftover.unlink(missing_ok=True)


# -- torchrun ----------------------------------------------------------------------------


def _torchrun_rank_world() -> tuple[int, int]:
    """``(RANK, WORLD_SIZE)`` as torchrun sets them; ``(0, 1)`` otherwise."""
    try:
        return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise WavelensError("RANK and WORLD_SIZE must be integers (as torchrun sets them)") from None


def _leave_process_group(destroy: bool) -> None:
    """Leave the group together: every rank waits for the others, then destroys it.
    A group left to the interpreter's teardown, or destroyed while a peer still uses
    it, can abort a process at exit ("terminate called without an active exception",
    seen with gloo on two CPU processes)."""
    dist.barrier()
    if destroy:
        dist.destroy_process_group()


def _join_process_group(placement: Placement) -> Placement:
    """Join torchrun's process group (NCCL on CUDA, gloo on the CPU); on CUDA, each
    process takes the GPU of its LOCAL_RANK."""
    cuda = placement.device.type == "cuda"
    if not dist.is_initialized():
        # Rank 0 may spend long on stages the others wait for (building a corpus).
        dist.init_process_group("nccl" if cuda else "gloo", timeout=_dt.timedelta(hours=24))
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        placement = dataclasses.replace(placement, device=torch.device("cuda", local))
    return placement


# -- what each kind of stage does ------------------------------------------------------


def _run_data(run: Run, plan: StagePlan, ctx: StageContext) -> dict[str, Any]:
    dataset = run._component("dataset")
    dataset.prepare(ctx)
    splits = dataset.load(ctx.workdir)
    # The stage record keeps the summary, so `wavelens data describe` and the report
    # read it back without loading the data again.
    return _to_jsonable(dataset.describe(ctx.workdir, splits))


def _run_model(run: Run, plan: StagePlan, ctx: StageContext) -> dict[str, Any]:
    model: Model = run._component("model")
    network = model.network()
    weights = run.spec.model.weights
    if weights is not None:
        try:
            model.load_weights(network, weights)
        except Exception as exc:
            raise StageError(
                f"cannot load model.weights {weights} into {plan.components[0].plugin.name}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        ctx.log.info("loaded weights from %s", weights)
    if run.spec.train is not None:
        network.to(run.placement.device)
        network.train()
        model.train(network, ctx, run.spec.train)
    elif weights is None and any(True for _ in network.parameters()):
        ctx.log.warning("model has neither weights nor a train section: using it untrained")
    elif weights is not None:
        ctx.write_report(_provenance(weights, plan.extra_key["weights_sha256"]))
    network.to("cpu")
    model.save_weights(network, ctx.workdir / "model.pt")
    n_params = sum(p.numel() for p in network.parameters())
    return {"parameters": n_params, "trained": run.spec.train is not None,
            "weights": str(weights) if weights else None}


def _provenance(weights: Path, digest: str) -> str:
    """The report's words on weights used without training: the file and its digest
    (the one the stage key holds), and, for a weights folder with a ``manifest.json``
    (``weights/*/``), how they were trained, by the manifest's account."""
    text = (f"Not trained in this run: the weights were loaded from `{weights}` "
            f"(sha256 {digest[:16]}…).")
    manifest_path = weights.parent / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return text + "\n"
    facts = []
    if manifest.get("command"):
        facts.append(f"trained by `{manifest['command']}`")
    if manifest.get("commit"):
        facts.append(f"at commit {str(manifest['commit'])[:7]}")
    if manifest.get("steps"):
        facts.append(f"for {manifest['steps']:,} steps")
    if manifest.get("model_stage_seconds"):
        facts.append(f"in {float(manifest['model_stage_seconds']) / 60:.0f} minutes")
    if manifest.get("machine"):
        facts.append(f"on {manifest['machine']}")
    text += f" Their manifest (`{manifest_path}`) says they were {' '.join(facts)}."
    if manifest.get("note"):
        text += f" {manifest['note']}"
    return text + "\n"


def _run_component(run: Run, plan: StagePlan, ctx: StageContext) -> None:
    run._component(plan.name).run(ctx)


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v) for v in value]
    return value


def _run_metrics(run: Run, plan: StagePlan, ctx: StageContext) -> dict[str, Any]:
    evaluation = run.spec.evaluation
    splits = ctx.dataset()
    if evaluation.split not in splits:
        raise StageError(
            f"evaluation.split is {evaluation.split!r}, but the data has the splits "
            f"{', '.join(splits)}"
        )
    model, network = ctx.model(), ctx.network()
    metrics: dict[str, Metric] = {c.path: run._component(c.path) for c in plan.components}
    split = splits[evaluation.split]
    loader = torch.utils.data.DataLoader(
        split, batch_size=evaluation.batch_size, shuffle=False, collate_fn=collate_items,
    )
    rows: list[dict[str, Any]] = []
    if evaluation.scores_per_item:
        rows = _score_items(run, plan, ctx, model, network, metrics, loader)
    else:
        with torch.no_grad(), run.placement.autocast():
            for batch in ctx.progress(loader, total=len(loader), description="metrics"):
                preds, target = model.predict(network, batch, ctx)
                for metric in metrics.values():
                    metric.update(preds, target)
    results = []
    for component in plan.components:
        metric = metrics[component.path]
        try:
            value = _to_jsonable(metric.compute())
        except StageError as error:
            if not evaluation.scores_per_item:
                raise
            value = None  # no item was scored; the items' errors say why
            ctx.log.warning("%s: %s", component.plugin.name, error)
        results.append({"path": component.path, "metric": component.plugin.name, "value": value,
                        "higher_is_better": metric.higher_is_better})
    # How the metrics present their values (stored, so reports never need the plugins).
    layout = presentation({c.plugin.name: metrics[c.path] for c in plan.components})
    record: dict[str, Any] = {"split": evaluation.split, "results": results, "columns": layout}
    report = [f"Scored on the `{evaluation.split}` split."]
    if evaluation.scores_per_item:
        names = [c.plugin.name for c in plan.components]
        by = evaluation.by
        group = [k for k in by if k not in ("item", "status", "reason")]
        columns = ["item", *group, "status", "reason", *metric_columns(rows, by, layout)]
        write_csv(ctx.workdir / "scores.csv", rows, columns)
        overall = summarize([{k: v for k, v in r.items() if k not in by} for r in rows], columns=layout)
        grouped = summarize(rows, by, layout) if by else []
        record.update(overall=overall, grouped=grouped, by=by)
        scored = sum(r["status"] == "ok" for r in rows)
        report[0] = (f"Scored {scored} of {len(rows)} items of the `{evaluation.split}` split "
                     f"({', '.join(names)}); per-item values in `scores.csv`.")
        report += ["", summary_markdown(overall, columns=layout)]
        if grouped:
            report += ["", f"By {', '.join(by)}:", "", summary_markdown(grouped, by, layout)]
        errors = [r for r in rows if r["status"] != "ok"]
        if errors:
            report += ["", f"{len(errors)} item(s) not scored, for example `{errors[0]['item']}`: "
                       f"{errors[0]['reason']}"]
    else:
        lines = ["| metric | value |", "| --- | --- |"]
        for result in results:
            value = result["value"]
            shown = f"{value:.4f}" if isinstance(value, float) else json.dumps(value)
            arrow = {True: " ↑", False: " ↓"}.get(result["higher_is_better"], "")
            lines.append(f"| {result['metric']}{arrow} | {shown} |")
        report += ["", *lines]
    write_json(ctx.workdir / "metrics.json", record)
    ctx.write_report("\n".join(report) + "\n")
    summary: dict[str, Any] = {"examples": len(split), "values": {r["path"]: r["value"] for r in results}}
    if evaluation.scores_per_item:
        summary["scored"] = sum(r["status"] == "ok" for r in rows)
    return summary


def _score_items(run: Run, plan: StagePlan, ctx: StageContext, model: Model,
                 network: torch.nn.Module, metrics: dict[str, Metric],
                 loader: torch.utils.data.DataLoader) -> list[dict[str, Any]]:
    """Predict batch by batch, score each item in worker processes; merge the
    items' metric states into ``metrics`` (so ``compute`` gives the overall values)."""
    evaluation = run.spec.evaluation
    # Columns are named by plugin (a plugin used twice gets _2, _3, ...); the scorer
    # works on copies, whose per-item states are merged into ``metrics``.
    names: dict[str, str] = {}
    for component in plan.components:
        name, count = component.plugin.name, 1
        while name in names.values():
            count += 1
            name = f"{component.plugin.name}_{count}"
        names[component.path] = name
    path_of = {name: path for path, name in names.items()}
    scoring = {names[path]: copy.deepcopy(metric) for path, metric in metrics.items()}
    rows: list[dict[str, Any]] = []
    index = 0
    with item_scorer(scoring, evaluation.workers) as score:
        for batch in ctx.progress(loader, total=len(loader), description="metrics"):
            with torch.no_grad(), run.placement.autocast():
                preds, target = model.predict(network, batch, ctx)
            n = len(batch["name"]) if "name" in batch else len(next(iter(batch.values())))
            pred_items, target_items = split_items(preds, n), split_items(target, n)
            results = score(list(zip(pred_items, target_items, strict=True)))
            for i, (values, states) in enumerate(results):
                row: dict[str, Any] = {"item": batch["name"][i] if "name" in batch else str(index)}
                for key in evaluation.by:
                    if key not in batch:
                        raise StageError(f"evaluation.by names {key!r}, but the items have no such "
                                         f"field (they have {', '.join(batch)})")
                    value = batch[key][i]
                    row[key] = value.item() if isinstance(value, torch.Tensor) else value
                row.update(values)
                for name, state in states.items():
                    metrics[path_of[name]].merge(state)
                rows.append(row)
                index += 1
    return rows


STAGE_RUNNERS: dict[str, Callable[[Run, StagePlan, StageContext], Any]] = {
    "dataset": _run_data,
    "model": _run_model,
    "probe": _run_component,
    "statistic": _run_component,
    "metric": _run_metrics,
}
