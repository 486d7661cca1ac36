"""The work of ``wavelens evaluate`` (its command line is in ``commands.py``, which
imports this module only when the command runs): score each system's folder, write
its tables, and compare the systems file by file."""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import numpy as np
from rich.markup import escape

from wavelens import (
    CommandContext,
    StageError,
    console,
    format_value,
    markdown_table,
    metric_columns,
    presentation,
    progress,
    save_figure,
    summarize,
    summary_markdown,
    write_csv,
    write_json,
    write_text,
)

from .folders import evaluate_systems
from .student_t import t_quantile


def evaluate(args: argparse.Namespace, ctx: CommandContext) -> int:
    registry = ctx.registry
    metrics = {}
    mode = args.pesq_mode or ("wb" if args.rate >= 16000 else "nb")
    if mode == "wb" and args.rate != 16000:
        raise StageError(f"wideband PESQ is defined at 16 kHz, not --rate {args.rate}: give --rate 16000, "
                         "or --pesq-mode nb at 8000")
    for name in [n.strip() for n in args.metrics.split(",") if n.strip()]:
        contribution = registry.get("metric", name)
        fields = contribution.params.model_fields
        params: dict = {"sample_rate": args.rate} if "sample_rate" in fields else {}
        if name == "pesq":
            params["mode"] = mode
        if name == "composite":
            # The VoiceBank convention is built on wideband PESQ, Loizou's on narrowband.
            params["convention"] = args.convention or ("voicebank" if mode == "wb" else "loizou")
        metrics[name] = contribution.contribution.build(contribution.params(**params))
    columns = presentation(metrics)
    systems = list(dict.fromkeys(Path(e) for e in args.estimate))
    scored = evaluate_systems(args.reference, systems, metrics, rate=args.rate, workers=args.workers,
                              progress=progress, upsample=args.upsample)
    if len(systems) == 1:
        out = Path(args.out or f"{systems[0]}-scores")
        _, failed = write_system(args, metrics, columns, mode, *scored[0], out)
        console.print(f"per-file scores: {escape(str(out / 'scores.csv'))}", soft_wrap=True, highlight=False)
        return 1 if failed else 0  # every file is in scores.csv; the status says whether some were refused
    out = Path(args.out or f"{systems[0]}-comparison")
    results = {}
    any_failed = False
    for name, folder, (rows, notes) in zip(_system_names(systems), systems, scored, strict=True):
        console.print(f"[bold]{escape(name)}[/] ({escape(str(folder))})")
        results[name], failed = write_system(args, metrics, columns, mode, rows, notes, out / name)
        any_failed = any_failed or failed
    text = compare_systems(results, columns, out)
    console.print(text, soft_wrap=True, highlight=False, markup=False)
    console.print(f"comparison: {escape(str(out / 'comparison.md'))}", soft_wrap=True, highlight=False)
    return 1 if any_failed else 0


def write_system(args: argparse.Namespace, metrics: dict, columns: list[dict], mode: str,
                 rows: list[dict], notes: list[str], out: Path) -> tuple[list[dict], bool]:
    """Write one system's scores.csv, summary.json and summary.md into ``out``;
    return the rows and whether any file could not be scored."""
    if args.by:
        groups = _read_groups(args.meta, args.by) if args.meta else {}
        for row in rows:
            row[args.by] = groups.get(row["file"], groups.get(Path(row["file"]).stem, ""))
    out.mkdir(parents=True, exist_ok=True)
    group = [args.by] if args.by else []
    fields = ["file", "status", "reason", *group, "seconds", *metric_columns(rows, args.by, columns), "notes"]
    write_csv(out / "scores.csv", [{key: row.get(key, "") for key in fields} for row in rows], fields)
    summary = summarize(rows, by=args.by, columns=columns)
    table = summary_markdown(summary, by=args.by, columns=columns)
    errors = [r for r in rows if r["status"] != "ok"]
    shown = [c for c in columns if c.get("compare", True)] or columns
    spreads = spread(rows, [c["key"] for c in shown])
    conventions = setup(args, metrics, mode)
    noted = [r for r in rows if r.get("notes")]
    write_json(out / "summary.json", {"summary": summary, "spread": spreads, "setup": conventions,
                                      "notes": notes,
                                      "file_notes": [{"file": r["file"], "notes": r["notes"]} for r in noted],
                                      "errors": [{"file": r["file"], "reason": r["reason"]} for r in errors]},
               sort_keys=False)
    scored = len(rows) - len(errors)
    text = [f"Scored {scored} of {len(rows)} paired files ({', '.join(metrics)}).", "", table, "",
            "Spread over the files (mean, 95 % confidence interval of the mean, standard deviation):", "",
            spread_markdown(spreads, shown), "",
            "Setup: " + "; ".join(f"{k} {v}" for k, v in conventions.items() if not isinstance(v, dict))
            + "; packages " + ", ".join(f"{k} {v}" for k, v in conventions["packages"].items()) + "."]
    if args.plot:
        plot_files({out.name: rows}, shown, out / "scores.png")
        text += ["", "Per-file values of each metric: scores.png."]
    text += [f"- {note}" for note in notes]
    text += [f"- note: {r['file']}: {r['notes']}" for r in noted[:10]]
    if len(noted) > 10:
        text.append(f"- note: {len(noted) - 10} more files have notes (scores.csv, summary.json)")
    text += [f"- error: {r['file']}: {r['reason']}" for r in errors]
    write_text(out / "summary.md", "\n".join(text) + "\n")
    console.print("\n".join(text), soft_wrap=True, highlight=False, markup=False)
    return rows, bool(errors)


def _system_names(folders: list[Path]) -> list[str]:
    """Short unique names for the systems: the folder names, or their paths when two
    folders share a name."""
    names = [folder.name or str(folder) for folder in folders]
    if len(set(names)) < len(names):
        names = [str(folder).strip("/").replace("/", "_") for folder in folders]
    return names


def compare_systems(results: dict[str, list[dict]], columns: list[dict], out: Path) -> str:
    """The systems side by side (means over the files each scored), and each system
    against the first on the files both scored: the mean difference with its 95 %
    confidence interval, and the paired t-test's and Wilcoxon signed-rank test's p.
    Writes comparison.md and comparison.json into ``out``; returns the Markdown."""
    from scipy import stats

    shown = [c for c in columns if c.get("compare", True)] or columns
    names = list(results)
    means = []
    for name in names:
        (overall,) = summarize(results[name], columns=columns)
        means.append({"system": name, **{c["key"]: overall.get(c["key"]) for c in shown},
                      "scored": overall["scored"], "files": overall["files"]})
    table = markdown_table(["system", *(c["label"] for c in shown), "files scored"],
                           [[m["system"], *(format_value(m[c["key"]], c.get("digits")) for c in shown),
                             f"{m['scored']} of {m['files']}"] for m in means])
    base = names[0]
    by_file = {name: {r["file"]: r for r in results[name] if r.get("status") == "ok"} for name in names}
    paired, lines = [], []
    for name in names[1:]:
        for column in shown:
            key = column["key"]
            common = [f for f in by_file[base] if f in by_file[name] and all(
                isinstance(by_file[s][f].get(key), float) and math.isfinite(by_file[s][f][key])
                for s in (base, name))]
            if len(common) < 2:
                continue
            ours = np.array([by_file[name][f][key] for f in common])
            theirs = np.array([by_file[base][f][key] for f in common])
            difference = ours - theirs
            mean, sd = float(difference.mean()), float(difference.std(ddof=1))
            half = t_quantile(0.975, len(common) - 1) * sd / math.sqrt(len(common))
            t_p = float(stats.ttest_rel(ours, theirs).pvalue) if sd > 0 else math.nan
            w_p = float(stats.wilcoxon(difference).pvalue) if np.any(difference) else math.nan
            paired.append({"system": name, "against": base, "metric": key, "files": len(common),
                           "mean_difference": mean, "ci95": [mean - half, mean + half],
                           "t_test_p": t_p, "wilcoxon_p": w_p})
            digits = (column.get("digits") or 3) + 1
            lines.append([name, column["label"], str(len(common)), f"{mean:+.{digits}f}",
                          f"{mean - half:+.{digits}f} to {mean + half:+.{digits}f}", _p(t_p), _p(w_p)])
    text = "\n".join([
        "Means per system over the files each scored:", "", table, "",
        f"Each system against {base}, on the files both scored (difference: system − {base}):", "",
        markdown_table(["system", "metric", "files", "mean difference", "95 % CI", "paired t p",
                        "Wilcoxon p"], lines) if lines else "(fewer than two files in common)",
    ])
    plot_files(results, shown, out / "comparison.png")
    text += "\n\nPer-file values of each metric, per system: comparison.png."
    write_json(out / "comparison.json", {"means": means, "paired": paired, "baseline": base}, sort_keys=False)
    write_text(out / "comparison.md", text + "\n")
    return text


def plot_files(results: dict[str, list[dict]], columns: list[dict], path: Path) -> Path:
    """One panel per metric: each system's per-file values as a box (median,
    quartiles, 1.5 IQR whiskers) with every file as a point, and the mean as a
    diamond; with several systems, a grey line joins each file's values, so paired
    differences can be seen. Values that could not be computed are left out of their
    panel, and the panel's title says how many."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, axes = plt.subplots(1, len(columns), figsize=(2.1 * len(columns) + 1, 3.2), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, column in zip(axes[0], columns, strict=True):
        key = column["key"]
        by_system = [{r["file"]: r[key] for r in results[name] if r.get("status") == "ok"
                      and isinstance(r.get(key), float) and math.isfinite(r[key])} for name in names]
        if len(names) > 1:
            for file in set.intersection(*(set(values) for values in by_system)):
                ax.plot(range(1, len(names) + 1), [values[file] for values in by_system], color="0.85",
                        linewidth=0.5, zorder=1)
        data = [list(values.values()) for values in by_system]
        ax.boxplot(data, widths=0.5, showfliers=False, zorder=2)
        for index, values in enumerate(data, start=1):
            ax.scatter(index + rng.uniform(-0.12, 0.12, len(values)), values, s=6, alpha=0.6, zorder=3)
            if values:
                ax.scatter([index], [np.mean(values)], marker="D", color="black", s=18, zorder=4)
        ax.set_xticks(range(1, len(names) + 1), names, rotation=30 if len(names) > 2 else 0, fontsize=8)
        scored = sum(1 for r in results[names[0]] if r.get("status") == "ok")
        missing = scored - len(data[0])
        ax.set_title(column["label"] + (f" ({missing} missing)" if missing else ""), fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    return path


def _p(value: float) -> str:
    if not math.isfinite(value):
        return "–"
    return "< 0.0001" if value < 1e-4 else f"{value:.4f}"


def spread(rows: list[dict], keys: list[str]) -> dict[str, dict]:
    """Per metric over the scored files that have it: n, mean, standard deviation and
    the 95 % confidence interval of the mean (Student's t)."""
    result = {}
    for key in keys:
        values = np.array([r[key] for r in rows if r.get("status") == "ok" and isinstance(r.get(key), float)
                           and math.isfinite(r[key])])
        n = len(values)
        if n == 0:
            continue
        mean = float(values.mean())
        sd = float(values.std(ddof=1)) if n > 1 else math.nan
        half = t_quantile(0.975, n - 1) * sd / math.sqrt(n) if n > 1 else math.nan
        result[key] = {"n": n, "mean": mean, "sd": sd, "ci95": [mean - half, mean + half]}
    return result


def spread_markdown(spreads: dict[str, dict], columns: list[dict]) -> str:
    def fmt(value: float, digits: int | None) -> str:  # one digit more than the means' table
        if not math.isfinite(value):
            return "–"
        return f"{value:.4g}" if digits is None else f"{value:.{digits + 1}f}"

    rows = []
    for column in columns:
        entry = spreads.get(column["key"])
        if entry:
            digits = column.get("digits")
            low, high = entry["ci95"]
            rows.append([column["label"], str(entry["n"]), fmt(entry["mean"], digits),
                         f"{fmt(low, digits)} to {fmt(high, digits)}", fmt(entry["sd"], digits)])
    return markdown_table(["metric", "files", "mean", "95 % CI", "SD"], rows)


def setup(args: argparse.Namespace, metrics: dict, mode: str) -> dict:
    """What the numbers depend on besides the audio: the rate, PESQ's mode, the
    composite measures' convention, the STOI variant, and the packages' versions."""
    from importlib.metadata import PackageNotFoundError, version

    result: dict = {"rate": args.rate, "pesq_mode": mode}
    if "composite" in metrics:
        result["convention"] = metrics["composite"].params.convention
    if "stoi" in metrics:
        result["stoi"] = ("ESTOI (pystoi)" if metrics["stoi"].params.extended
                          else "STOI (wavelens, pystoi's computation)")
    packages = {}
    for name in ("wavelens", "pesq", "pystoi", "numpy", "scipy", "torch"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = "not installed"
    result["packages"] = packages
    return result


def _read_groups(path: Path, column: str) -> dict[str, str]:
    """file name → the ``column`` value, from a CSV/TSV with a ``file`` column."""
    text = Path(path).read_text()
    dialect = "excel-tab" if "\t" in text.splitlines()[0] else "excel"
    rows = list(csv.DictReader(text.splitlines(), dialect=dialect))
    if not rows or "file" not in rows[0] or column not in rows[0]:
        raise StageError(f"{path} needs the columns 'file' and {column!r}; it has "
                            f"{', '.join(rows[0]) if rows else 'no rows'}")
    return {row["file"]: row[column] for row in rows}
