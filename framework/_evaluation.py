"""Scoring items with metric plugins, and presenting the scores.

:func:`item_scorer` scores (prediction, target) items one by one in worker
processes (a metric's native code need not be thread-safe), each item's row holding
its values or an error entry with the reason: a bad item never stops the scoring.
:func:`summarize` and :func:`summary_markdown` give the means over the scored items
(overall or by group), under the labels and number formats the metrics declare
(:func:`presentation`).
"""

from __future__ import annotations

import collections
import contextlib
import math
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from ._components import Metric, MetricColumn
from ._errors import WavelensError
from ._io import markdown_table


def _values(name: str, value: Any) -> dict[str, float]:
    if isinstance(value, Mapping):
        return {str(k): float(v) for k, v in value.items()}
    return {name: float(value)}


_WORKER_METRICS: Mapping[str, Metric] = {}


# Thread-pool sizes of the native libraries, read once when each loads: a worker
# process must have them before numpy, scipy and torch are imported (that is, when
# the forkserver that preloads them starts), or every worker runs a pool of its own.
SINGLE_THREAD_ENV = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                            "BLIS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                                            "VECLIB_MAXIMUM_THREADS")}


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which a container or
    ``taskset`` may narrow), not every core of the machine."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no affinity on this platform
        return os.cpu_count() or 1


def _arrays() -> tuple[type, ...]:
    """The array types items may hold: numpy's, and torch's where torch is loaded
    (scoring audio with numpy metrics never imports it)."""
    torch = sys.modules.get("torch")
    return (np.ndarray,) if torch is None else (np.ndarray, torch.Tensor)


def _init_worker(metrics: Mapping[str, Metric]) -> None:
    global _WORKER_METRICS
    from threadpoolctl import threadpool_limits

    # One thread per worker: set in the environment before numpy loads (the
    # forkserver), and here for libraries already loaded (a forked worker inherits
    # this process's BLAS pool size).
    threadpool_limits(1)
    torch = sys.modules.get("torch")
    if torch is not None:  # the metrics' modules use torch
        torch.set_num_threads(1)
    _WORKER_METRICS = metrics


def _by_columns(by: str | Sequence[str] | None) -> list[str]:
    if by is None:
        return []
    return [by] if isinstance(by, str) else list(by)


def presentation(metrics: Mapping[str, Metric]) -> list[dict[str, Any]]:
    """The columns ``metrics`` (name → metric) declare (:class:`MetricColumn`), as
    plain data for ``metrics.json``: ordered by rank, then as declared, one per key;
    ``higher_is_better`` filled in from the metric where the column leaves it open."""
    columns: list[dict[str, Any]] = []
    for metric in metrics.values():
        for column in metric.columns():
            if not isinstance(column, MetricColumn):
                raise WavelensError(f"{type(metric).__name__}.columns() gave {type(column).__name__}; "
                                    "expected wavelens.MetricColumn")
            if any(c["key"] == column.key for c in columns):
                continue
            higher = metric.higher_is_better if column.higher_is_better is None else column.higher_is_better
            columns.append({"key": column.key, "label": column.label, "digits": column.digits,
                            "rank": column.rank, "compare": column.compare, "higher_is_better": higher})
    order = sorted(range(len(columns)), key=lambda i: (columns[i]["rank"], i))
    return [columns[i] for i in order]


def column_for(metric: str, key: str, declared: Iterable[str]) -> str:
    """The column of the value ``key`` of the metric named ``metric``: the key itself
    when it is the metric's name, a declared column or already prefixed; otherwise
    prefixed with the metric's name (``frame_accuracy``), so that two metrics' keys
    never collide."""
    if key == metric or key in set(declared) or key.startswith(f"{metric}_"):
        return key
    return f"{metric}_{key}"


def metric_columns(rows: list[dict[str, Any]], by: str | Sequence[str] | None = None,
                   columns: Sequence[Mapping[str, Any]] = ()) -> list[str]:
    """The metric columns of the rows: the declared ``columns`` (a :func:`presentation`)
    in their order, then any other value, in the order met."""
    fixed = {"file", "item", "status", "reason", "seconds", "notes", *_by_columns(by)}
    found = list(dict.fromkeys(k for row in rows for k in row if k not in fixed))
    declared = [c["key"] for c in columns if c["key"] in found]
    return declared + [k for k in found if k not in declared]


def group_order(value: Any) -> tuple:
    """Sort key of a group value: numbers (also numeric text such as "-5") numerically,
    before other text."""
    number = None
    if not isinstance(value, bool):
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = None
    if number is None or math.isnan(number):
        return (1, 0.0, str(value))
    return (0, number, "")


def summarize(rows: list[dict[str, Any]], by: str | Sequence[str] | None = None,
              columns: Sequence[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
    """Mean of every metric over the scored files: one row, or one per value of the
    column(s) ``by`` (e.g. noise type and SNR), groups sorted with numbers (also
    numeric text such as "-5") numerically, before other text. Columns in the order
    of ``columns`` (a :func:`presentation`), then any other."""
    columns = metric_columns(rows, by, columns)
    keys = _by_columns(by)
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        key = ("all",) if not keys else tuple(row.get(k, "") for k in keys)
        groups.setdefault(key, []).append(row)

    summary = []
    for key in sorted(groups, key=lambda k: tuple(map(group_order, k))) if keys else groups:
        members = groups[key]
        scored = [r for r in members if r["status"] == "ok"]
        entry: dict[str, Any] = dict(zip(keys, key, strict=True)) if keys else {"set": "all"}
        entry.update(files=len(members), scored=len(scored))
        missing: dict[str, int] = {}
        for column in columns:
            values = [r[column] for r in scored if _finite(r.get(column))]
            entry[column] = float(np.mean(values)) if values else math.nan
            if len(values) < len(scored):
                missing[column] = len(scored) - len(values)
        if missing:  # a value that could not be computed is counted, never quietly left out
            entry["missing"] = missing
        summary.append(entry)
    return summary


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def with_missing(text: str, missing: int, counted: int) -> str:
    """A shown mean, marked ``(n of m)`` when it is the mean of the ``n`` files whose
    value could be computed, out of ``m`` scored."""
    return f"{text} ({counted - missing} of {counted})" if missing and text != "–" else text


MISSING_NOTE = ("A value marked (n of m) is the mean over the n files whose value could be computed; "
                "for the other m − n it is missing (not a number) in the per-file scores.")


def summary_markdown(summary: list[dict[str, Any]], by: str | Sequence[str] | None = None,
                     columns: Sequence[Mapping[str, Any]] = ()) -> str:
    """The summary as a Markdown table: one column per grouping column (or ``set``),
    one per metric value under its declared label and number format (``columns``, a
    :func:`presentation`), and how many files were scored."""
    if not summary:
        return ""
    keys = _by_columns(by) or ["set"]
    shown = [c for c in summary[0] if c not in (*keys, "files", "scored", "missing")]
    style = {c["key"]: c for c in columns}
    header = keys + [style[c]["label"] if c in style else c for c in shown] + ["files scored"]
    rows = [[_cell(entry[k]) for k in keys]
            + [with_missing(format_value(entry[c], style.get(c, {}).get("digits")),
                            entry.get("missing", {}).get(c, 0), entry["scored"]) for c in shown]
            + [f"{entry['scored']} of {entry['files']}"] for entry in summary]
    table = markdown_table(header, rows)
    return table + ("\n\n" + MISSING_NOTE if any(entry.get("missing") for entry in summary) else "")


def format_value(value: Any, digits: int | None) -> str:
    """A metric value as shown: ``digits`` decimals (None: four significant
    digits); "–" for a value that is missing or not a number."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
        return "–"
    return f"{value:.4g}" if digits is None else f"{value:.{digits}f}"


def _cell(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return f"{value:g}"
    return str(value)


# -- scoring a model's predictions item by item (the spec's metrics stage) --------------


def split_items(value: Any, n: int) -> list[Any]:
    """The ``n`` per-item pieces of a batch-level ``preds`` or ``target``: a tensor or
    array is split along its first axis, a list or tuple by position, a mapping key by
    key (each value split alike)."""
    if isinstance(value, Mapping):
        parts = {key: split_items(v, n) for key, v in value.items()}
        return [{key: parts[key][i] for key in parts} for i in range(n)]
    if isinstance(value, (*_arrays(), list, tuple)):
        if len(value) != n:
            raise WavelensError(f"predict returned {len(value)} entries for a batch of {n} items")
        return [value[i] for i in range(n)]
    raise WavelensError(
        f"cannot split predict's {type(value).__name__} into items: return tensors, arrays, lists "
        "or mappings of them, one entry per item"
    )


def batch_of_one(item: Any) -> Any:
    """One item as a batch of one (what ``Metric.update`` takes)."""
    if isinstance(item, Mapping):
        return {key: batch_of_one(v) for key, v in item.items()}
    if isinstance(item, _arrays()):
        return item[None]
    return [item]


def score_item(metrics: Mapping[str, Metric], preds: Any, target: Any) -> tuple[dict[str, Any], dict]:
    """Every metric on one item: the row's values (``status`` ``ok``, or ``error`` with
    the reason) and each metric's state, for merging into the overall values."""
    row: dict[str, Any] = {"status": "ok", "reason": ""}
    states: dict[str, dict[str, Any]] = {}
    for name, metric in metrics.items():
        try:
            metric.reset()
            metric.update(batch_of_one(preds), batch_of_one(target))
            declared = [c.key for c in metric.columns()]
            for key, value in _values(name, metric.compute()).items():
                column = column_for(name, key, declared)
                if column in row and row[column] == value:
                    continue  # the same quantity from two metrics (one metric's value inside another's)
                row[column if column not in row else f"{name}_{key}"] = value
            states[name] = metric.state()
        except Exception as error:  # any metric's failure is this item's error entry
            reason = f"{name}: {type(error).__name__}: {error}".strip()
            return {"status": "error", "reason": reason}, {}
    return row, states


def _score(metrics: Mapping[str, Metric], job: tuple[Any, Any] | list[tuple[Any, Any]]) -> Any:
    if isinstance(job, list):  # a group: one worker, in order
        return [score_item(metrics, *item) for item in job]
    return score_item(metrics, *job)


def _score_job(job: tuple[Any, Any] | list[tuple[Any, Any]]) -> Any:
    return _score(_WORKER_METRICS, job)


def item_scorer(metrics: Mapping[str, Metric], workers: int = 1) -> contextlib.AbstractContextManager:
    """A context giving ``score(jobs)`` → iterator of ``score_item`` results in order,
    computed in ``workers`` processes (1: in this process).

    A job is a ``(preds, target)`` item, or a list of them: a group, scored in one
    worker one after another, with a list of results. Give several predictions of one
    target (systems compared on the same references) as a group, and a metric that
    keeps what it computed of the last target reuses it.

    ``jobs`` may be any iterable, also a generator that reads its items as they are
    asked for: at most ``4 × workers`` jobs are in flight, so memory stays flat
    however many items there are."""

    @contextlib.contextmanager
    def scorer() -> Iterator[Callable[[Iterable[Any]], Iterable]]:
        if workers <= 1:
            from threadpoolctl import threadpool_limits

            # one thread here too, as in the workers: on these small arrays a BLAS pool
            # of several threads only adds its hand-offs
            with threadpool_limits(1):
                yield lambda jobs: (_score(metrics, job) for job in jobs)
            return
        with _pool(metrics, workers) as pool:
            yield lambda jobs: _in_flight(pool, jobs, 4 * workers)

    return scorer()


def _in_flight(pool: ProcessPoolExecutor, jobs: Iterable[Any], window: int) -> Iterator[Any]:
    """Results of ``jobs`` in order, with at most ``window`` submitted and not yet
    taken."""
    pending: collections.deque = collections.deque()
    for job in jobs:
        pending.append(pool.submit(_score_job, job))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _pool(metrics: Mapping[str, Metric], workers: int) -> ProcessPoolExecutor:
    if "torch" in sys.modules:
        # forkserver, not fork: a forked copy of a process that has run torch's OpenMP
        # pool can hang. Preloading the metrics' modules into the server makes each
        # worker a fork of an already-imported process instead of a fresh import of torch.
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(
            sorted({__name__, *(type(m).__module__ for m in metrics.values())})
        )
        _start_forkserver_single_threaded()
    else:
        # No torch here (scoring files with numpy metrics): a plain fork, which starts
        # each worker at once with everything this process imported. The workers are
        # started below, before any progress display starts a thread.
        context = multiprocessing.get_context("fork")
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                               initargs=(dict(metrics),))
    # Start the workers now, not at the first job: they come up while this process
    # reads and aligns the first items.
    for _ in range(workers):
        pool.submit(int)
    return pool


def _start_forkserver_single_threaded() -> None:
    """Start the forkserver (if it is not running yet) with the native libraries'
    thread pools at one thread, so that it and every worker forked from it load
    numpy, scipy and torch single-threaded; this process's own environment is left
    as it was."""
    from multiprocessing import forkserver

    saved = {name: os.environ.get(name) for name in SINGLE_THREAD_ENV}
    os.environ.update(SINGLE_THREAD_ENV)
    try:
        forkserver.ensure_running()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
