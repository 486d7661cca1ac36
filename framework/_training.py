"""The training loop every model plugin shares.

A model's ``train`` builds a :class:`TrainingLoop` subclass that says what one step
does (:meth:`~TrainingLoop.train_step`) and what state it carries besides the
network (:meth:`~TrainingLoop.extra_state` / :meth:`~TrainingLoop.load_extra_state`:
optimisers, schedulers, random generators, data order). The loop does the rest, the
same way for every model:

* takes its settings from the stage and the spec (:meth:`~TrainingLoop.from_context`,
  or ``context=ctx, train=train``): the folder, device and precision, processes,
  logger, progress bar, steps, checkpoint and log intervals;
* owns precision and the optimiser step: :meth:`~TrainingLoop.autocast` around the
  forward pass, :meth:`~TrainingLoop.backward` on the loss (scaled by a gradient
  scaler where fp16 needs one) and :meth:`~TrainingLoop.step` for the optimisers
  (gradients averaged over the processes, unscaled, the step skipped when they
  overflowed, the scale updated);
* checkpoints the network itself (the ``network`` given to ``__init__``, or else the
  loop's ``self.network``) and restores it before :meth:`~TrainingLoop.load_extra_state`;
* resumes from the newest checkpoint in ``workdir/checkpoints`` (a stage interrupted
  and run again continues where it stopped, bit for bit when the model keeps its
  random generators in its state); a newest checkpoint that cannot be read (a
  truncated file) is set aside and the one before it is used, with a warning;
* shows a progress bar (with :meth:`~TrainingLoop.status` beside it) on rank 0;
* averages the logged values over each ``log_every`` window into ``history``;
* saves a checkpoint every ``checkpoint_every`` steps and at the end;
* turns SIGINT/SIGTERM into "finish this step, save, raise :class:`RunInterrupted`";
* under torchrun, records every replica's parameter checksum in each checkpoint, so
  diverging replicas are noticed.

Example::

    class MyLoop(TrainingLoop):
        def __init__(self, *, data, **settings):
            super().__init__(**settings)
            self.data = data
            self.optimizer = torch.optim.AdamW(self.network.parameters())

        def train_step(self, step):
            with self.autocast():
                loss = self.network(next(self.data)).mean()
            self.optimizer.zero_grad()
            self.backward(loss)
            self.step(self.optimizer)
            return {"loss": loss.detach()}

        def extra_state(self):  # the network is the loop's to checkpoint
            return {"optimizer": self.optimizer.state_dict()}

        def load_extra_state(self, state):
            self.optimizer.load_state_dict(state["optimizer"])

    # in the model's train(network, ctx, train):
    history = MyLoop.from_context(ctx, train, network=network, data=batches).run()
"""

from __future__ import annotations

import contextlib
import hashlib
import signal
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from ._device import Placement, resolve_placement
from ._errors import RunInterrupted, StageError
from ._io import CheckpointManager

if TYPE_CHECKING:
    from ._components import StageContext
    from ._spec import TrainSpec

__all__ = ["TrainingLoop", "deferred_interrupts"]


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[Callable[[], str | None]]:
    """Turn SIGINT/SIGTERM into a flag checked between steps (main thread only);
    yields a function returning the signal's name once one arrived."""
    received: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return

    def handler(signum: int, frame: Any) -> None:
        received.append(signal.Signals(signum).name)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: received[0] if received else None
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class TrainingLoop(ABC):
    """Steps ``1..steps`` with resumption, logging, checkpoints and interrupts.

    Args:
        network: the network the loop trains, available as ``self.network``; its
            weights go into every checkpoint (under ``"network"``) and come back on
            resume. Without it the loop uses ``self.network`` when the subclass sets one.
        steps: the last step (a resumed loop starts after its checkpoint's step);
            default ``train.steps``.
        context: the stage's :class:`~wavelens.StageContext`: gives ``workdir``,
            ``placement``, ``rank``, ``world``, ``log`` and ``progress``.
        train: the spec's :class:`~wavelens.TrainSpec`: gives ``steps``,
            ``checkpoint_every``, ``keep_checkpoints``, ``log_every`` and ``on_nonfinite``.
        workdir: the model stage's folder; checkpoints go to ``workdir/checkpoints``.
        placement: the device and precision (default: the CPU in fp32).
        checkpoint_every, keep_checkpoints, log_every: as in the spec's ``train``.
        rank, world: this process and the number of processes; rank 0 alone writes.
        log: a logger (messages on rank 0 only), or None.
        on_nonfinite: when a logged value of a step is NaN or infinite: ``"stop"``
            (raise :class:`StageError` naming the step; no checkpoint of the diverged
            network is written) or ``"warn"`` (log a warning once and go on); the
            spec's ``train.on_nonfinite``.
        progress: ``ctx.progress`` (or None for no bar).
        description: the progress bar's label.

    An argument given explicitly wins over the value ``context`` or ``train`` gives.
    """

    def __init__(self, *, network: torch.nn.Module | None = None, steps: int | None = None,
                 context: StageContext | None = None, train: TrainSpec | None = None,
                 workdir: Path | None = None, placement: Placement | None = None,
                 checkpoint_every: int | None = None, keep_checkpoints: int | None = None,
                 log_every: int | None = None, rank: int | None = None, world: int | None = None,
                 log: Any = None, progress: Callable[..., Iterator] | None = None,
                 description: str = "steps", on_nonfinite: str | None = None):
        def pick(value: Any, source: Any, name: str, default: Any) -> Any:
            if value is not None:
                return value
            return getattr(source, name) if source is not None else default

        if steps is None:
            if train is None:
                raise TypeError("give steps=..., or train=... (the spec's train settings)")
            steps = train.required_steps(type(self).__name__)
        workdir = pick(workdir, context, "workdir", None)
        if workdir is None:
            raise TypeError("give workdir=..., or context=... (the stage's context)")
        self.workdir = Path(workdir)
        self.steps = steps
        self.checkpoint_every = pick(checkpoint_every, train, "checkpoint_every", 1000)
        self.log_every = pick(log_every, train, "log_every", 50)
        self.rank, self.world = pick(rank, context, "rank", 0), pick(world, context, "world", 1)
        self.log = pick(log, context, "log", None)
        self.progress = pick(progress, context, "progress", None)
        self.placement: Placement = pick(placement, context, "placement", None) or resolve_placement("cpu")
        self.scaler = self.placement.grad_scaler()
        self.description = description
        self.history: list[dict[str, float]] = []
        self.checkpoints = CheckpointManager(self.workdir / "checkpoints",
                                             keep=pick(keep_checkpoints, train, "keep_checkpoints", 3))
        self._network = network
        if network is not None:
            self.network = network
        on_nonfinite = pick(on_nonfinite, train, "on_nonfinite", "stop")
        if on_nonfinite not in ("stop", "warn"):
            raise ValueError(f"on_nonfinite must be 'stop' or 'warn', not {on_nonfinite!r}")
        self.on_nonfinite = on_nonfinite
        self._warned_nonfinite = False
        self._started = 0.0
        self._done_here = 0

    @classmethod
    def from_context(cls, context: StageContext, train: TrainSpec, **arguments: Any) -> TrainingLoop:
        """The loop with its settings from the stage and the spec's ``train``;
        ``arguments`` go to the subclass's ``__init__`` (``network=``, the data, the
        optimiser settings; any setting given here wins)."""
        return cls(context=context, train=train, **arguments)

    # -- what a model says --------------------------------------------------------------

    @abstractmethod
    def train_step(self, step: int) -> dict[str, torch.Tensor | float]:
        """Do step ``step``; return values to log (tensors are fine: they are read
        only when a log window closes, so the GPU is not waited for every step)."""

    @abstractmethod
    def extra_state(self) -> dict[str, Any]:
        """Everything to checkpoint besides the step, the history and the network
        (plain data and tensors: checkpoints are read with ``weights_only=True``)."""

    @abstractmethod
    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned."""

    def parameters_for_checksum(self) -> Iterable[torch.Tensor]:
        """Tensors that must agree across processes (default: none)."""
        return ()

    def before_training(self, start: int) -> None:  # noqa: B027 - optional hook
        """Called once after resuming at ``start``, before the first step."""

    def after_step(self, step: int) -> None:  # noqa: B027 - optional hook
        """Called after every step, before the step's checkpoint (samples, validation,
        learning-rate schedules). Values added to ``history`` here are kept."""

    def log_message(self, entry: dict[str, float]) -> str:
        """The line logged for a closed window (``entry`` holds the means)."""
        values = "  ".join(f"{k} {v:.4g}" for k, v in entry.items() if k not in ("step", "steps_per_s"))
        return f"step {entry['step']}: {values}  {entry['steps_per_s']:.2f} steps/s"

    def status(self) -> str:
        """Text shown beside the progress bar."""
        if not self._done_here:
            return ""
        text = f"{self._done_here / (time.perf_counter() - self._started):.2f} steps/s"
        if self.history:
            shown = [(k, v) for k, v in self.history[-1].items() if k not in ("step", "steps_per_s")][:3]
            text += "  " + "  ".join(f"{k} {v:.3f}" for k, v in shown)
        return text

    # -- precision and the step -----------------------------------------------------------

    def autocast(self) -> contextlib.AbstractContextManager:
        """The forward pass's autocast for the run's device and precision (a no-op in
        fp32)."""
        return self.placement.autocast()

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """``loss`` times the gradient scaler's scale (itself where no scaling is
        needed): for gradients taken with ``torch.autograd.grad``, which
        :meth:`step` then unscales like those of :meth:`backward`."""
        return self.scaler.scale(loss)

    def backward(self, loss: torch.Tensor) -> None:
        """Back-propagate ``loss``, scaled where fp16 needs it."""
        self.scaler.scale(loss).backward()

    def step(self, *optimizers: torch.optim.Optimizer, update: bool = True) -> None:
        """Step each optimiser: its parameters' gradients averaged over the processes,
        unscaled, and the step skipped if they are not finite (fp16 with a gradient
        scaler). Then the scaler's scale is updated, unless ``update=False``: give it
        when more optimisers follow in the same step whose gradients were scaled with
        the same scale (every optimiser stepped between two updates must have its
        gradients from that scale)."""
        for optimizer in optimizers:
            self.average_gradients(p for group in optimizer.param_groups for p in group["params"])
            self.scaler.step(optimizer)
        if update:
            self.scaler.update()

    # -- shared machinery ---------------------------------------------------------------

    def average_gradients(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        """Average the gradients of ``parameters`` over the processes (one all-reduce
        of one flat buffer); nothing with one process."""
        if self.world == 1:
            return
        grads = [p.grad for p in parameters if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for grad in grads:
            grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
            offset += grad.numel()

    def parameter_checksum(self) -> str:
        digest = hashlib.sha256()
        for tensor in self.parameters_for_checksum():
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def _check_finite(self, values: dict[str, torch.Tensor], first_step: int) -> None:
        """Stop (or warn) at the first step of a log window whose logged values are
        not all finite."""
        bad = {k: v for k, v in values.items() if not torch.isfinite(v).all()}
        if not bad:
            return
        index = min(int((~torch.isfinite(v)).nonzero()[0, 0]) for v in bad.values())
        step = first_step + index
        at_step = {k: v[index] for k, v in bad.items() if not torch.isfinite(v[index]).all()}
        names = ", ".join(f"{k} = {float(v):g}" if v.numel() == 1 else k for k, v in at_step.items())
        message = (f"training diverged at step {step}: {names or ', '.join(bad)} (a learning rate too "
                   "large, or bad input)")
        if self.on_nonfinite == "stop":
            kept = self.checkpoints.steps()
            last = (f"the last checkpoint, of step {kept[-1]}, is kept" if kept
                    else "no checkpoint was written")
            raise StageError(f"{message}; stopped ({last}; train.on_nonfinite: warn goes on instead)")
        if not self._warned_nonfinite and self.log and self.rank == 0:
            self.log.warning("%s; going on (train.on_nonfinite: warn)", message)
        self._warned_nonfinite = True

    def trained_network(self) -> torch.nn.Module | None:
        """The network the loop checkpoints: ``network`` given to ``__init__``, else
        ``self.network`` when it is a module."""
        if self._network is not None:
            return self._network
        found = getattr(self, "network", None)
        return found if isinstance(found, torch.nn.Module) else None

    def save(self, step: int) -> None:
        """Checkpoint ``step`` (rank 0 writes; every rank's checksum is recorded)."""
        state = {"step": step, "history": self.history, **self.extra_state()}
        if self.scaler.is_enabled():
            state["grad_scaler"] = self.scaler.state_dict()
        network = self.trained_network()
        if network is not None:
            state["network"] = network.state_dict()
        if self.world > 1:
            checksums: list[str] = [""] * self.world
            dist.all_gather_object(checksums, self.parameter_checksum())
            state["replica_checksums"] = checksums
            if len(set(checksums)) != 1 and self.log:
                self.log.error("replicas differ at step %d: %s", step, checksums)
        if self.rank == 0:
            self.checkpoints.save(step, state)
        if self.world > 1:
            dist.barrier()

    def restore(self) -> int:
        """Load the newest checkpoint, if any; return its step (0 without one)."""
        found = self.checkpoints.latest(map_location="cpu")
        if found is None:
            return 0
        step, state = found
        network = self.trained_network()
        if network is not None:
            if "network" not in state:
                raise StageError(f"checkpoint {self.checkpoints.path(step)} holds no network weights; "
                                 "resuming would start from fresh weights. Move it aside to start over.")
            network.load_state_dict(state["network"])
        self.load_extra_state(state)
        if self.scaler.is_enabled() and state.get("grad_scaler"):
            self.scaler.load_state_dict(state["grad_scaler"])
        self.history = list(state.get("history", []))
        return step

    def run(self) -> list[dict[str, float]]:
        """Train to ``steps``; return the logged history."""
        if self.trained_network() is None and "network" not in self.extra_state():
            raise StageError(
                f"{type(self).__name__} would checkpoint no network weights, and a resumed run would "
                "start from fresh ones: pass network=... to TrainingLoop.__init__ (or set self.network)")
        start = self.restore()
        if start and self.log and self.rank == 0:
            self.log.info("resuming training at step %d of %d", start, self.steps)
        self.before_training(start)
        steps: Iterable[int] = range(start + 1, self.steps + 1)
        if self.progress is not None and self.rank == 0:
            steps = self.progress(steps, total=self.steps - start, description=self.description,
                                  status=self.status)
        window: list[dict[str, torch.Tensor | float]] = []
        self._started, self._done_here = time.perf_counter(), 0
        with deferred_interrupts() as interrupted:
            for step in steps:
                window.append(self.train_step(step))
                self._done_here += 1
                if step % self.log_every == 0 or step == self.steps:
                    rate = self._done_here / (time.perf_counter() - self._started)
                    keys = list(window[-1])
                    values = {k: torch.stack([torch.as_tensor(r[k]).float().cpu() for r in window])
                              for k in keys}
                    self._check_finite(values, step - len(window) + 1)
                    means = {k: v.mean().item() for k, v in values.items()}
                    entry = {"step": step, **means, "steps_per_s": rate}
                    self.history.append(entry)
                    window = []
                    if self.log and self.rank == 0:
                        self.log.info("%s", self.log_message(entry))
                self.after_step(step)
                if step % self.checkpoint_every == 0 or step == self.steps:
                    self.save(step)
                reason = interrupted()
                if reason is not None:
                    self.save(step)
                    raise RunInterrupted(f"{reason} at step {step}; checkpoint saved")
        return self.history
