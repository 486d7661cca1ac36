"""``gamm``: the statistic that fits Beguš & Zhou's GAMM to a probe's tidy table, one
fit per layer, with the backend the spec names."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import Field

from wavelens import (
    Contribution,
    StageContext,
    StageError,
    Statistic,
    hookimpl,
    write_csv,
    write_json,
)

from .backends import able, backend_named
from .model import AUTO_BACKEND, BACKENDS_POINT, GammParams, assemble, prepare
from .output import contrasts_markdown, layer_contrasts, markdown_tables, plot, plot_layers, plot_raw, save


class GammStatisticParams(GammParams):
    table: Literal["feature_maps", "intervals"] = Field(
        "feature_maps", description="which probe table: the averaged series, or the phone intervals"
    )


def read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise StageError(f"{path} does not exist")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix in (".csv", ".tsv"):
        return pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")
    raise StageError(f"{path}: a table must be .csv, .tsv or .parquet")


class Gamm(Statistic):
    def __init__(self, params: GammStatisticParams):
        self.params = params

    def run(self, ctx: StageContext) -> None:
        probes = ctx.upstream("probe")
        found = []
        for probe in probes:
            for suffix in (".parquet", ".csv"):
                candidate = probe.workdir / f"{self.params.table}{suffix}"
                if candidate.is_file():
                    found.append(candidate)
                    break
        if not found:
            raise StageError(
                f"no probe stage wrote a {self.params.table} table "
                f"(probes: {', '.join(p.stage for p in probes) or 'none'})"
            )
        if len(found) > 1:
            ctx.log.info("gamm: %d probe tables; fitting the first, %s", len(found), found[0])
        self.fit_table(found[0], ctx)

    def fit_table(self, table: Path, ctx: StageContext) -> None:
        frame, notes = _named_columns(read_table(Path(table)), self.params)
        params = self.params
        if params.layer_column in frame.columns:
            layers = params.layers or list(dict.fromkeys(frame[params.layer_column].astype(str)))
            unknown = sorted(set(layers) - set(frame[params.layer_column].astype(str)))
            if unknown:
                raise StageError(f"layers {unknown} are not in the table's {params.layer_column} column")
        else:  # one model's table, as R users keep them: the whole table is one fit
            if params.layers:
                notes.append(f"the table has no {params.layer_column!r} column, so it is fitted whole; "
                             f"the spec's layers ({', '.join(params.layers)}) choose among a probe "
                             "table's layers")
            layers = [None]
        for note in notes:
            ctx.log.info("gamm: %s", note)
        if params.backend == AUTO_BACKEND:
            chosen = "mgcv" if backend_named("mgcv").available() is None else "native"
            ctx.log.info("gamm: backend auto → %s", chosen)
            params = params.model_copy(update={"backend": chosen})
        backend = backend_named(params.backend)
        missing = backend.available()
        if missing:
            raise StageError(f"the {params.backend} backend cannot run here: {missing}")
        random, rho, approximations = self._plan(backend)
        sections = [
            f"GAMM ({params.backend}) on {Path(table).name}: "
            f"{params.response} ~ {params.factor} + smooths of {params.time}"
        ]
        summary: dict[str, Any] = {"backend": params.backend, "layers": {}}
        results: dict[str, dict[str, Any]] = {}
        for layer in ctx.progress(layers, total=len(layers), description="GAMM fits"):
            rows = frame if layer is None else frame[frame[params.layer_column].astype(str) == layer]
            prepared = prepare(rows, params)
            ctx.log.info(
                "gamm%s: %d rows, %d tokens, %d levels",
                f" {layer}" if layer else "",
                len(prepared.data),
                prepared.data["token"].nunique(),
                len(prepared.levels),
            )
            fit = backend.fit(prepared, params, rho, random, ctx.log)
            result = assemble(
                fit,
                prepared,
                params,
                {**backend.capabilities(), "random_smooth_used": random},
                approximations,
                layer,
                rho,
            )
            folder = ctx.workdir if layer is None else ctx.workdir / _safe(layer)
            save(result, folder)
            figures = [plot_raw(prepared.data, folder, params.response, params.time, params.factor,
                                f"{layer or 'table'}: raw values by {params.factor}")]
            figures += plot(result, folder, f"{layer or ''} {params.backend}".strip())
            results[layer or "all"] = result
            summary["layers"][layer or "all"] = {
                "rho": result["meta"]["rho"],
                "n_tokens": result["meta"]["n_tokens"],
                "significant": {f"{i['a']}-{i['b']}": i["intervals"] for i in result["intervals"]},
            }
            prefix = "" if layer is None else f"{_safe(layer)}/"
            sections.append(self._section(result, layer, prefix, figures))
        if len(results) > 1:
            sections.insert(1, self._across_layers(results, ctx.workdir))
        if notes:
            sections.insert(1, "\n".join(f"- **note:** {note}" for note in notes))
        write_json(ctx.workdir / "summary.json", summary, sort_keys=False)
        ctx.write_report("\n\n".join(sections))

    def _across_layers(self, results: dict[str, dict[str, Any]], workdir: Path) -> str:
        """The contrast at every layer side by side (the paper's [s]/[ʃ] analysis and
        its Figure 3, right): level and shape differences per layer, and one figure."""
        rows = layer_contrasts(results)
        write_csv(workdir / "layers.csv", rows)
        figure = plot_layers(results, workdir)
        first = next(iter(results.values()))["meta"]
        caption = (
            f"*Predicted {first['response']} by {first['factor']} at each of {len(results)} layers "
            f"({first['backend']}, {first['n_tokens']} tokens, random smooths excluded, "
            f"{first['ci']:g}·SE pointwise bands; red: a difference band excludes 0), "
            "as in Beguš & Zhou's Figure 3 (right).*"
        )
        return "\n".join([
            "### across layers",
            "Level difference: the level's parametric term; shape difference: its difference "
            "smooth (p < 0.05 counts as a difference). Also in `layers.csv`.",
            "",
            contrasts_markdown(rows),
            "",
            f"![{figure}]({figure})",
            "",
            caption,
        ])

    def _plan(self, backend) -> tuple[bool, float | str, list[str]]:
        """What to fit, given what the backend can do and what the spec accepts."""
        params = self.params
        random, rho, approximations = params.random_smooths, params.rho, []
        for wanted, feature, what in (
            (random, "random_smooth", "random smooths"),
            (rho != 0, "ar1", "an AR1 correction"),
        ):
            if wanted and not getattr(backend, feature):
                if not params.accept_approximation:
                    raise StageError(
                        f"the {backend.name} backend cannot fit {what}; use backend "
                        f"{' or '.join(able(feature))}, or set accept_approximation: true to fit "
                        f"without {what} (the result is then flagged)"
                    )
                approximations.append(f"fitted without {what}: {backend.name} cannot fit them")
                if feature == "random_smooth":
                    random = False
                else:
                    rho = 0
        if backend.fixed_only:
            approximations.append(
                "the fixed part only: bands and p-values ignore the correlation "
                "within tokens and are anti-conservative"
            )
        return random, rho, approximations

    def _section(self, result: dict[str, Any], layer: str | None, prefix: str, figures: list[str]) -> str:
        meta = result["meta"]
        lines = [
            f"### {layer or 'table'}" if layer else "### fit",
            f"`{meta['formula']}`; {meta['backend']} ({meta['version']}), {meta['method']}; "
            f"AR1 rho = {meta['rho']:.3f} ({meta['rho_source']}); {meta['n_obs']} rows, "
            f"{meta['n_tokens']} tokens; {meta['fit_seconds']:.1f} s.",
        ]
        for note in meta["notes"] + meta["approximations"]:
            lines.append(f"- **note:** {note}")
        for warning in meta.get("warnings") or []:
            lines.append(f"- **{meta['backend']} warned:** {warning}")
        lines.append("")
        lines.append(markdown_tables(result))
        significant = [f"{i['a']} − {i['b']}: {_spans(i['intervals'])}" for i in result["intervals"]]
        if significant:
            lines.append("\nWhere the difference band excludes 0: " + "; ".join(significant) + ".")
        simultaneous = [f"{i['a']} − {i['b']}: {_spans(i['sim_intervals'])}"
                        for i in result["intervals"] if "sim_intervals" in i]
        if simultaneous:
            lines.append("\nWhere the simultaneous band excludes 0: " + "; ".join(simultaneous) + ".")
        for name in figures:
            lines.append(f"\n![{name}]({prefix}{name})\n\n{_caption(name, meta)}")
        return "\n".join(lines)


def _spans(intervals: list[list[float]]) -> str:
    return ", ".join(f"{start:.3g}–{end:.3g}" for start, end in intervals) or "none"


def _caption(figure: str, meta: dict[str, Any]) -> str:
    """What a figure shows and what was run to make it."""
    where = f"{meta['layer']}: " if meta.get("layer") else ""
    fit = (f"{meta['backend']} {meta['version']}, {meta['method']}, AR1 rho = {meta['rho']:.3f}, "
           f"{meta['n_tokens']} tokens")
    dashed = "; dashed: simultaneous bands (itsadug's sim.ci)" if meta.get("band", "").startswith(
        "pointwise and") else ""
    if figure == "raw.png":
        return (f"*{where}raw {meta['response']} of every token against {meta['time']} "
                f"(points; {meta['n_tokens']} tokens, {meta['n_obs']} values), with each "
                f"{meta['factor']}'s mean (lines); as Beguš & Zhou's Figure 3 (left).*")
    if figure == "curves.png":
        return (f"*{where}GAMM-predicted {meta['response']} per {meta['factor']} ({fit}); "
                f"random smooths excluded, {meta['ci']:g}·SE pointwise bands{dashed}; as Beguš & "
                "Zhou's Figure 3 (middle) and Figure 4 (top).*")
    if figure == "differences.png":
        return (f"*{where}difference curves between {meta['factor']} levels ({fit}), "
                f"{meta['ci']:g}·SE bands{dashed}; red: where the pointwise band excludes 0; as "
                "Beguš & Zhou's Figure 4 (bottom).*")
    return ""


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)



# The columns of the GAMM tables people keep for mgcv (Beguš's R scripts: Value,
# Sample, Word, UniqueWord), found when the spec's names are absent.
TOKEN_ALIASES = ("uniqueword", "unique_word", "item")


def _named_columns(frame: pd.DataFrame, params: GammParams) -> tuple[pd.DataFrame, list[str]]:
    """``frame`` with the spec's response, factor, time and token columns found under
    another capitalisation (``Value`` for ``value``), or the token under an mgcv-style
    name (``UniqueWord``); and a note for each column so taken."""
    notes, renames = [], {}
    by_lower = {str(column).lower(): column for column in frame.columns}
    for wanted in (params.response, params.factor, params.time, params.token):
        if wanted in frame.columns:
            continue
        candidates = [wanted.lower()] + (list(TOKEN_ALIASES) if wanted == params.token else [])
        found = next((by_lower[c] for c in candidates if c in by_lower and by_lower[c] not in renames), None)
        if found is not None:
            renames[found] = wanted
            notes.append(f"the column {found!r} is taken as {wanted!r}")
    return frame.rename(columns=renames), notes

@hookimpl
def wavelens_statistics():
    return [
        Contribution(
            "gamm",
            GammStatisticParams,
            "GAMM of probe curves (Beguš & Zhou): word terms, smooths, difference "
            "smooths, random smooths, AR1; backends mgcv, native, mssm, pygam, statsmodels",
            Gamm,
        )
    ]


@hookimpl
def wavelens_extension_points():
    return [BACKENDS_POINT]
