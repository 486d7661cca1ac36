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

__all__ = ["write_report", "render_markdown"]

_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")


def _rebase_links(section: str, stage_folder: str) -> str:
    """Make a stage section's relative image links relative to the run directory."""

    def rebase(match: re.Match) -> str:
        alt, target = match.groups()
        if re.match(r"^[a-z]+:", target) or target.startswith("/"):
            return match.group(0)
        return f"![{alt}]({stage_folder}/{target})"

    return _IMAGE.sub(rebase, section)


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
        if section.is_file():
            text = _rebase_links(section.read_text(encoding="utf-8"), f"stages/{stage['name']}")
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
        body = markdown.markdown(text, extensions=["tables", "fenced_code"])
        title = html.escape(record["name"])
        page = (
            f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{title}</title>"
            f"<style>{_STYLE}</style></head><body>\n{_embed_images(body, run_dir)}\n</body></html>\n"
        )
        write_text(run_dir / "report.html", page)
        written.append(run_dir / "report.html")
    return written
