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

from .errors import WavelensError
from .io import read_json, write_text

__all__ = ["write_report", "write_comparison", "render_markdown", "summary_tables", "summary_markdown"]

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
        lines = [f"**{title}**", "", "| " + " | ".join(header) + " |",
                 "|" + " --- |" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        parts.append("\n".join(lines))
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
    lines += [
        f"- run: `{run_dir.name}` ({record.get('status')}, created {record.get('created')})",
        f"- spec: `{record.get('spec_source')}` (seed {record.get('seed')})",
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
        if stage.get("kind") == "data" and isinstance(done.get("summary"), dict):
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
    """One variant's row: parameters (model stage) and metric means (metrics stage)."""
    row: dict = {"variant": name, "run": run_dir.name}
    model = run_dir / "stages" / "model" / "stage.json"
    if model.is_file():
        row["parameters"] = read_json(model).get("summary", {}).get("parameters")
    metrics = run_dir / "stages" / "metrics" / "metrics.json"
    if metrics.is_file():
        record = read_json(metrics)
        if record.get("overall"):
            overall = record["overall"][0]
            row.update({k: v for k, v in overall.items() if k != "set"})
        else:
            for result in record.get("results", []):
                value = result["value"]
                if isinstance(value, dict):
                    row.update(value)
                else:
                    row[result["metric"]] = value
    return row


def write_comparison(folder: Path, runs: dict[str, Path], title: str) -> list[Path]:
    """The variants of one spec side by side (the layout of the CSM-VANet paper's
    Table I: a row per variant, #Param. and the metric means): ``table.csv``,
    ``table.json``, ``report.md`` and ``report.html`` in ``folder``, linking each run's
    own report."""
    from .evaluation import TABLE_NAMES, TABLE_ORDER
    from .io import write_csv, write_json

    rows = [_variant_row(name, Path(run)) for name, run in runs.items()]
    present = {k for row in rows for k in row}
    metrics = [k for k in TABLE_ORDER if k in present]
    header = ["variant", "#Param.", *(TABLE_NAMES[k] for k in metrics), "files scored"]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    for row in rows:
        params = row.get("parameters")
        cells = [row["variant"], f"{params / 1e6:.2f}M" if isinstance(params, (int, float)) else "–"]
        for key in metrics:
            value = row.get(key)
            cells.append(f"{value:.2f}" if isinstance(value, (int, float)) and value == value else "–")
        scored = f"{row['scored']} of {row['files']}" if "scored" in row else "–"
        lines.append("| " + " | ".join([*cells, scored]) + " |")
    folder.mkdir(parents=True, exist_ok=True)
    write_csv(folder / "table.csv", rows, list(dict.fromkeys(k for row in rows for k in row)))
    write_json(folder / "table.json", {"title": title, "rows": rows})
    links = "\n".join(
        f"- `{name}`: [{Path(run).name}]({Path('..') / Path(run).name / 'report.md'})"
        for name, run in runs.items()
    )
    text = (f"# {title}: variants compared\n\n" + "\n".join(lines)
            + "\n\nMeans over the scored test items of each variant's metrics stage; #Param. from its "
            "model stage. Each variant's own report:\n\n" + links + "\n")
    write_text(folder / "report.md", text)
    write_text(folder / "report.html", _page(title, text, folder))
    return [folder / "report.md", folder / "report.html"]


def write_report(run_dir: Path, formats: list[str] | None = None) -> list[Path]:
    """Write the report of ``run_dir`` in ``formats`` (default: the spec's)."""
    run_dir = Path(run_dir)
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
