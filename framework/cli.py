"""The ``wavelens`` command line.

    wavelens plugins [--json] [--file PLUGIN.py]   list loaded plugins
    wavelens plugins show NAME                     one plugin's parameters
    wavelens validate SPEC [--set K=V]             check a spec without running it
    wavelens run SPEC [--set K=V] [--print]        run (or resume) an experiment
    wavelens data describe SPEC [--json]           prepare a spec's data; print its summary
    wavelens probe SPEC [--set K=V]                run a spec up to its probes
    wavelens generate RUN|CKPT --code C [--value V] [-n N]  outputs of a generative model
    wavelens report RUN_DIR                        rebuild a run's report

Global options: ``--disable NAME`` (repeatable; adds to $WAVELENS_DISABLE_PLUGINS).
Exit status: 0 success, 2 a problem the user can fix (spec, plugin, device), 130
interrupted (run again to resume), 1 an unexpected error (a bug: please report it).
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic.fields import FieldInfo
from rich.markup import escape
from rich.table import Table

from .console import console
from .errors import RunInterrupted, WavelensError
from .plugins import DISABLE_ENV, PluginRegistry, disabled_from_env

PLUGINS_JSON_FORMAT = "wavelens-plugins"
PLUGINS_JSON_VERSION = 1
# The enhancement network `wavelens enhance` uses when given no --checkpoint.
SHIPPED_ENHANCER = "csm_vanet_cpu"


def _disabled(args: argparse.Namespace) -> set[str]:
    return disabled_from_env() | set(args.disable or [])


def _registry(args: argparse.Namespace, files: list[Path] | None = None) -> PluginRegistry:
    return PluginRegistry.discover(files=files or [], disabled=_disabled(args))


def plugins_document(registry: PluginRegistry) -> dict[str, Any]:
    """The document ``wavelens plugins --json`` prints (see docs/specs.md)."""
    return {
        "format": PLUGINS_JSON_FORMAT,
        "format_version": PLUGINS_JSON_VERSION,
        "plugins": [c.describe() for c in registry.all()],
    }


def _cmd_plugins(args: argparse.Namespace) -> int:
    registry = _registry(args, [Path(f) for f in args.file or []])
    for name in sorted(registry.unused_disables()):
        console.print(f"[yellow]warning:[/] --disable {escape(name)} matched no plugin")
    if args.plugins_command == "show":
        return _show_plugin(registry, args.name)
    if args.json:
        sys.stdout.write(json.dumps(plugins_document(registry), indent=2, sort_keys=True) + "\n")
        return 0
    table = Table(title="wavelens plugins")
    for column in ("kind", "name", "description", "params", "source", "version"):
        table.add_column(column, overflow="fold")
    for item in registry.all():
        params = ", ".join(item.params.model_fields) or "–"
        table.add_row(*(escape(str(cell)) for cell in (
            item.kind, item.name, item.contribution.description, params, item.source,
            item.version)))
    console.print(table)
    console.print("`wavelens plugins show NAME` prints a plugin's parameters with defaults.")
    return 0


def _type_name(field: FieldInfo) -> str:
    annotation = field.annotation
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _show_plugin(registry: PluginRegistry, name: str) -> int:
    item = registry.find(name)
    if item is None:
        known = registry.names()
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise WavelensError(f"no plugin named {name!r}{hint} (see `wavelens plugins`)")
    console.print(f"[bold]{item.name}[/] ({item.kind}) — {escape(item.contribution.description)}")
    console.print(f"source: {escape(str(item.source))}   version: {escape(item.version)}")
    table = Table(title="params")
    for column in ("name", "type", "default", "description"):
        table.add_column(column, overflow="fold")
    for field_name, field in item.params.model_fields.items():
        default = "(required)" if field.is_required() else repr(field.get_default(call_default_factory=True))
        table.add_row(*(escape(cell) for cell in (
            field_name, _type_name(field), default, field.description or "")))
    console.print(table)
    return 0


def _load(args: argparse.Namespace, variant: str | None = None):
    from .spec import load_spec

    return load_spec(args.spec, overrides=args.set or [], disabled=_disabled(args),
                     profile=getattr(args, "profile", None), variant=variant)


def _variants(args: argparse.Namespace, resolved) -> list[str]:
    names = list(resolved.spec.variants)
    chosen = getattr(args, "variant", None)
    if chosen is not None:
        if chosen not in names:
            raise WavelensError(f"{args.spec} has no variant {chosen!r}; its variants: "
                                f"{', '.join(names) or 'none'}")
        return [chosen]
    return names


def _cmd_validate(args: argparse.Namespace) -> int:
    """The spec as given; without ``--profile``, each of its profiles too; and each
    variant under each. Every problem found is reported, naming its profile and
    variant."""
    from ._specfile import read_spec_file
    from .errors import SpecError, SpecIssue
    from .spec import load_spec

    resolved = _load(args)
    parts = ", ".join(f"{path}={c.plugin.name}" for path, c in resolved.components.items())
    variants = _variants(args, resolved)
    declared = read_spec_file(Path(args.spec)).data.get("profiles")  # the resolved spec drops them
    profiles = [args.profile] if args.profile else [None, *(declared if isinstance(declared, dict) else [])]
    issues: list[SpecIssue] = []
    for profile in profiles:
        for variant in [None, *variants]:
            if profile == args.profile and variant is None:
                continue  # checked above
            try:
                load_spec(args.spec, overrides=args.set or [], disabled=_disabled(args), profile=profile,
                          variant=variant)
            except SpecError as exc:
                chosen = (("profile", profile), ("variant", variant))
                context = " ".join(f"--{flag} {name}" for flag, name in chosen if name is not None)
                issues += [SpecIssue(i.path, f"{i.message} (with {context})", i.line) for i in exc.issues]
    if issues:
        raise SpecError(args.spec, issues)
    extra = f"; variants {', '.join(variants)} valid" if variants else ""
    if len(profiles) > 1:
        extra += f"; profiles {', '.join(p for p in profiles if p)} valid"
    for file in resolved.spec.plugins:  # the trust rule: only these run (docs/specs.md)
        console.print(f"imported the plugin file {escape(str(file))}, as the spec asks", soft_wrap=True,
                      highlight=False)
    console.print(f"[green]valid:[/] {escape(str(args.spec))} ({escape(parts or 'no components')}{extra})")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    resolved = _load(args)
    variants = _variants(args, resolved)
    if args.print:
        shown = [_load(args, variant=name) for name in variants] or [resolved]
        for index, spec in enumerate(shown):
            if index:
                sys.stdout.write("---\n")
            sys.stdout.write(yaml.safe_dump(spec.to_dict(), sort_keys=False, allow_unicode=True))
        return 0
    from .report import write_comparison
    from .run import Run

    directories: dict[str, Path] = {}
    for name in variants or [None]:
        spec = resolved if name is None else _load(args, variant=name)
        if name is not None:
            console.rule(f"variant {escape(name)}")
        run = Run(spec, runs_dir=args.runs_dir, fresh=args.fresh)
        directory = run.execute()
        if run.rank != 0:  # another torchrun process: rank 0 reports
            continue
        table = Table(title=escape(spec.spec.name + (f" ({name})" if name else "")))
        table.add_column("stage")
        table.add_column("outcome")
        for stage, outcome in run.outcomes.items():
            table.add_row(escape(stage), escape(outcome))
        console.print(table)
        console.print(f"run directory: {escape(str(directory))}", soft_wrap=True, highlight=False)
        for report in ("report.html", "report.md"):
            if (directory / report).is_file():
                console.print(f"report: {escape(str(directory / report))}", soft_wrap=True,
                              highlight=False)
                break
        directories[name or ""] = directory
    if len(directories) > 1:
        digest = hashlib.sha256("".join(str(d) for d in directories.values()).encode()).hexdigest()[:8]
        folder = next(iter(directories.values())).parent / f"variants-{digest}"
        written = write_comparison(folder, directories, resolved.spec.name)
        console.print(f"variants compared: {escape(str(written[-1]))}", soft_wrap=True, highlight=False)
    return 0


def _cmd_data_describe(args: argparse.Namespace) -> int:
    from .io import read_json
    from .report import summary_tables
    from .run import STAGE_RECORD, Run

    resolved = _load(args)
    if resolved.component("data") is None:
        raise WavelensError(f"{args.spec} declares no data")
    run = Run(resolved, runs_dir=args.runs_dir)
    directory = run.execute(until="data")
    if run.rank != 0:  # another torchrun process: rank 0 reports
        return 0
    summary = read_json(run.stage_dir("data") / STAGE_RECORD).get("summary") or {}
    if args.json:
        sys.stdout.write(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        return 0
    plugin = resolved.component("data").plugin.name
    console.print(f"[bold]{escape(plugin)}[/] ({escape(run.outcomes.get('data', ''))})")
    for title, header, rows in summary_tables(summary):
        table = Table(title=escape(title))
        for column in header:
            table.add_column(escape(column), overflow="fold")
        for row in rows:
            table.add_row(*(escape(cell) for cell in row))
        console.print(table)
    for note in summary.get("notes") or []:
        console.print(f"- {escape(note)}", soft_wrap=True, highlight=False)
    console.print(f"data stage: {escape(str(directory / 'stages' / 'data'))}",
                  soft_wrap=True, highlight=False)
    return 0


def _cmd_probe(args: argparse.Namespace) -> int:
    from .run import Run

    resolved = _load(args)
    probes = [path for path in resolved.components if path.startswith("probe.")]
    if not probes:
        raise WavelensError(f"{args.spec} declares no probe")
    run = Run(resolved, runs_dir=args.runs_dir)
    directory = run.execute(until=probes[-1])
    if run.rank != 0:
        return 0
    for path in probes:
        console.print(f"{escape(path)} ({escape(run.outcomes.get(path, ''))}): "
                      f"{escape(str(directory / 'stages' / path))}", soft_wrap=True, highlight=False)
    return 0


def _find_run_dir(target: Path) -> Path:
    """The run directory holding ``target``, or the shipped-weights folder it is
    (``spec.yaml``, ``model.pt`` and ``manifest.json``: see docs/reproducing.md)."""
    if _is_weights_folder(target):
        return target
    for folder in [target, *target.parents]:
        if (folder / "run.json").is_file() and (folder / "spec.yaml").is_file():
            return folder
    raise WavelensError(
        f"{target} is not inside a wavelens run directory (no run.json and spec.yaml above it)"
    )


def _is_weights_folder(folder: Path) -> bool:
    return all((folder / name).is_file() for name in ("spec.yaml", "model.pt", "manifest.json"))


def shipped_weights(name: str) -> Path:
    """The folder of weights the project ships under ``weights/`` (a source checkout)."""
    folder = Path(__file__).resolve().parent.parent / "weights" / name
    if not _is_weights_folder(folder):
        raise WavelensError(f"the shipped weights {name!r} are not here ({folder}: this is not a "
                            "source checkout of wavelens); give --checkpoint")
    return folder


def _load_run_model(target: Path, disabled: set[str]) -> tuple[Any, Any, Path, Path]:
    """``(model, network, weights, run_dir)`` for a run directory, a folder inside
    one, or a checkpoint file of its model stage."""
    import torch

    from .spec import load_spec

    target = Path(target).resolve()
    if not target.exists():
        raise WavelensError(f"{target} does not exist")
    run_dir = _find_run_dir(target)
    resolved = load_spec(run_dir / "spec.yaml", disabled=disabled)
    component = resolved.component("model")
    if component is None:
        raise WavelensError(f"the run {run_dir} has no model")
    model = component.build()
    network = model.network()
    if target.is_file():  # a training checkpoint (or a saved state dict)
        if target.suffix != ".pt":
            raise WavelensError(f"{target} is not a checkpoint (.pt); give a run directory, its "
                                "model stage folder or a checkpoint file")
        try:
            state = torch.load(target, map_location="cpu", weights_only=True)
            network.load_state_dict(state.get("network", state))
        except Exception as exc:
            raise WavelensError(f"cannot load {target} into the run's {component.plugin.name} "
                                f"model: {type(exc).__name__}: {exc}") from None
        source = target
    else:
        source = (run_dir / "model.pt" if _is_weights_folder(run_dir)
                  else run_dir / "stages" / "model" / "model.pt")
        if not source.is_file():
            raise WavelensError(f"{run_dir} has no finished model stage ({source} is missing); "
                                "give a checkpoint file instead")
        model.load_weights(network, source)
    return model, network, source, run_dir


def _cmd_generate(args: argparse.Namespace) -> int:
    from .audio import write_audio

    model, network, source, run_dir = _load_run_model(args.target, _disabled(args))
    outputs, rate = model.generate(network, args.code, args.value, args.n, args.seed)
    out = args.out or run_dir / "generated" / f"code-{args.code}_value-{args.value:g}_seed-{args.seed}"
    peak = float(outputs.abs().max()) if outputs.numel() else 0.0
    for index, audio in enumerate(outputs):
        # Values beyond ±1 are clipped when written, as the papers do.
        write_audio(Path(out) / f"{index:03d}.wav", audio.clamp(-1, 1).numpy(), rate)
    console.print(f"wrote {len(outputs)} outputs of code {escape(args.code)} at value {args.value:g} "
                  f"(weights {escape(str(source))}; peak {peak:.3f}) to {escape(str(out))}",
                  soft_wrap=True, highlight=False)
    return 0


def _enhance_inputs(inputs: list[Path]) -> list[tuple[Path, Path]]:
    """(file, path relative to the output folder) for every input file and every
    audio file under the input folders."""
    from .audio import AUDIO_SUFFIXES

    found: list[tuple[Path, Path]] = []
    for item in inputs:
        if item.is_dir():
            files = sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
            if not files:
                raise WavelensError(f"{item} holds no audio files ({', '.join(sorted(AUDIO_SUFFIXES))})")
            found += [(f, Path(item.name) / f.relative_to(item)) for f in files]
        elif item.is_file():
            found.append((item, Path(item.name)))
        else:
            raise WavelensError(f"{item} does not exist")
    return found


def speech_segments(probability, frame_seconds: float, threshold: float = 0.5,
                    min_gap: float = 0.1) -> list[tuple[float, float]]:
    """(start, end) seconds of runs of frames at or above ``threshold``; runs apart by
    less than ``min_gap`` are joined. Frame ``t`` covers ±half a hop around
    ``t * frame_seconds``."""
    import numpy as np

    speech = np.asarray(probability) >= threshold
    segments: list[list[float]] = []
    edges = np.flatnonzero(np.diff(np.concatenate([[0], speech.astype(int), [0]])))
    for start, stop in zip(edges[::2], edges[1::2], strict=True):
        begin = max(0.0, (start - 0.5) * frame_seconds)
        end = (stop - 0.5) * frame_seconds
        if segments and begin - segments[-1][1] < min_gap:
            segments[-1][1] = end
        else:
            segments.append([begin, end])
    return [(round(a, 4), round(b, 4)) for a, b in segments]


def _cmd_enhance(args: argparse.Namespace) -> int:
    import numpy as np

    from .audio import AudioError, audio_channels, read_audio, write_audio
    from .console import progress
    from .device import resolve_placement
    from .io import write_csv

    files = _enhance_inputs([Path(p) for p in args.inputs])
    checkpoint = args.checkpoint if args.checkpoint is not None else shipped_weights(SHIPPED_ENHANCER)
    model, network, source, _ = _load_run_model(checkpoint, _disabled(args))
    placement = resolve_placement(args.device, args.precision)
    network = network.to(placement.device).eval()
    out = Path(args.output)
    rows: list[dict[str, str]] = []  # one per input: what happened to it, and why
    for path, relative in progress(files, total=len(files), description="enhancing"):
        notes: list[str] = []
        try:
            audio, rate = read_audio(path, channels="mix")
        except AudioError as exc:
            rows.append({"file": str(path), "outcome": "refused", "reason": exc.reason, "output": ""})
            continue
        channels = audio_channels(path)
        if channels > 1:
            notes.append(f"{channels} channels mixed to mono")
        if not np.any(audio):
            notes.append("silent input, written unchanged")
            enhanced, probability, frame_seconds = audio, None, None
        else:
            try:
                result = model.enhance(network, audio, rate, placement)
            except Exception as exc:  # noqa: BLE001 - one file's failure must not stop the others
                reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
                rows.append({"file": str(path), "outcome": "failed", "reason": reason, "output": ""})
                continue
            enhanced, probability = result.audio, result.speech_probability
            frame_seconds = result.frame_seconds
        if not np.all(np.isfinite(enhanced)):
            rows.append({"file": str(path), "outcome": "failed", "reason": "the model's output is not finite",
                         "output": ""})
            continue
        peak = float(np.max(np.abs(enhanced))) if len(enhanced) else 0.0
        if peak > 1.0:
            notes.append(f"output peaked at {peak:.2f}; clipped to ±1")
        target = out / relative.with_suffix(".wav")
        write_audio(target, np.clip(enhanced, -1, 1), rate)
        if probability is not None and args.vad in ("csv", "both"):
            write_csv(target.with_suffix(".vad.csv"),
                      [{"frame": i, "time_s": round(i * frame_seconds, 4), "speech_probability": float(p)}
                       for i, p in enumerate(probability)])
        if probability is not None and args.vad in ("segments", "both"):
            write_csv(target.with_suffix(".segments.csv"),
                      [{"start_s": a, "end_s": b} for a, b in speech_segments(probability, frame_seconds,
                                                                             args.threshold)],
                      ["start_s", "end_s"])
        rows.append({"file": str(path), "outcome": "enhanced", "reason": "; ".join(notes),
                     "output": str(target)})
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "enhance.csv", rows, ["file", "outcome", "reason", "output"])
    for row in rows:
        if row["outcome"] != "enhanced":
            console.print(f"[red]{row['outcome']}:[/] {escape(row['file'])}: {escape(row['reason'])}",
                          soft_wrap=True, highlight=False)
        elif row["reason"]:
            console.print(f"[yellow]note:[/] {escape(row['file'])}: {escape(row['reason'])}", soft_wrap=True,
                          highlight=False)
    done = sum(row["outcome"] == "enhanced" for row in rows)
    console.print(f"enhanced {done} of {len(files)} file(s) with {escape(str(source))} into "
                  f"{escape(str(out))}; every file's outcome in {escape(str(out / 'enhance.csv'))}",
                  soft_wrap=True, highlight=False)
    return 0 if done == len(files) else 1


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    for path in write_report(Path(args.run_dir)):
        console.print(f"wrote {escape(str(path))}")
    return 0


def _cmd_stats_fit(args: argparse.Namespace) -> int:
    from .components import StageContext
    from .console import get_logger, progress
    from .device import resolve_placement

    table = Path(args.table)
    if not table.is_file():
        raise WavelensError(f"{table} is not a file")
    resolved = _load(args)
    statistics = resolved.components_of("statistics")
    if not statistics:
        raise WavelensError(f"{args.spec} declares no statistics")
    out = args.out or table.with_name(f"{table.stem}-stats")
    log = get_logger()
    for statistic in statistics:
        workdir = out / statistic.path
        workdir.mkdir(parents=True, exist_ok=True)
        ctx = StageContext(stage=statistic.path, workdir=workdir, placement=resolve_placement("cpu"),
                           seed=resolved.spec.seed, log=log, spec_dir=resolved.spec_dir, _progress=progress)
        statistic.build().fit_table(table, ctx)
        console.print(f"{escape(statistic.path)} ({escape(statistic.plugin.name)}): {escape(str(workdir))}",
                      soft_wrap=True, highlight=False)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import csv

    from .console import progress
    from .evaluation import evaluate_folders, metric_columns, summarize, summary_markdown
    from .io import write_json, write_text

    registry = _registry(args)
    metrics = {}
    for name in [n.strip() for n in args.metrics.split(",") if n.strip()]:
        contribution = registry.get("metric", name)
        params = {"sample_rate": args.rate} if "sample_rate" in contribution.params.model_fields else {}
        if name == "composite" and args.convention:
            params["convention"] = args.convention
        metrics[name] = contribution.contribution.build(contribution.params(**params))
    rows, notes = evaluate_folders(args.reference, args.estimate, metrics, rate=args.rate,
                                   workers=args.workers, progress=progress)
    if args.by:
        groups = _read_groups(args.meta, args.by) if args.meta else {}
        for row in rows:
            row[args.by] = groups.get(row["file"], groups.get(Path(row["file"]).stem, ""))
    out = Path(args.out or f"{Path(args.estimate)}-scores")
    out.mkdir(parents=True, exist_ok=True)
    group = [args.by] if args.by else []
    fields = ["file", "status", "reason", *group, "seconds", *metric_columns(rows, args.by), "notes"]
    with (out / "scores.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    summary = summarize(rows, by=args.by)
    table = summary_markdown(summary, by=args.by)
    errors = [r for r in rows if r["status"] != "ok"]
    write_json(out / "summary.json", {"summary": summary, "notes": notes,
                                      "errors": [{"file": r["file"], "reason": r["reason"]} for r in errors]},
               sort_keys=False)
    scored = len(rows) - len(errors)
    text = [f"Scored {scored} of {len(rows)} paired files ({', '.join(metrics)}).", "", table]
    text += [f"- {note}" for note in notes] + [f"- error: {r['file']}: {r['reason']}" for r in errors]
    write_text(out / "summary.md", "\n".join(text) + "\n")
    console.print("\n".join(text), soft_wrap=True, highlight=False, markup=False)
    console.print(f"per-file scores: {escape(str(out / 'scores.csv'))}", soft_wrap=True, highlight=False)
    return 1 if errors else 0  # every file is in scores.csv; the status says whether some were refused


def _read_groups(path: Path, column: str) -> dict[str, str]:
    """file name → the ``column`` value, from a CSV/TSV with a ``file`` column."""
    import csv

    text = Path(path).read_text()
    dialect = "excel-tab" if "\t" in text.splitlines()[0] else "excel"
    rows = list(csv.DictReader(text.splitlines(), dialect=dialect))
    if not rows or "file" not in rows[0] or column not in rows[0]:
        raise WavelensError(f"{path} needs the columns 'file' and {column!r}; it has "
                            f"{', '.join(rows[0]) if rows else 'no rows'}")
    return {row["file"]: row[column] for row in rows}


MAX_GENERATE = 10_000  # outputs per `generate` call: 10,000 of 16,384 samples are 655 MB


def _count(low: int, high: int):
    """An argparse type: a whole number from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {low:,} to {high:,}, not {value:,}")
        return value

    return parse


def _finite_float(text: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, not {text}")
    return value


def _probability(text: str) -> float:
    value = _finite_float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a probability from 0 to 1, not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wavelens", description="Interpret and enhance speech CNNs with plugins."
    )
    parser.add_argument(
        "--disable", action="append", metavar="NAME",
        help=f"disable a plugin or contribution by name (also ${DISABLE_ENV}=a,b)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    plugins = commands.add_parser("plugins", help="list loaded plugins")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    plugins.add_argument("--file", action="append", metavar="PLUGIN.py",
                         help="also load a local plugin file")
    plugins.set_defaults(func=_cmd_plugins, plugins_command=None)
    plugin_commands = plugins.add_subparsers(dest="plugins_command")
    show = plugin_commands.add_parser("show", help="show one plugin's parameters")
    show.add_argument("name")

    def add_runs_dir(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--runs-dir", type=Path, default=None,
                         help="where run directories go (default $WAVELENS_RUNS_DIR or ./runs)")

    def add_spec_arguments(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("spec", type=Path, help="the experiment spec (YAML)")
        sub.add_argument("--set", action="append", metavar="KEY.PATH=VALUE",
                         help="override a spec value, e.g. --set train.steps=200")
        sub.add_argument("--profile", default=None,
                         help="apply one of the spec's profiles (e.g. quick, full) before --set")

    validate = commands.add_parser("validate", help="check a spec without running it")
    add_spec_arguments(validate)
    validate.add_argument("--variant", default=None, help="validate only this one of the spec's variants")
    validate.set_defaults(func=_cmd_validate)

    run = commands.add_parser("run", help="run or resume an experiment")
    add_spec_arguments(run)
    run.add_argument("--print", action="store_true", help="print the resolved spec and exit")
    run.add_argument("--variant", default=None, help="run only this one of the spec's variants")
    run.add_argument("--fresh", action="store_true",
                     help="start a new run directory and reuse no earlier stage")
    add_runs_dir(run)
    run.set_defaults(func=_cmd_run)

    data = commands.add_parser("data", help="prepare and inspect a spec's data")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    describe = data_commands.add_parser(
        "describe", help="prepare the spec's data (or reuse it) and print its summary")
    add_spec_arguments(describe)
    describe.add_argument("--json", action="store_true", help="machine-readable output")
    add_runs_dir(describe)
    describe.set_defaults(func=_cmd_data_describe)

    probe = commands.add_parser(
        "probe", help="run a spec's data, model and probe stages (not statistics or metrics)")
    add_spec_arguments(probe)
    add_runs_dir(probe)
    probe.set_defaults(func=_cmd_probe)

    generate = commands.add_parser(
        "generate", help="generate outputs from a trained generative model (ciwGAN, fiwGAN)")
    generate.add_argument("target", type=Path,
                          help="a run directory, its model stage, or a checkpoint file")
    generate.add_argument("--code", required=True,
                          help="the code to set: an index, or a bit string for binary codes")
    generate.add_argument("--value", type=_finite_float, default=1.0,
                          help="value of the set code (outside the training range, e.g. 2)")
    generate.add_argument("-n", type=_count(1, MAX_GENERATE), default=100,
                          help=f"number of outputs (default 100, at most {MAX_GENERATE:,} per call)")
    generate.add_argument("--seed", type=int, default=0,
                          help="seed of the latent noise; the same seed gives the same noise for every code")
    generate.add_argument("--out", type=Path, default=None,
                          help="folder for the WAV files (default RUN_DIR/generated/...)")
    generate.set_defaults(func=_cmd_generate)

    stats = commands.add_parser("stats", help="fit statistics to a table file")
    stats_commands = stats.add_subparsers(dest="stats_command", required=True)
    fit = stats_commands.add_parser(
        "fit", help="fit a spec's statistics (e.g. gamm) to a tidy table (CSV or parquet)")
    fit.add_argument("table", type=Path, help="the table, e.g. a probe's feature_maps.parquet")
    fit.add_argument("--spec", required=True, type=Path, help="a spec whose 'statistics' to fit")
    fit.add_argument("--set", action="append", metavar="PATH=VALUE", help="override a spec value")
    fit.add_argument("--out", type=Path, default=None, help="output folder (default TABLE-stats beside it)")
    fit.set_defaults(func=_cmd_stats_fit)

    evaluate = commands.add_parser(
        "evaluate", help="score estimate audio against reference audio, file by file (PESQ, STOI, ...)")
    evaluate.add_argument("--reference", required=True, type=Path, help="folder of reference (clean) files")
    evaluate.add_argument("--estimate", required=True, type=Path, help="folder of estimates, same file names")
    evaluate.add_argument("--metrics", default="composite,stoi,si_sdr",
                          help="metric plugins, comma-separated (default composite,stoi,si_sdr)")
    evaluate.add_argument("--convention", choices=["voicebank", "loizou"], default=None,
                          help="composite measures' convention (default voicebank)")
    evaluate.add_argument("--rate", type=_count(1000, 384000), default=16000,
                          help="rate to score at (default 16000)")
    evaluate.add_argument("--workers", type=_count(1, 1024), default=None,
                          help="worker processes (default: CPU count)")
    evaluate.add_argument("--by", default=None, help="group the summary by this column of --meta (Table II)")
    evaluate.add_argument("--meta", type=Path, default=None, help="CSV/TSV with a 'file' column and --by")
    evaluate.add_argument("--out", type=Path, default=None, help="output folder (default ESTIMATE-scores)")
    evaluate.set_defaults(func=_cmd_evaluate)

    enhance = commands.add_parser(
        "enhance", help="enhance audio files or folders with a trained speech-enhancement model")
    enhance.add_argument("inputs", nargs="+", help="audio files or folders (searched recursively)")
    enhance.add_argument("-o", "--output", required=True, type=Path, help="output folder")
    enhance.add_argument("--checkpoint", type=Path, default=None,
                         help="a run directory, its model stage folder, a training checkpoint (.pt) "
                         f"or a folder of shipped weights (default: weights/{SHIPPED_ENHANCER})")
    enhance.add_argument("--vad", choices=["none", "csv", "segments", "both"], default="none",
                         help="also write the frame-level speech probability (NAME.vad.csv) and/or "
                         "speech segments (NAME.segments.csv)")
    enhance.add_argument("--threshold", type=_probability, default=0.5,
                         help="speech probability for segments")
    enhance.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    enhance.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                         help="autocast precision on CUDA (default fp32)")
    enhance.set_defaults(func=_cmd_enhance)

    report = commands.add_parser("report", help="rebuild a run's report from its artefacts")
    report.add_argument("run_dir", type=Path)
    report.set_defaults(func=_cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except RunInterrupted as exc:
        console.print(
            f"[yellow]interrupted:[/] {escape(str(exc))}; run the same command again to resume",
            soft_wrap=True,
        )
        return 130
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        return 130
    except WavelensError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    except OSError as exc:  # the file system refused: a read-only folder, a full disk, a file in the way
        console.print(f"[red]error:[/] {escape(_os_problem(exc))}", highlight=False, soft_wrap=True)
        return 1


def _os_problem(exc: OSError) -> str:
    """One line for a file-system error: what failed, on which path, and the hint."""
    import errno

    what = exc.strerror or type(exc).__name__
    where = " -> ".join(str(name) for name in (exc.filename, exc.filename2) if name)
    hints = {
        errno.ENOSPC: "the disk is full: free space and run the same command again (a run resumes)",
        errno.EDQUOT: "the disk quota is exceeded: free space and run the same command again",
        errno.EACCES: "choose a folder you may write to (--runs-dir, --out, -o)",
        errno.EROFS: "the file system is read-only: choose another folder (--runs-dir, --out, -o)",
        errno.ENOTDIR: "a file stands where a folder is needed: choose another path",
        errno.EEXIST: "a file stands where a folder is needed: choose another path",
    }
    hint = hints.get(exc.errno or 0, "")
    return f"{what}: {where}" + (f" ({hint})" if hint else "")


if __name__ == "__main__":
    sys.exit(main())
