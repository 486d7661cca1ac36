"""The component interfaces a contribution's ``build`` returns, and the context a
stage hands them.

A run executes stages in order (see :mod:`wavelens.run`)::

    data → model (train or load weights) → probe… → statistics… → metrics → report

Each stage gets its own folder, ``StageContext.workdir``, and writes everything it
produces there. Later stages read earlier results only through the context
(``ctx.dataset()``, ``ctx.network()``, ``ctx.upstream("probe")``), which is what lets
the runner reuse a finished stage instead of recomputing it.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from ._device import Placement
from ._errors import StageError
from ._io import save_torch, write_text

if TYPE_CHECKING:  # torch loads where it is used: scoring with metrics needs none of it
    import torch

    from ._spec import TrainSpec

__all__ = [
    "DataSplits",
    "collate_items",
    "StageContext",
    "StageOutput",
    "Dataset",
    "Model",
    "Probe",
    "Statistic",
    "Metric",
    "MetricColumn",
]

DataSplits = Mapping[str, "torch.utils.data.Dataset"]
"""Named splits (``train``, ``test``, …) of a dataset, each a map-style torch dataset
whose items are dicts of tensors and labels (``{"audio": ..., "label": ...}``)."""

T = TypeVar("T")


def collate_items(items: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Batch dataset items (a ``collate_fn`` for ``torch.utils.data.DataLoader``).

    Tensors are stacked; tensors whose last dimension differs (full utterances of
    different lengths) are zero-padded at the end to the longest, so keep each
    item's true length in the item (``length``). Numbers become a tensor (when every
    item has a number there); anything else (strings, annotation lists, ``None``)
    becomes a list with one entry per item.
    """
    import torch

    if not items:
        raise ValueError("collate_items needs at least one item")
    batch: dict[str, Any] = {}
    for key in items[0]:
        values = [item[key] for item in items]
        first = values[0]
        if isinstance(first, torch.Tensor):
            longest = max(v.shape[-1] for v in values) if first.dim() else 0
            if first.dim() and any(v.shape[-1] != longest for v in values):
                values = [torch.nn.functional.pad(v, (0, longest - v.shape[-1])) for v in values]
            batch[key] = torch.stack(values)
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            batch[key] = torch.tensor(values)
        else:
            batch[key] = values
    return batch


@dataclass(frozen=True)
class StageOutput:
    """A finished stage: its name (``probes.0``), plugin and folder."""

    stage: str
    plugin: str
    workdir: Path


@dataclass
class StageContext:
    """What a stage's component gets from the runner.

    Attributes:
        stage: the stage's name, its path in the spec (``dataset``, ``model``,
            ``probes.0``, ``statistics.1``, ``metrics``).
        workdir: the folder to write into. It persists across an interruption (a
            re-run gets the same folder back, with what was written before), and is
            committed atomically when the stage returns.
        placement: the device and precision to use.
        seed: the stage's seed, derived from the spec's seed and the stage name; the
            runner seeds torch, numpy and random with it before the stage starts.
        log: the run's logger; messages go to the console and to ``run.log``.
        spec_dir: the folder of the spec file (relative paths resolve against it).
        rank, world: this process's rank and the number of processes when the run
            was launched with torchrun (the process group is then initialised);
            ``0`` and ``1`` otherwise. Only the model stage runs on every rank; a
            model's ``train`` writes files on rank 0 only.
    """

    stage: str
    workdir: Path
    placement: Placement
    seed: int
    log: logging.Logger
    spec_dir: Path
    rank: int = 0
    world: int = 1
    _dataset: Callable[[], DataSplits] | None = field(default=None, repr=False)
    _network: Callable[[], torch.nn.Module] | None = field(default=None, repr=False)
    _model: Callable[[], Model] | None = field(default=None, repr=False)
    _upstream: Callable[[str], list[StageOutput]] | None = field(default=None, repr=False)
    _progress: Callable[..., Any] | None = field(default=None, repr=False)

    def dataset(self) -> DataSplits:
        """The data stage's splits (raises if the spec has no ``data``)."""
        if self._dataset is None:
            raise StageError(f"stage {self.stage} needs data, but the spec declares no data")
        return self._dataset()

    def network(self) -> torch.nn.Module:
        """The model stage's network, on ``placement.device``, in eval mode."""
        if self._network is None:
            raise StageError(f"stage {self.stage} needs a model, but the spec declares none")
        return self._network()

    def model(self) -> Model:
        """The model component (for ``predict``), built from the spec's params."""
        if self._model is None:
            raise StageError(f"stage {self.stage} needs a model, but the spec declares none")
        return self._model()

    def upstream(self, kind: Literal["dataset", "model", "probe", "statistic"]) -> list[StageOutput]:
        """Finished earlier stages of one kind (``probe``: every ``probes.N`` stage),
        in spec order."""
        return [] if self._upstream is None else self._upstream(kind)

    def progress(
        self,
        items: Iterable[T],
        total: int | None = None,
        description: str = "",
        status: Callable[[], str] | None = None,
    ) -> Iterator[T]:
        """Iterate ``items`` with a progress bar on the console; ``status()`` (called
        after each item) gives text shown beside the bar, such as rates and losses."""
        if self._progress is None:
            yield from items
        else:
            yield from self._progress(items, total=total, description=description or self.stage,
                                      status=status)

    def write_report(self, markdown: str) -> None:
        """Set this stage's section of the run report (Markdown; images may be
        linked by file name relative to ``workdir``)."""
        write_text(self.workdir / "report.md", markdown)


class Dataset(ABC):
    """A dataset component: prepares data into its stage folder, loads it back.

    Items of every split are dicts. By convention audio datasets give ``audio``
    (a float tensor ``(channels, samples)``), ``sample_rate``, a ``label`` where
    there are classes, and their annotations (``word``, ``phones``, ``snr_db``, ...).
    Batch them with :func:`collate_items`.
    """

    def prepare(self, ctx: StageContext) -> None:  # noqa: B027 - optional hook
        """Materialise the data into ``ctx.workdir`` (synthesise, slice, index).

        The default does nothing, for datasets that are cheap to load directly.
        """

    @abstractmethod
    def load(self, workdir: Path) -> DataSplits:
        """Return the named splits from a folder ``prepare`` wrote."""

    def describe(self, workdir: Path, splits: DataSplits) -> dict[str, Any]:
        """A summary of the prepared data, printed by ``wavelens data describe`` and
        added to the data stage's report.

        The summary is JSON-able, with three optional parts::

            {"splits": {"train": {"items": 4032, "hours": 0.5, ...}, ...},  # scalars
             "counts": {"word": {"train": {"ask": 504, ...}, ...}, ...},   # tables
             "notes": ["12 tokens longer than the slice were skipped", ...]}

        The default gives the number of items per split.
        """
        return {"splits": {name: {"items": len(split)} for name, split in splits.items()}}


class Model(ABC):
    """A model component: builds a network, optionally trains it, predicts."""

    @abstractmethod
    def network(self) -> torch.nn.Module:
        """A freshly initialised network (all sub-networks in one module)."""

    def train(self, network: torch.nn.Module, ctx: StageContext, train: TrainSpec) -> None:
        """Train ``network`` in place on ``ctx.dataset()``.

        Save checkpoints under ``ctx.workdir`` (see
        :class:`~wavelens.CheckpointManager`) and resume from the latest one when
        it exists: after an interruption the runner calls ``train`` again with the
        same ``workdir``. The runner saves the final weights when ``train`` returns.
        """
        raise StageError(f"{type(self).__name__} cannot be trained; give model.weights instead")

    def predict(self, network: torch.nn.Module, batch: Any, ctx: StageContext) -> tuple[Any, Any]:
        """Map a batch of the evaluation split to ``(preds, target)`` for metrics."""
        raise StageError(f"{type(self).__name__} does not define predict(); it cannot be scored")

    def save_weights(self, network: torch.nn.Module, path: Path) -> None:
        """Write the network's weights to ``path`` (atomically)."""
        save_torch(path, network.state_dict())

    def load_weights(self, network: torch.nn.Module, path: Path) -> None:
        """Load weights from ``path`` (written by ``save_weights``) into ``network``."""
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True)
        network.load_state_dict(state)


class Probe(ABC):
    """A probe component: runs the network on data and records measurements."""

    @abstractmethod
    def run(self, ctx: StageContext) -> None:
        """Measure ``ctx.network()`` on ``ctx.dataset()`` and write to ``ctx.workdir``."""

    def check_network(self, network: torch.nn.Module) -> list[tuple[str, str]]:
        """Problems with this probe's params that the model's network shows without
        any data (a layer name it does not have): ``(param path, message)`` pairs, the
        path inside the probe's params (``layers``, ``layout.conv*``). ``wavelens
        validate`` builds the network and reports them, with the spec's line.
        Default: none."""
        return []


class Statistic(ABC):
    """A statistic component: fits a model to the probes' measurements."""

    @abstractmethod
    def run(self, ctx: StageContext) -> None:
        """Read ``ctx.upstream("probe")`` outputs, fit, write to ``ctx.workdir``."""

    def fit_table(self, table: Path, ctx: StageContext) -> None:
        """Fit a table file given directly (``wavelens stats fit TABLE --spec SPEC``),
        writing to ``ctx.workdir``. Optional: statistics that only read probe stages
        need not implement it."""
        raise StageError(f"the statistic {type(self).__name__} fits probe stages only; it cannot "
                         "fit a table file")


_REDUCTIONS = ("sum", "cat", "min", "max")


@dataclass(frozen=True)
class MetricColumn:
    """How one value a metric computes is presented in summaries, per-item tables
    and the comparison of variants.

    Attributes:
        key: the column: the metric's name for a single number, a key of the dict
            ``compute`` returns, or that key prefixed with the metric's name (a key
            the metric does not declare is always prefixed: ``frame_accuracy``).
        label: the column's header (``Accuracy``).
        digits: decimals shown (None: four significant digits).
        rank: columns of all metrics are ordered by rank, then as declared.
        compare: shown in the comparison of variants (else only in per-item tables
            and summaries).
        higher_is_better: None: the metric's own ``higher_is_better``.
    """

    key: str
    label: str
    digits: int | None = 2
    rank: float = 1000.0
    compare: bool = True
    higher_is_better: bool | None = None


class Metric(ABC):
    """A metric with explicit state, modelled on torchmetrics.

    Subclasses declare their state in ``__init__`` with :meth:`add_state` and
    implement :meth:`update` (per batch) and :meth:`compute` (at the end). Every
    state names how it is reduced across processes (``sum``, ``cat``, ``min``,
    ``max``), so partial states from several workers merge exactly (:meth:`merge`).
    A mean is kept as a sum and a count.
    """

    higher_is_better: bool | None = None

    def columns(self) -> Sequence[MetricColumn]:
        """How the values are presented (:class:`MetricColumn`); values a metric
        does not declare are shown under their key, with four significant digits,
        after the declared ones."""
        return ()

    def __init__(self) -> None:
        self._defaults: dict[str, Any] = {}
        self._reductions: dict[str, str] = {}

    def add_state(self, name: str, default: Any, reduce: str) -> None:
        """Declare a state: a tensor (``sum``, ``min``, ``max``) or a list (``cat``)."""
        if reduce not in _REDUCTIONS:
            raise ValueError(f"reduce must be one of {_REDUCTIONS}, not {reduce!r}")
        if reduce == "cat" and not isinstance(default, list):
            raise ValueError("a 'cat' state must default to an empty list")
        self._defaults[name] = default
        self._reductions[name] = reduce
        setattr(self, name, self._fresh(default))

    @staticmethod
    def _fresh(default: Any) -> Any:
        if isinstance(default, list):
            return []
        import torch

        return torch.as_tensor(default).clone()

    def reset(self) -> None:
        """Return every state to its default."""
        for name, default in self._defaults.items():
            setattr(self, name, self._fresh(default))

    def state(self) -> dict[str, Any]:
        """The current states (for sending to another process)."""
        return {name: getattr(self, name) for name in self._defaults}

    def merge(self, other_state: Mapping[str, Any]) -> None:
        """Fold another worker's state into this one, by each state's reduction."""
        for name, reduce in self._reductions.items():
            mine, theirs = getattr(self, name), other_state[name]
            if reduce == "cat":
                merged = list(mine) + list(theirs)
            elif reduce == "sum":
                merged = mine + theirs
            else:
                import torch

                pick = torch.minimum if reduce == "min" else torch.maximum
                merged = pick(mine, torch.as_tensor(theirs))
            setattr(self, name, merged)

    @abstractmethod
    def update(self, preds: Any, target: Any) -> None:
        """Accumulate one batch."""

    @abstractmethod
    def compute(self) -> Any:
        """The metric over everything accumulated since the last reset."""
