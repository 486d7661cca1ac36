"""Writing a GAMM result: JSON plus CSV tables, mgcv's printed layout (the paper's
Table 1), and the paper's plots (Figure 3 middle: curves with bands; Figure 4:
difference curves with the significant regions shaded)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wavelens import save_figure, write_csv, write_json


def _p_text(p: float | None) -> str:
    if p is None:
        return "–"
    return "< 0.0001" if p < 1e-4 else f"{p:.4f}"


def _num(value: float | None, digits: int = 4) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _general(value: Any) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.5g}"


def footer(result: dict[str, Any]) -> list[str]:
    """The two lines mgcv's summary prints under the tables: R² (adjusted where the
    backend gives it), deviance explained, the smoothing criterion, scale and n."""
    stats, meta = result.get("fit_stats", {}), result["meta"]
    r_sq = "R-sq.(adj)" if stats.get("r_sq_adjusted") else "R-sq."
    explained = stats.get("dev_expl")
    explained_text = "–" if explained is None else f"{100 * explained:.1f}%"
    criterion = stats.get("criterion") or "criterion"
    return [f"{r_sq} = {_general(stats.get('r_sq'))}   Deviance explained = {explained_text}",
            f"{criterion} = {_general(stats.get('criterion_value'))}   Scale est. = "
            f"{_general(stats.get('scale'))}   n = {meta['n_obs']}"]


def table_rows(result: dict[str, Any]) -> tuple[list[list[str]], list[list[str]]]:
    parametric = [
        [r["term"], _num(r["estimate"]), _num(r["se"]), _num(r["stat"]), _p_text(r["p"])]
        for r in result["parametric"]
    ]
    smooths = [
        [r["term"], _num(r["edf"]), _num(r["ref_df"]), _num(r["stat"]), _p_text(r["p"])]
        for r in result["smooths"]
    ]
    return parametric, smooths


def format_table(result: dict[str, Any]) -> str:
    """Plain text in the layout of mgcv's summary and the paper's Table 1."""
    parametric, smooths = table_rows(result)
    stat_p = {r["stat_type"] for r in result["parametric"]} - {None}
    stat_s = {r["stat_type"] for r in result["smooths"]} - {None}
    head_p = [
        "A. parametric coefficients",
        "Estimate",
        "Std. Error",
        f"{'/'.join(sorted(stat_p)) or 't'}-value",
        "p-value",
    ]
    head_s = ["B. smooth terms", "edf", "Ref.df", f"{'/'.join(sorted(stat_s)) or 'F'}-value", "p-value"]
    width = max(len(row[0]) for row in [head_p, head_s, *parametric, *smooths]) + 2
    lines = []
    for head, rows in ((head_p, parametric), (head_s, smooths)):
        lines.append(head[0].ljust(width) + "".join(h.rjust(12) for h in head[1:]))
        lines += [row[0].ljust(width) + "".join(c.rjust(12) for c in row[1:]) for row in rows]
    meta = result["meta"]
    lines.append("")
    lines += footer(result)
    lines.append(
        f"{meta['backend']} ({meta['version']}); {meta['method']}; rho = {meta['rho']:.3f}; "
        f"n = {meta['n_obs']} ({meta['n_tokens']} tokens)"
    )
    return "\n".join(lines)


def markdown_tables(result: dict[str, Any]) -> str:
    parametric, smooths = table_rows(result)
    out = [
        "| A. parametric coefficients | Estimate | Std. Error | t-value | p-value |",
        "| --- | --- | --- | --- | --- |",
    ]
    out += ["| " + " | ".join(row) + " |" for row in parametric]
    stat = {r["stat_type"] for r in result["smooths"]} - {None}
    out += [
        "",
        f"| B. smooth terms | edf | Ref.df | {'/'.join(sorted(stat)) or 'F'}-value | p-value |",
        "| --- | --- | --- | --- | --- |",
    ]
    out += ["| " + " | ".join(row) + " |" for row in smooths]
    out += ["", "  \n".join(footer(result))]
    return "\n".join(out)


def save(result: dict[str, Any], folder: Path) -> None:
    """result.json, parametric.csv, smooths.csv, curves.csv, differences.csv,
    intervals.csv and table.txt."""
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "result.json", result, sort_keys=False)
    for name in ("parametric", "smooths"):
        write_csv(folder / f"{name}.csv", result[name])
    for name in ("curves", "differences"):
        frame = pd.DataFrame(result[name])
        write_csv(folder / f"{name}.csv", frame.to_dict("records"), list(frame.columns))
    write_csv(
        folder / "intervals.csv",
        [
            {"a": item["a"], "b": item["b"], "start": start, "end": end}
            for item in result["intervals"]
            for start, end in item["intervals"]
        ],
        fields=["a", "b", "start", "end"],
    )
    (folder / "table.txt").write_text(format_table(result) + "\n")


def plot(result: dict[str, Any], folder: Path, title: str = "") -> list[str]:
    """curves.png (Figure 3 middle) and differences.png (Figure 4); returns the names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meta = result["meta"]
    curves = pd.DataFrame(result["curves"])
    figure, axis = plt.subplots(figsize=(7, 4))
    for level, rows in curves.groupby("level", sort=False):
        (line,) = axis.plot(rows["time"], rows["fit"], label=level, linewidth=1.4)
        axis.fill_between(rows["time"], rows["lower"], rows["upper"], color=line.get_color(), alpha=0.15)
        if "sim_lower" in rows:  # the simultaneous band, dashed
            for edge in ("sim_lower", "sim_upper"):
                axis.plot(rows["time"], rows[edge], color=line.get_color(), linewidth=0.7, linestyle="--")
    axis.set_xlabel(meta["time"])
    axis.set_ylabel("predicted value")
    axis.set_title(
        title or f"GAMM curves ({meta['backend']}), random smooths excluded, {meta['ci']:g}·SE bands"
        + (", dashed: simultaneous" if "sim_lower" in curves else ""),
        fontsize=9,
    )
    axis.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    save_figure(figure, folder / "curves.png", dpi=120)
    names = ["curves.png"]
    differences = pd.DataFrame(result["differences"])
    if len(differences):
        groups = list(differences.groupby(["a", "b"], sort=False))
        columns = min(4, len(groups))
        rows_n = math.ceil(len(groups) / columns)
        figure, axes = plt.subplots(rows_n, columns, figsize=(3.2 * columns, 2.4 * rows_n), squeeze=False)
        for axis, ((a, b), rows) in zip(axes.flat, groups, strict=False):
            axis.plot(rows["time"], rows["diff"], color="black", linewidth=1.2)
            axis.fill_between(rows["time"], rows["lower"], rows["upper"], color="grey", alpha=0.3)
            if "sim_lower" in rows:  # the simultaneous band, dashed
                for edge in ("sim_lower", "sim_upper"):
                    axis.plot(rows["time"], rows[edge], color="black", linewidth=0.7, linestyle="--")
            axis.axhline(0, color="black", linewidth=0.6, linestyle=":")
            for item in result["intervals"]:
                if item["a"] == a and item["b"] == b:
                    for start, end in item["intervals"]:
                        axis.axvspan(start, end, color="red", alpha=0.15)
            axis.set_title(f"{a} − {b}", fontsize=9)
        for axis in list(axes.flat)[len(groups) :]:
            axis.axis("off")
        figure.suptitle("difference curves; red: band excludes 0", fontsize=9)
        figure.tight_layout()
        save_figure(figure, folder / "differences.png", dpi=120)
        names.append("differences.png")
    return names


def plot_raw(data: pd.DataFrame, folder: Path, response: str, time: str, factor: str,
             title: str = "") -> str:
    """raw.png (the paper's Figure 3, left): every token's values, coloured by level,
    with each level's mean over tokens drawn over them. ``data`` is the prepared
    table (columns ``y, level, time, token``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    for index, (level, rows) in enumerate(data.groupby("level", sort=False)):
        colour = f"C{index % 10}"
        jitter = (np.random.default_rng(index).random(len(rows)) - 0.5) * 0.3 * _step(rows["time"])
        axis.scatter(rows["time"] + jitter, rows["y"], s=5, color=colour, alpha=0.35, linewidths=0)
        means = rows.groupby("time")["y"].mean()
        axis.plot(means.index, means.values, color=colour, linewidth=1.6, label=f"{level} (mean)")
    low, high = np.percentile(data["y"], [0.5, 99.5])
    margin = 0.05 * (high - low or 1.0)
    axis.set_ylim(low - margin, high + margin)
    axis.set_xlabel(time)
    axis.set_ylabel(response)
    axis.set_title(title or f"raw values by {factor}", fontsize=9)
    axis.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    save_figure(figure, folder / "raw.png", dpi=120)
    return "raw.png"


def _step(times: pd.Series) -> float:
    values = np.unique(times)
    return float(np.min(np.diff(values))) if len(values) > 1 else 1.0


def layer_contrasts(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per layer and non-reference level, the two tests of the paper's [s]/[ʃ] analysis:
    a **level** difference (the level's parametric term: estimate, t, p) and a **shape**
    difference (its difference smooth: edf, F, p), with where the difference curve's
    band excludes 0."""
    rows = []
    for layer, result in results.items():
        levels = result["meta"]["levels"]
        parametric = [r for r in result["parametric"] if r["term"] != "(Intercept)"]
        shapes = [r for r in result["smooths"] if r.get("kind") == "difference"]
        intervals = {(i["a"], i["b"]): i["intervals"] for i in result["intervals"]}
        for index, level in enumerate(levels[1:]):
            level_row = parametric[index] if index < len(parametric) else {}
            shape_row = shapes[index] if index < len(shapes) else {}
            spans = intervals.get((level, levels[0]), [])
            rows.append({
                "layer": layer, "contrast": f"{level} − {levels[0]}",
                "level_estimate": level_row.get("estimate"), "level_t": level_row.get("stat"),
                "level_p": level_row.get("p"), "shape_edf": shape_row.get("edf"),
                "shape_F": shape_row.get("stat"), "shape_p": shape_row.get("p"),
                "significant_regions": "; ".join(f"{s:.3g}–{e:.3g}" for s, e in spans) or "none",
            })
    return rows


def contrasts_markdown(rows: list[dict[str, Any]], alpha: float = 0.05) -> str:
    def verdict(p: float | None) -> str:
        return "–" if p is None else ("yes" if p < alpha else "no")

    lines = [
        "| layer | contrast | level: estimate | t | p | differs | shape: edf | F | p | differs "
        "| band excludes 0 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['layer']} | {r['contrast']} | {_num(r['level_estimate'])} | {_num(r['level_t'], 2)} "
            f"| {_p_text(r['level_p'])} | {verdict(r['level_p'])} | {_num(r['shape_edf'], 2)} "
            f"| {_num(r['shape_F'], 2)} | {_p_text(r['shape_p'])} | {verdict(r['shape_p'])} "
            f"| {r['significant_regions']} |"
        )
    return "\n".join(lines)


def plot_layers(results: dict[str, dict[str, Any]], folder: Path) -> str:
    """layers.png (the paper's Figure 3, right): one panel per layer with each level's
    predicted curve and band; the regions where a difference band excludes 0 shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(results)
    columns = min(4, count)
    rows_n = math.ceil(count / columns)
    figure, axes = plt.subplots(rows_n, columns, figsize=(3.2 * columns, 2.6 * rows_n), squeeze=False)
    for axis, (layer, result) in zip(axes.flat, results.items(), strict=False):
        curves = pd.DataFrame(result["curves"])
        for index, (level, rows) in enumerate(curves.groupby("level", sort=False)):
            colour = f"C{index % 10}"
            axis.plot(rows["time"], rows["fit"], color=colour, linewidth=1.3, label=level)
            axis.fill_between(rows["time"], rows["lower"], rows["upper"], color=colour, alpha=0.15)
        for item in result["intervals"]:
            for start, end in item["intervals"]:
                axis.axvspan(start, end, color="red", alpha=0.08)
        axis.set_title(layer, fontsize=9)
        axis.set_xlabel(result["meta"]["time"], fontsize=8)
        axis.tick_params(labelsize=7)
    axes.flat[0].legend(fontsize=7)
    for axis in list(axes.flat)[count:]:
        axis.axis("off")
    figure.tight_layout()
    save_figure(figure, folder / "layers.png", dpi=120)
    return "layers.png"
