"""The ``wavelens`` command line.

    wavelens plugins [--json] [--file PLUGIN.py]   list loaded plugins
    wavelens plugins show NAME                     one plugin's parameters
    wavelens validate SPEC [--set K=V]             check a spec without running it
    wavelens run SPEC [--set K=V] [--print]        run (or resume) an experiment
    wavelens data describe SPEC [--json]           prepare a spec's data; print its summary
    wavelens probe SPEC [--set K=V]                run a spec up to its probes
    wavelens stats fit TABLE --spec SPEC           fit a spec's statistics to a table
    wavelens report RUN_DIR                        rebuild a run's report

and the commands plugins add (``wavelens_commands``; the built-ins add ``generate``,
``enhance`` and ``evaluate``): ``wavelens --help`` lists them.

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
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from pydantic.fields import FieldInfo
from rich.markup import escape
from rich.table import Table

from ._commands import CORE_COMMANDS, Command, CommandContext, int_between
from ._console import console
from ._errors import RunInterrupted, WavelensError
from ._registry import DISABLE_ENV, PluginRegistry, disabled_from_env

PLUGINS_JSON_FORMAT = "wavelens-plugins"
PLUGINS_JSON_VERSION = 1


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
        "commands": [{"name": c.name, "help": c.command.help, "plugin": c.plugin,
                      "source": {"type": c.source.type, "location": c.source.location}}
                     for c in registry.commands()],
        "extension_points": [
            {"name": e.name, "help": e.point.help, "group": e.point.group, "plugin": e.plugin,
             "entries": [{"name": entry.name, "target": entry.target, "source": entry.source}
                         for entry in e.point.entries()]}
            for e in registry.extension_points()],
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
    commands = Table(title="commands the plugins add")
    for column in ("command", "help", "source"):
        commands.add_column(column, overflow="fold")
    for command in registry.commands():
        cells = (command.name, command.command.help, command.source)
        commands.add_row(*(escape(str(cell)) for cell in cells))
    console.print(commands)
    points = Table(title="what other packages can add to the plugins")
    for column in ("extension point", "entries", "register under", "help"):
        points.add_column(column, overflow="fold")
    for loaded in registry.extension_points():
        entries = ", ".join(entry.name if entry.source == "builtin" else f"{entry.name} ({entry.source})"
                            for entry in loaded.point.entries())
        cells = (loaded.name, entries or "–", f"entry points {loaded.point.group}", loaded.point.help)
        points.add_row(*(escape(str(cell)) for cell in cells))
    console.print(points)
    console.print("`wavelens plugins show NAME` prints a plugin's parameters with defaults; "
                  "`wavelens COMMAND --help` a command's options.")
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
    from ._spec import load_spec

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
    from ._errors import SpecError, SpecIssue
    from ._spec import load_spec, network_issues
    from ._specfile import read_spec_file

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
    checked, skipped = network_issues(resolved, read_spec_file(Path(args.spec)).line_of)
    issues += checked
    if issues:
        raise SpecError(args.spec, issues)
    if skipped:
        console.print(f"[yellow]note:[/] {escape(skipped)}", soft_wrap=True, highlight=False)
    extra = f"; variants {', '.join(variants)} valid" if variants else ""
    if len(profiles) > 1:
        extra += f"; profiles {', '.join(p for p in profiles if p)} valid"
    for file in resolved.spec.plugins:  # the trust rule: only these run (docs/specs.md)
        console.print(f"imported the plugin file {escape(str(file))}, as the spec asks", soft_wrap=True,
                      highlight=False)
    console.print(f"[green]valid:[/] {escape(str(args.spec))} ({escape(parts or 'no components')}{extra})")
    return 0


def _split_values(text: str) -> list[str]:
    """``a,b,[1,2]`` → ``["a", "b", "[1,2]"]``: commas outside brackets and quotes."""
    values, depth, quote, current = [], 0, "", ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            values.append(current.strip())
            current = ""
            continue
        current += char
    values.append(current.strip())
    return values


def sweep_cells(sweeps: list[str] | None) -> list[tuple[str, list[str]]]:
    """The grid of ``--sweep KEY.PATH=V1,V2`` options: ``(name, overrides)`` per cell,
    in the order of the options (the last varies fastest); [] without any."""
    import itertools

    axes: list[tuple[str, list[str]]] = []
    for sweep in sweeps or []:
        key, sep, raw = sweep.partition("=")
        values = _split_values(raw) if sep else []
        if not key.strip() or not values or "" in values:
            raise WavelensError(f"--sweep {sweep}: expected KEY.PATH=V1,V2,... (values separated by commas, "
                                "e.g. --sweep model.params.lr=1e-4,5e-4)")
        if any(key.strip() == other for other, _ in axes):
            raise WavelensError(f"--sweep names {key.strip()} twice: give all its values in one option")
        axes.append((key.strip(), values))
    if not axes:
        return []
    short = [key.rsplit(".", 1)[-1] for key, _ in axes]
    labels = short if len(set(short)) == len(short) else [key for key, _ in axes]
    return [(",".join(f"{label}={value}" for label, value in zip(labels, cell, strict=True)),
             [f"{key}={value}" for (key, _), value in zip(axes, cell, strict=True)])
            for cell in itertools.product(*(values for _, values in axes))]


def _runs(args: argparse.Namespace, resolved) -> list[tuple[str | None, str | None, list[str], Any]]:
    """``(label, variant, sweep overrides, spec)`` of every run the command line asks
    for: the spec, each of its variants, and each cell of a sweep (under each
    variant). Every one is validated before any runs: a sweep with one invalid cell
    runs nothing."""
    from ._errors import SpecError, SpecIssue
    from ._spec import load_spec

    variants = _variants(args, resolved)
    cells = sweep_cells(getattr(args, "sweep", None))
    if not cells:
        return ([(name, name, [], _load(args, variant=name)) for name in variants]
                or [(None, None, [], resolved)])
    runs, issues = [], []
    for variant in variants or [None]:
        for cell, overrides in cells:
            label = cell if variant is None else f"{variant}/{cell}"
            try:
                spec = load_spec(args.spec, overrides=[*(args.set or []), *overrides],
                                 disabled=_disabled(args), profile=getattr(args, "profile", None),
                                 variant=variant)
                runs.append((label, variant, overrides, spec))
            except SpecError as exc:
                issues += [SpecIssue(i.path, f"{i.message} (sweep cell {label})", i.line) for i in exc.issues]
    if issues:
        raise SpecError(args.spec, issues)
    return runs


def _cmd_run(args: argparse.Namespace) -> int:
    resolved = _load(args)
    runs = _runs(args, resolved)
    if args.print:
        for index, (*_, spec) in enumerate(runs):
            if index:
                sys.stdout.write("---\n")
            sys.stdout.write(yaml.safe_dump(spec.to_dict(), sort_keys=False, allow_unicode=True))
        return 0
    from ._report import write_comparison
    from ._run import Run

    directories: dict[str, Path] = {}
    failed: dict[str, str] = {}
    if args.launcher_option and args.launcher != "submitit":
        raise WavelensError("--launcher-option is for --launcher submitit")
    if (args.launcher == "local" and len(runs) > 1) or args.launcher == "submitit":
        if args.fresh:
            raise WavelensError(f"--fresh cannot be combined with --launcher {args.launcher} (each job "
                                "resumes the run the launcher prepared): give --runs-dir a new folder "
                                "instead")
        directories, failed = _launch(args, runs, resolved)
        runs = []
    for name, _, _, spec in runs:
        if name is not None:
            console.rule(f"{'sweep cell' if getattr(args, 'sweep', None) else 'variant'} {escape(name)}")
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
    if args.record is not None:  # where a job's run went, for the launcher that started it
        from ._io import write_json

        found = {k: str(v) for k, v in directories.items()}
        write_json(args.record, {"directory": next(iter(found.values()))} if len(found) == 1 else
                   {"directories": found})
    if len(directories) + len(failed) > 1 and directories:
        digest = hashlib.sha256("".join(str(d) for d in directories.values()).encode()).hexdigest()[:8]
        folder = next(iter(directories.values())).parent / f"variants-{digest}"
        written = write_comparison(folder, directories, resolved.spec.name, failed=failed)
        console.print(f"variants compared: {escape(str(written[-1]))}", soft_wrap=True, highlight=False)
    for label, reason in failed.items():
        console.print(f"[red]failed:[/] {escape(label)}: {escape(reason)}", soft_wrap=True, highlight=False)
    return 1 if failed else 0


def launcher_options(args: argparse.Namespace, resolved) -> Any:
    """The spec's ``launcher`` block with ``--launcher-option KEY=VALUE`` over it,
    validated; an error names the option and what was expected."""
    from pydantic import ValidationError

    from ._spec import LauncherSpec

    settings = resolved.spec.launcher.model_dump() if resolved.spec.launcher else {}
    for option in args.launcher_option or []:
        key, sep, value = option.partition("=")
        if not sep or not key:
            raise WavelensError(f"--launcher-option {option!r}: expected KEY=VALUE")
        settings[key.strip()] = yaml.safe_load(value) if value.strip() else None
    try:
        return LauncherSpec(**settings)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise WavelensError(f"launcher settings (the spec's launcher block and --launcher-option): "
                            f"{problems}") from None


def _launch(args: argparse.Namespace, runs: list, resolved) -> tuple[dict[str, Path], dict[str, str]]:
    """Each run as its own ``wavelens run`` process: the shared stages first, here,
    then the jobs: ``--jobs`` at a time on this machine (``--launcher local``), or
    submitted through submitit (``--launcher submitit``)."""
    import torch

    from ._evaluation import SINGLE_THREAD_ENV, available_cores
    from ._launch import Job, run_jobs
    from ._run import Run, default_runs_dir

    options = launcher_options(args, resolved) if args.launcher == "submitit" else None

    for _, _, _, spec in runs:  # the datasets, once each (identical ones are shared by the cache)
        if spec.component("dataset") is not None:
            Run(spec, runs_dir=args.runs_dir, fresh=False).execute(until="dataset")
    common = [*(["--profile", args.profile] if args.profile else []),
              *(part for value in args.set or [] for part in ("--set", value)),
              "--runs-dir", str(Path(args.runs_dir or default_runs_dir()).resolve())]
    jobs = [Job(label or "", [*common, *(["--variant", variant] if variant else []),
                              *(part for value in overrides for part in ("--set", value))])
            for label, variant, overrides, _ in runs]
    before = [part for name in args.disable or [] for part in ("--disable", name)]
    name = runs[0][3].spec.name
    digest = hashlib.sha256("".join(job.label for job in jobs).encode()).hexdigest()[:8]
    log_dir = Path(args.runs_dir or default_runs_dir()).resolve() / name / f"jobs-{digest}"
    if options is not None:
        from ._submitit import executor_kind, submit_jobs

        # jobs on this machine (the local executor) share its cores; a cluster gives each its own
        threads = {} if executor_kind(options) == "slurm" else {
            variable: str(max(1, available_cores() // len(jobs))) for variable in SINGLE_THREAD_ENV}
        return submit_jobs(Path(args.spec).resolve(), jobs, before, options, log_dir, threads)
    on_cpu = all(spec.spec.device == "cpu" for *_, spec in runs)
    gpus = 0 if on_cpu else torch.cuda.device_count()
    concurrency = args.jobs or (gpus or available_cores())
    console.print(f"{len(jobs)} jobs, {concurrency} at a time, "
                  f"{'one GPU each' if gpus else 'each on its share of the cores'}", highlight=False)
    return run_jobs(Path(args.spec), jobs, before, concurrency, gpus, log_dir)


def _cmd_data_describe(args: argparse.Namespace) -> int:
    from ._io import read_json
    from ._report import summary_tables
    from ._run import STAGE_RECORD, Run

    resolved = _load(args)
    if resolved.component("dataset") is None:
        raise WavelensError(f"{args.spec} declares no dataset")
    run = Run(resolved, runs_dir=args.runs_dir)
    directory = run.execute(until="dataset")
    if run.rank != 0:  # another torchrun process: rank 0 reports
        return 0
    summary = read_json(run.stage_dir("dataset") / STAGE_RECORD).get("summary") or {}
    if args.json:
        sys.stdout.write(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        return 0
    plugin = resolved.component("dataset").plugin.name
    console.print(f"[bold]{escape(plugin)}[/] ({escape(run.outcomes.get('dataset', ''))})")
    for title, header, rows in summary_tables(summary):
        table = Table(title=escape(title))
        for column in header:
            table.add_column(escape(column), overflow="fold")
        for row in rows:
            table.add_row(*(escape(cell) for cell in row))
        console.print(table)
    for note in summary.get("notes") or []:
        console.print(f"- {escape(note)}", soft_wrap=True, highlight=False)
    console.print(f"dataset stage: {escape(str(directory / 'stages' / 'dataset'))}",
                  soft_wrap=True, highlight=False)
    return 0


def _cmd_probe(args: argparse.Namespace) -> int:
    from ._run import Run

    resolved = _load(args)
    probes = [path for path in resolved.components if path.startswith("probes.")]
    if not probes:
        raise WavelensError(f"{args.spec} declares no probes")
    run = Run(resolved, runs_dir=args.runs_dir)
    directory = run.execute(until=probes[-1])
    if run.rank != 0:
        return 0
    for path in probes:
        console.print(f"{escape(path)} ({escape(run.outcomes.get(path, ''))}): "
                      f"{escape(str(directory / 'stages' / path))}", soft_wrap=True, highlight=False)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from ._report import write_report

    for path in write_report(Path(args.run_dir)):
        console.print(f"wrote {escape(str(path))}")
    return 0


def _cmd_stats_fit(args: argparse.Namespace) -> int:
    from ._components import StageContext
    from ._console import get_logger, progress
    from ._device import resolve_placement

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


def _global_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wavelens", description="Interpret and enhance speech CNNs with plugins.", add_help=add_help
    )
    parser.add_argument(
        "--disable", action="append", metavar="NAME",
        help=f"disable a plugin or contribution by name (also ${DISABLE_ENV}=a,b)",
    )
    return parser


def build_parser(registry: PluginRegistry | None = None) -> argparse.ArgumentParser:
    """The command line: the core's commands, and those of ``registry``'s plugins."""
    parser = _global_parser()
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
    run.add_argument("--launcher", choices=["here", "local", "submitit"], default="here",
                     help="here: the variants one after another in this process (default); local: "
                          "each as its own process, --jobs at a time, on its own GPU or share of the cores; "
                          "submitit: each as a job of one Slurm array (or submitit's local executor), with "
                          "the spec's launcher block and --launcher-option (docs/cluster.md)")
    run.add_argument("--launcher-option", action="append", metavar="KEY=VALUE",
                     help="with --launcher submitit: a launcher setting (partition, gpus_per_job, processes, "
                          "timeout_min, ...; repeatable), over the spec's launcher block")
    run.add_argument("--jobs", type=int_between(1, 4096), default=None, metavar="N",
                     help="with --launcher local: jobs at a time (default: the GPUs, or the cores)")
    run.add_argument("--record", type=Path, default=None, help=argparse.SUPPRESS)
    run.add_argument("--sweep", action="append", metavar="KEY.PATH=V1,V2",
                     help="run every combination of these values (repeatable: a grid), each as a variant, "
                          "validated as a whole first, compared at the end")
    run.add_argument("--fresh", action="store_true",
                     help="start a new run directory and reuse no earlier stage")
    add_runs_dir(run)
    run.set_defaults(func=_cmd_run)

    data = commands.add_parser("data", help="prepare and inspect a spec's dataset")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    describe = data_commands.add_parser(
        "describe", help="prepare the spec's dataset (or reuse it) and print its summary")
    add_spec_arguments(describe)
    describe.add_argument("--json", action="store_true", help="machine-readable output")
    add_runs_dir(describe)
    describe.set_defaults(func=_cmd_data_describe)

    probe = commands.add_parser(
        "probe", help="run a spec's dataset, model and probes stages (not statistics or metrics)")
    add_spec_arguments(probe)
    add_runs_dir(probe)
    probe.set_defaults(func=_cmd_probe)


    stats = commands.add_parser("stats", help="fit statistics to a table file")
    stats_commands = stats.add_subparsers(dest="stats_command", required=True)
    fit = stats_commands.add_parser(
        "fit", help="fit a spec's statistics to a tidy table (CSV or parquet), e.g. a probe's")
    fit.add_argument("table", type=Path, help="the table, e.g. a probe's feature_maps.parquet")
    fit.add_argument("--spec", required=True, type=Path, help="a spec whose 'statistics' to fit")
    fit.add_argument("--set", action="append", metavar="PATH=VALUE", help="override a spec value")
    fit.add_argument("--out", type=Path, default=None, help="output folder (default TABLE-stats beside it)")
    fit.set_defaults(func=_cmd_stats_fit)



    report = commands.add_parser("report", help="rebuild a run's report from its artefacts")
    report.add_argument("run_dir", type=Path)
    report.set_defaults(func=_cmd_report)

    for loaded in registry.commands() if registry is not None else []:
        command = loaded.command
        sub = commands.add_parser(command.name, help=command.help,
                                  description=command.description or command.help)
        command.add_arguments(sub)
        sub.set_defaults(func=partial(_run_command, command, registry))
    return parser


def _run_command(command: Command, registry: PluginRegistry, args: argparse.Namespace) -> int:
    return command.run(args, CommandContext(registry, frozenset(_disabled(args))))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    known, rest = _global_parser(add_help=False).parse_known_args(argv)
    try:
        # The plugins' commands are part of the command line, so they load first (the
        # modules that add commands only: the others load when a spec uses them).
        registry = PluginRegistry.discover(disabled=_disabled(known))
        registry.commands()
        problem = None
    except WavelensError as exc:
        registry, problem = None, exc
    if problem is not None:
        # The core's commands still work (and `plugins`/`validate` say what is wrong);
        # a plugin's command cannot be offered.
        first = next((word for word in rest if not word.startswith("-")), None)
        if first is not None and first not in CORE_COMMANDS:
            console.print(f"[red]error:[/] {escape(str(problem))}", highlight=False, soft_wrap=True)
            return 2
        if first is None:  # --help: say why the plugins' commands are missing from it
            console.print("[yellow]warning:[/] the plugins did not load, so their commands are not "
                          f"listed: {escape(str(problem))}", highlight=False, soft_wrap=True)
    args = build_parser(registry).parse_args(argv)
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
