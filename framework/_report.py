"""The run report: ``report.md`` and ``report.html`` in the run directory.

The report is built only from what the run stored (``run.json``, ``spec.yaml``, each
stage's ``stage.json`` and optional ``report.md`` section), so
``wavelens report RUN_DIR`` regenerates it without recomputing anything.
"""

from __future__ import annotations

import base64
import html
import mimetypes
import re
from pathlib import Path

import markdown

from ._errors import WavelensError
from ._evaluation import MISSING_NOTE, column_for, format_value, group_order, with_missing
from ._io import markdown_table, read_json, save_figure, write_csv, write_json, write_text

__all__ = ["write_report", "write_comparison", "rewrite_comparison", "render_markdown", "summary_tables",
           "summary_markdown"]

_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")


def _rebase_links(section: str, stage_folder: str) -> str:
    """Make a stage section's relative image links relative to the run directory."""

    def rebase(match: re.Match) -> str:
        alt, target = match.groups()
        if re.match(r"^[a-z]+:", target) or target.startswith("/"):
            return match.group(0)
        return f"![{alt}]({stage_folder}/{target})"

    return _IMAGE.sub(rebase, section)


def summary_tables(summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """A dataset summary (see ``Dataset.describe``) as ``(title, header, rows)`` tables:
    one row per split for the scalars, then one table per count (a row per category,
    a column per split)."""
    tables = []
    splits = summary.get("splits") or {}
    if splits:
        fields = list(dict.fromkeys(key for values in splits.values() for key in values))
        rows = [[name, *(_cell(values.get(key)) for key in fields)] for name, values in splits.items()]
        tables.append(("splits", ["split", *fields], rows))
    for title, by_split in (summary.get("counts") or {}).items():
        columns = list(by_split)
        categories = list(dict.fromkeys(c for counts in by_split.values() for c in counts))
        rows = [[str(c), *(_cell(by_split[s].get(c, 0)) for s in columns)] for c in categories]
        tables.append((str(title), [str(title), *columns], rows))
    return tables


def _cell(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def summary_markdown(summary: dict) -> str:
    """A dataset summary as Markdown tables and a list of notes."""
    parts = []
    for title, header, rows in summary_tables(summary):
        parts.append(f"**{title}**\n\n" + markdown_table(header, rows))
    notes = summary.get("notes") or []
    if notes:
        parts.append("\n".join(f"- {note}" for note in notes))
    return "\n\n".join(parts) + "\n" if parts else ""


def _run_record(run_dir: Path) -> dict:
    record_path = run_dir / "run.json"
    if not record_path.is_file():
        raise WavelensError(f"{run_dir} is not a wavelens run directory (no run.json)")
    return read_json(record_path)


def render_markdown(run_dir: Path, record: dict | None = None) -> str:
    """The report of ``run_dir`` as Markdown (``record``: its run.json, if read)."""
    run_dir = Path(run_dir)
    record = record if record is not None else _run_record(run_dir)
    device = record.get("device", {})
    git = record.get("git", {})
    lines = [f"# {record['name']}", ""]
    if record.get("description"):
        lines += [record["description"], ""]
    chosen = "".join(f", {key} `{record[key]}`" for key in ("profile", "variant") if record.get(key))
    lines += [
        f"- run: `{run_dir.name}` ({record.get('status')}, created {record.get('created')})",
        f"- spec: `{record.get('spec_source')}` (seed {record.get('seed')}{chosen})",
        f"- device: {device.get('device')} ({device.get('precision')}), torch {device.get('torch')}",
        f"- wavelens revision: {git.get('revision') or 'unknown'}"
        + (" (with uncommitted changes)" if git.get("dirty") else ""),
        "",
        "| stage | plugins | time (s) | finished |",
        "| --- | --- | --- | --- |",
    ]
    sections = []
    for stage in record.get("stages", []):
        folder = run_dir / "stages" / stage["name"]
        stage_record = folder / "stage.json"
        if not stage_record.is_file():
            lines.append(f"| {stage['name']} | {', '.join(stage['plugins'])} | – | not run |")
            continue
        done = read_json(stage_record)
        lines.append(
            f"| {stage['name']} | {', '.join(stage['plugins'])} | {done.get('duration_s')} | "
            f"{done.get('finished')} |"
        )
        section = folder / "report.md"
        text = ""
        if section.is_file():
            text = _rebase_links(section.read_text(encoding="utf-8"), f"stages/{stage['name']}")
        if stage.get("kind") in ("dataset", "data") and isinstance(done.get("summary"), dict):
            text = f"{text.strip()}\n\n{summary_markdown(done['summary'])}"
        if text.strip():
            sections.append(f"## {stage['name']} ({', '.join(stage['plugins'])})\n\n{text.strip()}\n")
    lines.append("")
    lines += sections
    spec_file = run_dir / "spec.yaml"
    if spec_file.is_file():
        lines += [
            "## Resolved spec",
            "",
            "```yaml",
            spec_file.read_text(encoding="utf-8").rstrip(),
            "```",
            "",
        ]
    return "\n".join(lines)


def _embed_images(body: str, run_dir: Path) -> str:
    """Inline local images as data URIs so the HTML file stands alone."""

    def embed(match: re.Match) -> str:
        target = match.group(2)
        path = run_dir / html.unescape(target)
        if re.match(r"^[a-z]+:", target) or not path.is_file():
            return match.group(0)
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        data = base64.b64encode(path.read_bytes()).decode()
        return f'{match.group(1)}data:{mime};base64,{data}"'

    return re.sub(r'(<img[^>]*\ssrc=")([^"]+)"', embed, body)


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: .25rem .5rem; }
pre { background: #f6f6f6; padding: .75rem; overflow-x: auto; } img { max-width: 100%; }
"""


def _page(title: str, text: str, base: Path) -> str:
    body = markdown.markdown(text, extensions=["tables", "fenced_code"])
    return (
        f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body>\n{_embed_images(body, base)}\n</body></html>\n"
    )


def _variant_row(name: str, run_dir: Path) -> dict:
    """One variant's row: parameters (model stage), metric means (metrics stage) and,
    under ``_columns``, how its metrics present them."""
    row: dict = {"variant": name, "run": run_dir.name}
    model = run_dir / "stages" / "model" / "stage.json"
    if model.is_file():
        row["parameters"] = read_json(model).get("summary", {}).get("parameters")
    metrics = run_dir / "stages" / "metrics" / "metrics.json"
    if metrics.is_file():
        record = read_json(metrics)
        row["_columns"] = record.get("columns", [])
        if record.get("grouped") and record.get("by"):
            row["_grouped"], row["_by"] = record["grouped"], record["by"]
        if record.get("overall"):
            overall = record["overall"][0]
            row.update({k: v for k, v in overall.items() if k != "set"})
        else:
            row["_results"] = record.get("results", [])
    return row


def _expand_results(rows: list[dict]) -> None:
    """Put each variant's metric results into its row, under the columns the
    metrics declare. A run written before metrics declared their columns takes the
    declarations of the other variants' runs, so that its values share their columns."""
    declared = {c["key"] for row in rows for c in row.get("_columns", [])}
    for row in rows:
        for result in row.pop("_results", []):
            value = result["value"]
            if isinstance(value, dict):
                row.update({column_for(result["metric"], k, declared): v for k, v in value.items()})
            else:
                row[result["metric"]] = value


BOOKKEEPING = {"variant", "run", "parameters", "files", "scored", "missing"}


def _layout(rows: list[dict], present: set[str]) -> list[dict]:
    """The compared columns: those the variants' metrics declare for comparison, in
    their order, then every other value present (under its key), so that no metric
    a variant computed is left out of the table."""
    declared: dict[str, dict] = {}
    for row in rows:
        for column in row.get("_columns", []):
            declared.setdefault(column["key"], column)
    ordered = sorted(declared.values(), key=lambda c: c.get("rank", 1000.0))
    shown = [c for c in ordered if c.get("compare", True) and c["key"] in present]
    hidden = {c["key"] for c in ordered if not c.get("compare", True)}
    others = [{"key": k, "label": k, "digits": None} for k in dict.fromkeys(
        k for row in rows for k in row if k in present and k not in declared and k not in hidden)]
    return shown + others


def parameter_count(value: object) -> str:
    """A parameter count at any scale: exact below 10,000 (1,234), then thousands
    (12.3k) and, from 100,000, millions (0.34M, as the papers' tables)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
        return "–"
    if value < 10_000:
        return f"{int(value):,}"
    if value < 100_000:
        return f"{value / 1e3:.1f}k"
    return f"{value / 1e6:.2f}M"


def _group_label(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def grouped_comparison(rows: list[dict]) -> tuple[list[str], list[list[str]], list[dict]]:
    """The variants' grouped metric means: a row per value of the first grouping
    column (e.g. SNR) and variant, and, with a second grouping column (e.g. noise
    type), a block of metric columns per value of it plus an "Average" block (the
    mean over every scored item of that row).

    Returns ``(header, rows, records)``; ``records`` are the table's cells as numbers
    (one dict per table row) for ``table_grouped.csv``."""
    with_groups = [row for row in rows if row.get("_grouped")]
    if not with_groups:
        return [], [], []
    by = with_groups[0]["_by"]
    row_key, column_key = by[0], (by[1] if len(by) > 1 else None)
    present = {k for row in with_groups for g in row["_grouped"] for k in g} - {
        row_key, column_key, "files", "scored", "missing"}
    # (the groups' own keys too: a value no metric declares still gets its column)
    columns = _layout([*with_groups, *(g for row in with_groups for g in row["_grouped"])], present)
    metrics = [c["key"] for c in columns]
    labels = {c["key"]: c["label"] for c in columns}
    digits = {c["key"]: c.get("digits") for c in columns}

    row_values = sorted({g.get(row_key) for r in with_groups for g in r["_grouped"]}, key=group_order)
    column_values = (sorted({g.get(column_key) for r in with_groups for g in r["_grouped"]},
                            key=group_order) if column_key else [])
    blocks = [*(_group_label(v) for v in column_values), "Average"] if column_key else [""]
    header = [row_key, "method"]
    for block in blocks:
        header += [f"{block} {labels[m]}".strip() for m in metrics]
    table, records = [], []
    for value in row_values:
        for row in with_groups:
            groups = [g for g in row["_grouped"] if g.get(row_key) == value]
            if not groups:
                continue
            record: dict = {row_key: value, "method": row["variant"]}
            cells = [_group_label(value), row["variant"]]
            for block, column_value in zip(blocks, [*column_values, None] if column_key else [None],
                                           strict=True):
                members = groups if column_value is None else [
                    g for g in groups if g.get(column_key) == column_value]
                for metric in metrics:
                    # each group's mean weighs by the files it is the mean of
                    weighted = [(g[metric], g.get("scored", 1) - g.get("missing", {}).get(metric, 0))
                                for g in members
                                if isinstance(g.get(metric), (int, float)) and g[metric] == g[metric]]
                    total = sum(w for _, w in weighted)
                    mean = sum(v * w for v, w in weighted) / total if total else float("nan")
                    record[f"{block} {metric}".strip()] = mean
                    cells.append(format_value(mean, digits[metric]))
            table.append(cells)
            records.append(record)
    return header, table, records


def _plot_grouped(folder: Path, key: str, records: list[dict], columns: list[dict]) -> str | None:
    """comparison.png: each variant's mean of every compared metric against the first
    grouping column (e.g. each metric against the SNR), when that column is numeric."""
    try:
        [float(r[key]) for r in records]
    except (TypeError, ValueError):
        return None
    shown = [c for c in columns if any(f"Average {c['key']}" in r or c["key"] in r for r in records)]
    if not shown:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(shown), figsize=(3.6 * len(shown), 3), squeeze=False)
    for axis, column in zip(axes[0], shown, strict=True):
        metric = column["key"]
        name = f"Average {metric}" if f"Average {metric}" in records[0] else metric
        for method in dict.fromkeys(r["method"] for r in records):
            points = sorted((float(r[key]), r[name]) for r in records if r["method"] == method)
            axis.plot([x for x, _ in points], [y for _, y in points], marker="o", label=method)
        axis.set_xlabel(key)
        axis.set_title(column["label"], fontsize=9)
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    save_figure(figure, folder / "comparison.png", dpi=110)
    return "comparison.png"


def write_comparison(folder: Path, runs: dict[str, Path], title: str,
                     failed: dict[str, str] | None = None) -> list[Path]:
    """The variants of one spec side by side: a row per variant with its parameter
    count and the means of every metric it computed, under the labels and number
    formats its metrics declare; and, when the metrics stage grouped its items with
    ``evaluation.by``, the means by group too. Writes ``table.csv``, ``table.json``,
    ``table_grouped.csv``, ``report.md`` and ``report.html`` in ``folder``, linking
    each run's own report. ``failed``: the variants whose runs failed (name → why),
    listed under the table rather than missing from it silently."""
    failed = dict(failed or {})
    rows = [_variant_row(name, Path(run)) for name, run in runs.items()]
    _expand_results(rows)
    group_header, group_rows, group_records = grouped_comparison(rows)
    by = next((row["_by"] for row in rows if row.get("_grouped")), [])
    present = {k for row in rows for k in row if not k.startswith("_")} - BOOKKEEPING
    columns = _layout(rows, present)
    group_columns = _layout(rows, {k for row in rows for g in row.get("_grouped", []) for k in g})
    rows = [{k: v for k, v in row.items() if not k.startswith("_")} for row in rows]
    counted = any("scored" in row for row in rows)  # stages that group items count them
    header = ["variant", "#Param.", *(c["label"] for c in columns), *(["files scored"] if counted else [])]
    cells = []
    for row in rows:
        scored = [f"{row['scored']} of {row['files']}" if "scored" in row else "–"] if counted else []
        missing = row.get("missing") or {}
        cells.append([row["variant"], parameter_count(row.get("parameters")),
                      *(with_missing(format_value(row.get(c["key"]), c.get("digits")),
                                     missing.get(c["key"], 0), row.get("scored", 0)) for c in columns),
                      *scored])
    table = markdown_table(header, cells)
    if any(row.get("missing") for row in rows):
        table += "\n\n" + MISSING_NOTE
    folder.mkdir(parents=True, exist_ok=True)
    flat = [{**{k: v for k, v in row.items() if k != "missing"},
             **{f"{key}_missing": n for key, n in (row.get("missing") or {}).items()}} for row in rows]
    write_csv(folder / "table.csv", flat, list(dict.fromkeys(k for row in flat for k in row)))
    write_json(folder / "table.json", {"title": title, "runs": [[n, Path(r).name] for n, r in runs.items()],
                                       "rows": rows, "grouped": group_records, "columns": columns,
                                       "failed": failed})
    links = "\n".join(
        f"- `{name}`: [{Path(run).name}]({Path('..') / Path(run).name / 'report.md'})"
        for name, run in runs.items()
    )
    text = (f"# {title}: variants compared\n\n**Means per variant.**\n\n" + table
            + "\n\nMeans over the scored test items of each variant's metrics stage; #Param. from its "
            "model stage.\n")
    if failed:
        text += (f"\n**Not in the table: {len(failed)} variant(s) failed.**\n\n"
                 + "\n".join(f"- `{name}`: {reason}" for name, reason in failed.items()) + "\n")
    if group_rows:
        write_csv(folder / "table_grouped.csv", group_records, list(group_records[0]))
        figure = _plot_grouped(folder, group_header[0], group_records, group_columns)
        text += (f"\n**Means by `{by[0]}`** (rows)"
                 + (f" and `{by[1]}` (column blocks; Average: every item of the row)" if len(by) > 1
                    else "")
                 + ":\n\n" + markdown_table(group_header, group_rows) + "\n")
        if figure:
            text += (f"\n![{figure}]({figure})\n\n*Each variant's mean over every scored item at "
                     f"each `{group_header[0]}` (the Average block above), one panel per metric.*\n")
    text += "\nEach variant's own report:\n\n" + links + "\n"
    write_text(folder / "report.md", text)
    write_text(folder / "report.html", _page(title, text, folder))
    return [folder / "report.md", folder / "report.html"]


def rewrite_comparison(folder: Path) -> list[Path]:
    """Rebuild a ``variants-*`` comparison from its ``table.json`` and the variants'
    stored artefacts (nothing is recomputed)."""
    folder = Path(folder)
    record = read_json(folder / "table.json")
    if "runs" not in record:
        raise WavelensError(f"{folder / 'table.json'} does not name its runs (written by an older "
                            "wavelens): run the spec again to rebuild it")
    runs = {name: folder.parent / run for name, run in record["runs"]}
    missing = [str(path) for path in runs.values() if not (path / "run.json").is_file()]
    if missing:
        raise WavelensError(f"the compared runs are gone: {', '.join(missing)}")
    return write_comparison(folder, runs, record.get("title", folder.parent.name), record.get("failed"))


def write_report(run_dir: Path, formats: list[str] | None = None) -> list[Path]:
    """Write the report of ``run_dir`` in ``formats`` (default: the spec's); for a
    ``variants-*`` folder, its comparison of the variants."""
    run_dir = Path(run_dir)
    if not (run_dir / "run.json").is_file() and (run_dir / "table.json").is_file():
        return rewrite_comparison(run_dir)
    record = _run_record(run_dir)
    text = render_markdown(run_dir, record)
    formats = formats or record.get("report_formats", ["md"])
    written = []
    if "md" in formats:
        write_text(run_dir / "report.md", text)
        written.append(run_dir / "report.md")
    if "html" in formats:
        write_text(run_dir / "report.html", _page(record["name"], text, run_dir))
        written.append(run_dir / "report.html")
    return written
