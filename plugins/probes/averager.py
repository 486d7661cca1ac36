"""``feature_map_average`` (and ``feature_map_l2``, ``feature_map_max``): the probe
stage that records averaged feature maps of a run's network over a data split.

Writes into its stage folder:

- ``layers.json``: the resolved layer names, reducer, post-activations and each
  layer's length;
- ``feature_maps.parquet`` (or ``.csv``): the long table a GAMM needs, one row per
  token × layer × layer sample: ``token, word, label, speaker, layer, sample,
  time_s, value``;
- ``upsampled.npz`` (``upsample: true``): each layer's series interpolated to the
  input length;
- ``intervals.parquet``: for each requested phone (e.g. the [s] of *ask*), the
  layer samples inside it, with normalised time and a fixed grid of points;
- ``figures/<token>.png``: the paper's Figure 2 for example tokens.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd
import torch
from pydantic import Field, field_validator, model_serializer

from wavelens import (
    Contribution,
    Params,
    Probe,
    StageContext,
    StageError,
    WavelensError,
    atomic_write,
    collate_items,
    hookimpl,
    resolve_layers,
    save_figure,
    write_json,
)

from .feature_maps import FeatureMapRecorder, by_layer, layout_for, parse_layout
from .series import interval_indices, time_normalised, upsample


class IntervalRequest(Params):
    phone: str = Field(description="phone label to cut out (as in the annotations, e.g. s, sh)")
    word: str | None = Field(None, description="only in tokens of this word (e.g. ask)")
    points: int = Field(20, ge=2, description="points of the normalised-time grid")


class FeatureMapParams(Params):
    layers: list[str] = Field(min_length=1, description="layer names, globs (conv*) or type:Conv1d")
    post_activation: dict[str, str] = Field(
        {}, description="activation applied to a hooked layer's output, keyed by layer names, globs or "
        "type:Class, e.g. {'conv*': 'leaky_relu(0.2)'}"
    )
    time_axis: int = Field(2, ge=1, description="time axis of the layer outputs ((B, C, T) or (B, C, T, F)) "
                           "where no layout is given")
    layout: dict[str, str] = Field(
        {}, description="the axes of layers' outputs, keyed by layer names, globs or type:Class: B batch, "
        "C channels, T time, F frequency, e.g. {'encoder.*': 'BTC'} for transformer layers (default: what "
        "time_axis implies, BCT or BCTF)")
    lengths: Literal["auto", "fixed", "variable"] = Field(
        "auto", description="items of different lengths (variable): each utterance gives the frames that "
        "depend on it alone, at its own length (docs/probing-any-cnn.md); auto: variable when the split's "
        "items differ in length")
    maps: bool = Field(False, description="also keep each 2-D layer's (time, frequency) map, averaged over "
                       "channels only (maps.parquet, a figure per item)")
    split: str = Field("test", description="the data split to probe")
    batch_size: int = Field(32, ge=1, description="tokens per forward pass")
    max_items: int | None = Field(None, ge=1, description="probe only the first this many items")
    table_format: Literal["parquet", "csv"] = Field("parquet", description="format of the long table")
    upsample: bool = Field(False, description="also write each series interpolated to the input length")
    intervals: list[IntervalRequest] = Field([], description="phone intervals to extract")
    figures_per_word: int = Field(1, ge=0, description="Figure-2 plots per word")

    @field_validator("layout")
    @classmethod
    def _layouts(cls, value: dict[str, str]) -> dict[str, str]:
        for text in value.values():
            parse_layout(text)
        return value

    @model_serializer(mode="wrap")
    def _without_unused(self, handler: Any) -> dict[str, Any]:
        # layout, lengths and maps came after probe stages were cached and shipped: at
        # their defaults they stay out of the dump, and so out of the stage keys.
        data = handler(self)
        for name, default in (("layout", {}), ("lengths", "auto"), ("maps", False)):
            if data.get(name) == default:
                data.pop(name, None)
        return data


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch items, keeping each one's own number of samples before padding."""
    batch = collate_items(items)
    batch["_samples"] = [int(item["audio"].shape[-1]) for item in items]
    return batch


LONGER = 4096  # how much longer the second dry run is: each layer's stride is Δsamples / Δframes


class Probed(NamedTuple):
    """What a probe recorded: per layer, one series per item (at the item's own
    length), the input samples per layer frame, and (with maps) the 2-D layers'
    (time, frequency) maps per item."""

    series: dict[str, list[np.ndarray]]
    stride: dict[str, float]
    maps: dict[str, list[np.ndarray]]
    samples: list[int]  # each item's own number of input samples


class FeatureMapAverage(Probe):
    reducer = "mean"

    def __init__(self, params: FeatureMapParams):
        self.params = params

    def check_network(self, network: torch.nn.Module) -> list[tuple[str, str]]:
        """Problems with this probe's layer choice in ``network``, found without data:
        ``(param, message)`` (``wavelens validate`` reports them)."""
        try:
            layers = resolve_layers(network, self.params.layers)
        except WavelensError as exc:
            return [("layers", str(exc))]
        modules = dict(network.named_modules())
        problems = []
        for param in ("post_activation", "layout"):
            for pattern, value in getattr(self.params, param).items():
                try:
                    by_layer({pattern: value}, layers, modules, param)
                except StageError as exc:
                    problems.append((f"{param}.{pattern}", str(exc)))
        return problems

    def run(self, ctx: StageContext) -> None:
        params = self.params
        network = ctx.network()
        splits = ctx.dataset()
        if params.split not in splits:
            raise StageError(f"split {params.split!r} is not in the data (it has {', '.join(splits)})")
        split = splits[params.split]
        count = len(split) if params.max_items is None else min(params.max_items, len(split))
        if count == 0:
            raise StageError(f"the split {params.split!r} has no items to probe")
        subset = torch.utils.data.Subset(split, range(count))
        variable = params.lengths == "variable"
        if params.lengths == "auto":  # one look at every item: do they differ in length?
            variable = len({int(subset[i]["audio"].shape[-1]) for i in range(count)}) > 1
        recorder = FeatureMapRecorder(network, params.layers, self.reducer, params.time_axis,
                                      params.post_activation, params.layout, params.maps)
        ctx.log.info("probing %d layers (%s, %s lengths): %s", len(recorder.layers), self.reducer,
                     "variable" if variable else "fixed", ", ".join(recorder.layers))
        items: list[dict[str, Any]] = []
        outputs: list[torch.Tensor] = []
        audio_rows: list[np.ndarray] = []
        device = ctx.placement.device
        with recorder, torch.no_grad(), ctx.placement.autocast():
            first = subset[0]["audio"]
            strides = self._strides(network, recorder, first, device, required=variable)
            tail = 2 * math.ceil(max(strides.values())) if variable else 0
            probed = Probed({name: [] for name in recorder.layers}, strides,
                            {name: [] for name in recorder.layers}, [])
            loader = torch.utils.data.DataLoader(subset, batch_size=params.batch_size, collate_fn=_collate)
            for batch in ctx.progress(loader, total=len(loader), description="probing"):
                audio = batch["audio"]
                samples = batch["_samples"]
                if not variable and len({*samples, first.shape[-1]}) > 1:
                    raise StageError(f"the items differ in length ({min(samples)} to {max(samples)} samples "
                                     "in one batch) but lengths is fixed: padding would enter the table; "
                                     "use lengths: auto (or variable) to give each item at its own length")
                if variable:  # NaN past each item's end: what depends on it is not the item's
                    audio = torch.cat([audio, audio.new_zeros(*audio.shape[:-1], tail)], dim=-1)
                    for row, n in enumerate(samples):
                        audio[row, ..., n:] = math.nan
                output = network(audio.to(device))
                if not variable and isinstance(output, torch.Tensor) and output.dim() == 2:
                    outputs.append(output.float().cpu())
                self._take(recorder, probed, samples, variable)
                for row, n in enumerate(samples):
                    first_channel = batch["audio"][row].reshape(-1, batch["audio"].shape[-1])[0]
                    audio_rows.append(first_channel[:n].numpy())
                    items.append({key: (value[row].item() if isinstance(value, torch.Tensor)
                                        and value.dim() == 1 else value[row])
                                  for key, value in batch.items() if key not in ("audio", "_samples")})
        logits = torch.cat(outputs) if outputs else None
        input_length = max(probed.samples)
        if not variable:  # every item the same length: each layer frame covers N / T samples
            probed.stride.update({name: input_length / len(values[0])
                                  for name, values in probed.series.items()})
        rate = int(items[0].get("sample_rate", 16000))
        frames = {name: sorted({len(v) for v in values}) for name, values in probed.series.items()}
        write_json(ctx.workdir / "layers.json",
                   {"layers": {name: (lengths[0] if len(lengths) == 1 else [lengths[0], lengths[-1]])
                               for name, lengths in frames.items()},
                    "samples_per_frame": probed.stride, "lengths": "variable" if variable else "fixed",
                    "reducer": self.reducer, "selectors": params.layers, "layout": params.layout,
                    "post_activation": params.post_activation, "input_length": input_length,
                    "sample_rate": rate, "items": len(items)}, sort_keys=False)
        self._write_table(ctx, probed, items, rate)
        if params.upsample:
            with atomic_write(ctx.workdir / "upsampled.npz", "wb") as handle:
                np.savez_compressed(handle, **{name: self._on_input(probed, name, input_length)
                                              for name in probed.series})
        notes = self._write_intervals(ctx, probed, items) if params.intervals else []
        if params.maps:
            notes += self._write_maps(ctx, probed, items, rate)
        figures = self._figures(ctx, probed, items, audio_rows, logits, rate)
        lines = [f"Averaged feature maps ({self.reducer} over channels) of {len(items)} "
                 f"`{params.split}` items at {len(frames)} layers"
                 + (", each utterance at its own length" if variable else "") + ":", "",
                 "| layer | frames | input samples per frame |", "| --- | --- | --- |"]
        lines += [f"| {name} | {lengths[0] if len(lengths) == 1 else f'{lengths[0]} to {lengths[-1]}'} "
                  f"| {probed.stride[name]:.4g} |" for name, lengths in frames.items()]
        lines += ["", f"Long table: `feature_maps.{params.table_format}`.", *notes, ""]
        if variable:
            lines += ["The items differ in length: each utterance's series holds the frames that depend "
                      "on it alone (frames that reach past its end, into the batch's padding, are left "
                      "out), so it equals probing the utterance by itself; docs/probing-any-cnn.md.", ""]
        reducer = {"mean": "channel mean (Eq. 1)", "l2": "channel L2 norm", "max": "channel maximum"}[
            self.reducer]
        post = ", after " + ", ".join(f"{k}: {v}" for k, v in params.post_activation.items()) if (
            params.post_activation) else ""
        if figures:
            lines += [f"Figures in the layout of Beguš & Zhou's Figure 2, one `{params.split}` item "
                      f"each: the input (top), its averaged feature maps ({reducer}{post}) at each "
                      f"layer above, upsampled to the input's samples by linear interpolation"
                      + (", and the network's output logits (bottom)" if logits is not None else "")
                      + ".", ""]
        for name, path in figures:
            lines += [f"![{name}]({path})", "", f"*Figure 2 layout: {name}, this run's network.*", ""]
        ctx.write_report("\n".join(lines) + "\n")

    def _strides(self, network: torch.nn.Module, recorder: FeatureMapRecorder, example: torch.Tensor,
                 device: torch.device, required: bool) -> dict[str, float]:
        """Input samples per frame of each layer, from two dry runs (zeros, one item)
        ``LONGER`` samples apart; each layer's time axis is checked to be the axis that
        follows the input. With fixed lengths a model that takes one length only
        cannot be run longer: the check is skipped then (``required`` False)."""
        found = []
        for extra in (0, LONGER):
            shape = (1, *example.shape[:-1], example.shape[-1] + extra)
            try:
                network(torch.zeros(shape, dtype=example.dtype, device=device))
            except StageError:
                raise
            except Exception as exc:  # noqa: BLE001 - a model that takes one input length only
                if required:
                    raise StageError(f"the items differ in length, but the network does not take an "
                                     f"input of {shape[-1]} samples ({type(exc).__name__}: {exc}); probe "
                                     "items of one length (lengths: fixed, cut or padded by the "
                                     "dataset)") from exc
                self._drop_last(recorder)
                return {}
            found.append((dict(recorder.shapes), {name: recorder.series[name][-1].shape[1]
                                                  for name in recorder.layers}))
            self._drop_last(recorder)
        (shapes, frames), (longer_shapes, longer_frames) = found
        strides = {}
        for name in recorder.layers:
            grown = [axis for axis, (a, b) in enumerate(zip(shapes[name], longer_shapes[name], strict=True))
                     if a != b]
            layout = recorder.layouts.get(name) or layout_for(shapes[name], recorder.time_axis, name)
            time = layout.index("T")
            if not grown:
                raise StageError(f"layer {name} outputs {shapes[name]} whatever the input's length: it "
                                 "comes after the network pools over time, so it has no time series")
            if grown != [time]:
                raise StageError(
                    f"layer {name}: with an input {LONGER} samples longer its output grows on axis "
                    f"{' and '.join(map(str, grown))} ({shapes[name]} → {longer_shapes[name]}), but its "
                    f"layout {layout} puts time on axis {time}: declare the layout (layout: "
                    f"{{{name!r}: ...}}, e.g. BTC for a transformer layer) or time_axis")
            strides[name] = LONGER / (longer_frames[name] - frames[name])
        return strides

    @staticmethod
    def _drop_last(recorder: FeatureMapRecorder) -> None:
        for store in (recorder.series, recorder.maps):
            for parts in store.values():
                if parts:
                    parts.pop()

    def _take(self, recorder: FeatureMapRecorder, probed: Probed, samples: list[int], variable: bool) -> None:
        """Move the last batch's series (and maps) into per-item arrays, cut to the
        frames that depend on each item alone."""
        for name in recorder.layers:
            values = recorder.series[name].pop()
            maps = recorder.maps[name].pop() if recorder.maps[name] else None
            for row in range(len(samples)):
                series = values[row]
                keep = len(series)
                if variable:
                    finite = torch.isfinite(series)
                    keep = int(finite.long().cumprod(0).sum())
                    if keep == 0:
                        raise StageError(f"layer {name} has no frame that depends on the utterance alone "
                                         "(every frame reaches past its end): the network mixes the "
                                         "whole input before it (normalisation over time, attention, "
                                         "a recurrent layer); probe items of one length instead")
                    if bool(finite[keep:].any()):
                        raise StageError(f"layer {name} has frames after the utterance's end that do not "
                                         "depend on the padding: it does not map time to time in order; "
                                         "probe items of one length instead")
                probed.series[name].append(series[:keep].numpy())
                if maps is not None:
                    probed.maps[name].append(maps[row, :keep].numpy())
        probed.samples.extend(samples)

    @staticmethod
    def _on_input(probed: Probed, name: str, length: int) -> np.ndarray:
        """Each item's series interpolated to the samples it covers, NaN beyond."""
        out = np.full((len(probed.samples), length), np.nan, dtype=np.float32)
        for row, values in enumerate(probed.series[name]):
            covered = min(length, round(len(values) * probed.stride[name]))
            out[row, :covered] = upsample(torch.from_numpy(values)[None], covered)[0].numpy()
        return out

    def _write_table(self, ctx: StageContext, probed: Probed, items: list[dict], rate: int) -> None:
        frames = []
        tokens = [str(item.get("token", item.get("name", i))) for i, item in enumerate(items)]
        for name, per_item in probed.series.items():
            counts = np.array([len(values) for values in per_item])
            index = np.repeat(np.arange(len(items)), counts)
            sample = np.concatenate([np.arange(1, n + 1) for n in counts])
            frames.append(pd.DataFrame({
                "token": np.array(tokens)[index],
                "word": np.array([str(item.get("word", "")) for item in items])[index],
                "label": np.array([item.get("label", -1) for item in items])[index],
                "speaker": np.array([str(item.get("speaker", "")) for item in items])[index],
                "layer": name, "sample": sample,
                "time_s": (sample - 0.5) * probed.stride[name] / rate,
                "value": np.concatenate(per_item),
            }))
        self._write_frame(ctx, "feature_maps", pd.concat(frames, ignore_index=True))

    def _write_maps(self, ctx: StageContext, probed: Probed, items: list[dict], rate: int) -> list[str]:
        """The (time, frequency) maps of the 2-D layers, one row per token × layer ×
        frame × band; the layer column names the band (``LAYER#f03``), so a statistic
        that fits each layer fits each band."""
        rows = []
        for name, per_item in probed.maps.items():
            for index, values in enumerate(per_item):
                frames_n, bands = values.shape
                token = str(items[index].get("token", items[index].get("name", index)))
                sample = np.repeat(np.arange(1, frames_n + 1), bands)
                band = np.tile(np.arange(bands), frames_n)
                rows.append(pd.DataFrame({
                    "token": token, "word": str(items[index].get("word", "")),
                    "label": items[index].get("label", -1), "speaker": str(items[index].get("speaker", "")),
                    "layer": [f"{name}#f{b:02d}" for b in band], "map_layer": name, "band": band,
                    "sample": sample, "time_s": (sample - 0.5) * probed.stride[name] / rate,
                    "value": values.reshape(-1)}))
        if not rows:
            return ["maps: true, but no probed layer has a frequency axis (a layout with F, or a "
                    "4-D output): no maps were kept."]
        self._write_frame(ctx, "maps", pd.concat(rows, ignore_index=True))
        kept = [name for name, per_item in probed.maps.items() if per_item]
        return [f"(Time, frequency) maps of {', '.join(kept)}, averaged over channels only: "
                f"`maps.{self.params.table_format}`; its `layer` column names each band (LAYER#fNN), "
                "so a GAMM fits each band (`wavelens stats fit maps.parquet --spec ...`)."]

    def _write_frame(self, ctx: StageContext, name: str, table: pd.DataFrame) -> None:
        with atomic_write(ctx.workdir / f"{name}.{self.params.table_format}", "wb") as handle:
            if self.params.table_format == "parquet":
                table.to_parquet(handle, index=False)
            else:
                handle.write(table.to_csv(index=False).encode())

    def _write_intervals(self, ctx: StageContext, probed: Probed, items: list[dict]) -> list[str]:
        rows, notes = [], []
        for request in self.params.intervals:
            found = without = too_short = 0
            for index, item in enumerate(items):
                if request.word is not None and item.get("word") != request.word:
                    continue
                phones = item.get("phones")
                if phones is None:
                    without += 1
                    continue
                for start, end, label in phones:
                    if label != request.phone:
                        continue
                    found += 1
                    for name, per_item in probed.series.items():
                        values = per_item[index]
                        span = len(values) * probed.stride[name]  # the samples its frames cover
                        positions = interval_indices(start, end, len(values), span)
                        if len(positions) == 0:
                            too_short += 1
                            continue
                        grid = time_normalised(values[positions], request.points)
                        for point, value in enumerate(grid):
                            rows.append({"token": item.get("token"), "word": item.get("word"),
                                         "phone": label, "layer": name, "point": point,
                                         "time_norm": point / (request.points - 1), "value": value,
                                         "layer_samples": len(positions)})
            where = f" of {request.word}" if request.word else ""
            notes.append(f"Interval [{request.phone}]{where}: {found} found; {without} tokens without "
                         f"phone annotations; {too_short} layer × interval pairs shorter than one "
                         "layer sample were left out.")
        self._write_frame(ctx, "intervals", pd.DataFrame(rows))
        return notes

    def _figures(self, ctx: StageContext, probed: Probed, items: list[dict], audio: list[np.ndarray],
                 logits: torch.Tensor | None, rate: int) -> list[tuple[str, str]]:
        if self.params.figures_per_word == 0:
            return []
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        chosen: dict[str, list[int]] = {}
        for index, item in enumerate(items):
            picks = chosen.setdefault(str(item.get("word", "")), [])
            if len(picks) < self.params.figures_per_word:
                picks.append(index)
        written = []
        for word, indices in chosen.items():
            for index in indices:
                token = str(items[index].get("token", items[index].get("name", index)))
                caption = f"{word}: {token}" if word else token
                t = np.arange(len(audio[index])) / rate
                rows = len(probed.series) + 1 + (logits is not None)
                fig, axes = plt.subplots(rows, 1, figsize=(7, 1.3 * rows), squeeze=False)
                axes = axes[:, 0]
                axes[0].plot(t, audio[index], color="black", linewidth=0.5)
                axes[0].set_title(f"{token} ({word})" if word else token, fontsize=9)
                axes[0].set_ylabel("stimulus", fontsize=8)
                for ax, (name, per_item) in zip(axes[1:], probed.series.items(), strict=False):
                    values = per_item[index]
                    covered = min(len(t), round(len(values) * probed.stride[name]))
                    ax.plot(t[:covered], upsample(torch.from_numpy(values)[None], covered)[0].numpy(),
                            linewidth=0.8)
                    ax.set_ylabel(name, fontsize=7)
                if logits is not None:
                    axes[-1].bar(range(logits.shape[1]), logits[index].numpy())
                    axes[-1].set_ylabel("logits", fontsize=8)
                    axes[-1].set_xlabel("output")
                for ax in axes[:-1 if logits is not None else None]:
                    ax.set_xlim(0, t[-1])
                fig.tight_layout()
                path = f"figures/{_safe(token)}.png"
                save_figure(fig, ctx.workdir / path, dpi=90)
                written.append((caption, path))
                maps = {name: per_item[index] for name, per_item in probed.maps.items() if per_item}
                if maps:
                    fig, axes = plt.subplots(len(maps), 1, figsize=(7, 1.8 * len(maps)), squeeze=False)
                    for ax, (name, values) in zip(axes[:, 0], maps.items(), strict=True):
                        end = len(values) * probed.stride[name] / rate
                        ax.imshow(values.T, origin="lower", aspect="auto",
                                  extent=(0, end, 0, values.shape[1]))
                        ax.set_ylabel(f"{name}\nband", fontsize=7)
                    axes[-1, 0].set_xlabel("time (s)")
                    axes[0, 0].set_title(f"(time, frequency) maps, channel {self.reducer}: {caption}",
                                         fontsize=9)
                    fig.tight_layout()
                    path = f"figures/{_safe(token)}_maps.png"
                    save_figure(fig, ctx.workdir / path, dpi=90)
                    written.append((f"{caption} (maps)", path))
        return written


class FeatureMapL2(FeatureMapAverage):
    reducer = "l2"


class FeatureMapMax(FeatureMapAverage):
    reducer = "max"


@hookimpl
def wavelens_probes():
    return [
        Contribution("feature_map_average", FeatureMapParams,
                     "Channel-mean feature maps per layer (Beguš & Zhou Eq. 1) of any network",
                     FeatureMapAverage),
        Contribution("feature_map_l2", FeatureMapParams,
                     "Channel L2-norm feature maps per layer of any network", FeatureMapL2),
        Contribution("feature_map_max", FeatureMapParams,
                     "Channel-max feature maps per layer of any network", FeatureMapMax),
    ]
