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

import re
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field

from wavelens import (
    Contribution,
    Params,
    Probe,
    StageContext,
    StageError,
    atomic_write,
    collate_items,
    hookimpl,
    save_figure,
    write_json,
)

from .feature_maps import FeatureMapRecorder
from .series import interval_indices, layer_centres, time_normalised, upsample


class IntervalRequest(Params):
    phone: str = Field(description="phone label to cut out (as in the annotations, e.g. s, sh)")
    word: str | None = Field(None, description="only in tokens of this word (e.g. ask)")
    points: int = Field(20, ge=2, description="points of the normalised-time grid")


class FeatureMapParams(Params):
    layers: list[str] = Field(min_length=1, description="layer names, globs (conv*) or type:Conv1d")
    post_activation: dict[str, str] = Field(
        {}, description="activation applied to a hooked layer's output, e.g. {'conv*': 'leaky_relu(0.2)'}"
    )
    time_axis: int = Field(2, ge=1, description="time axis of the layer outputs ((B, C, T) or (B, C, T, F))")
    split: str = Field("test", description="the data split to probe")
    batch_size: int = Field(32, ge=1, description="tokens per forward pass")
    max_items: int | None = Field(None, ge=1, description="probe only the first this many items")
    table_format: Literal["parquet", "csv"] = Field("parquet", description="format of the long table")
    upsample: bool = Field(False, description="also write each series interpolated to the input length")
    intervals: list[IntervalRequest] = Field([], description="phone intervals to extract")
    figures_per_word: int = Field(1, ge=0, description="Figure-2 plots per word")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


class FeatureMapAverage(Probe):
    reducer = "mean"

    def __init__(self, params: FeatureMapParams):
        self.params = params

    def run(self, ctx: StageContext) -> None:
        params = self.params
        network = ctx.network()
        splits = ctx.dataset()
        if params.split not in splits:
            raise StageError(f"split {params.split!r} is not in the data (it has {', '.join(splits)})")
        split = splits[params.split]
        count = len(split) if params.max_items is None else min(params.max_items, len(split))
        subset = torch.utils.data.Subset(split, range(count))
        loader = torch.utils.data.DataLoader(subset, batch_size=params.batch_size, collate_fn=collate_items)
        recorder = FeatureMapRecorder(network, params.layers, self.reducer, params.time_axis,
                                      params.post_activation)
        ctx.log.info("probing %d layers (%s): %s", len(recorder.layers), self.reducer,
                     ", ".join(recorder.layers))
        items: list[dict[str, Any]] = []
        outputs: list[torch.Tensor] = []
        audio_rows: list[torch.Tensor] = []
        device = ctx.placement.device
        with recorder, torch.no_grad(), ctx.placement.autocast():
            for batch in ctx.progress(loader, total=len(loader), description="probing"):
                audio = batch["audio"]
                output = network(audio.to(device))
                if isinstance(output, torch.Tensor) and output.dim() == 2:
                    outputs.append(output.float().cpu())
                audio_rows.append(audio[:, 0])
                for index in range(len(audio)):
                    items.append({key: (value[index].item() if isinstance(value, torch.Tensor)
                                        and value.dim() == 1 else value[index])
                                  for key, value in batch.items() if key != "audio"})
        series = recorder.collect()
        audio = torch.cat(audio_rows)
        logits = torch.cat(outputs) if outputs else None
        input_length = audio.shape[-1]
        rate = int(items[0].get("sample_rate", 16000)) if items else 16000
        layers = {name: int(values.shape[1]) for name, values in series.items()}
        write_json(ctx.workdir / "layers.json",
                   {"layers": layers, "reducer": self.reducer, "selectors": params.layers,
                    "post_activation": params.post_activation, "input_length": input_length,
                    "sample_rate": rate, "items": len(items)}, sort_keys=False)
        self._write_table(ctx, series, items, input_length, rate)
        if params.upsample:
            with atomic_write(ctx.workdir / "upsampled.npz", "wb") as handle:
                np.savez_compressed(handle, **{name: upsample(values, input_length).numpy()
                                              for name, values in series.items()})
        notes = self._write_intervals(ctx, series, items, input_length) if params.intervals else []
        figures = self._figures(ctx, series, items, audio, logits, rate)
        lines = [f"Averaged feature maps ({self.reducer} over channels) of {len(items)} "
                 f"`{params.split}` items at {len(layers)} layers:", "",
                 "| layer | samples |", "| --- | --- |"]
        lines += [f"| {name} | {length} |" for name, length in layers.items()]
        lines += ["", f"Long table: `feature_maps.{params.table_format}`.", *notes, ""]
        reducer = {"mean": "channel mean (Eq. 1)", "l2": "channel L2 norm", "max": "channel maximum"}[
            self.reducer]
        post = ", after " + ", ".join(f"{k}: {v}" for k, v in params.post_activation.items()) if (
            params.post_activation) else ""
        if figures:
            lines += [f"Figures in the layout of Beguš & Zhou's Figure 2, one `{params.split}` item "
                      f"each: the input (top), its averaged feature maps ({reducer}{post}) at each "
                      f"layer above, upsampled to the input's {input_length} samples by linear "
                      "interpolation"
                      + (", and the network's output logits (bottom)" if logits is not None else "")
                      + ".", ""]
        for name, path in figures:
            lines += [f"![{name}]({path})", "", f"*Figure 2 layout: {name}, this run's network.*", ""]
        ctx.write_report("\n".join(lines) + "\n")

    def _write_table(self, ctx: StageContext, series: dict[str, torch.Tensor], items: list[dict],
                     input_length: int, rate: int) -> None:
        frames = []
        tokens = np.array([str(item.get("token", i)) for i, item in enumerate(items)])
        words = np.array([str(item.get("word", "")) for item in items])
        labels = np.array([item.get("label", -1) for item in items])
        speakers = np.array([str(item.get("speaker", "")) for item in items])
        for name, values in series.items():
            n, length = values.shape
            frames.append(pd.DataFrame({
                "token": np.repeat(tokens, length), "word": np.repeat(words, length),
                "label": np.repeat(labels, length), "speaker": np.repeat(speakers, length),
                "layer": name, "sample": np.tile(np.arange(1, length + 1), n),
                "time_s": np.tile(layer_centres(length, input_length) / rate, n),
                "value": values.numpy().reshape(-1),
            }))
        self._write_frame(ctx, "feature_maps", pd.concat(frames, ignore_index=True))

    def _write_frame(self, ctx: StageContext, name: str, table: pd.DataFrame) -> None:
        with atomic_write(ctx.workdir / f"{name}.{self.params.table_format}", "wb") as handle:
            if self.params.table_format == "parquet":
                table.to_parquet(handle, index=False)
            else:
                handle.write(table.to_csv(index=False).encode())

    def _write_intervals(self, ctx: StageContext, series: dict[str, torch.Tensor], items: list[dict],
                         input_length: int) -> list[str]:
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
                    for name, values in series.items():
                        positions = interval_indices(start, end, values.shape[1], input_length)
                        if len(positions) == 0:
                            too_short += 1
                            continue
                        grid = time_normalised(values[index, positions].numpy(), request.points)
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

    def _figures(self, ctx: StageContext, series: dict[str, torch.Tensor], items: list[dict],
                 audio: torch.Tensor, logits: torch.Tensor | None, rate: int) -> list[tuple[str, str]]:
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
        length = audio.shape[-1]
        t = np.arange(length) / rate
        for word, indices in chosen.items():
            for index in indices:
                rows = len(series) + 1 + (logits is not None)
                fig, axes = plt.subplots(rows, 1, figsize=(7, 1.3 * rows), squeeze=False)
                axes = axes[:, 0]
                axes[0].plot(t, audio[index].numpy(), color="black", linewidth=0.5)
                axes[0].set_title(f"{items[index].get('token', index)} ({word})", fontsize=9)
                axes[0].set_ylabel("stimulus", fontsize=8)
                for ax, (name, values) in zip(axes[1:], series.items(), strict=False):
                    ax.plot(t, upsample(values[index : index + 1], length)[0].numpy(), linewidth=0.8)
                    ax.set_ylabel(name, fontsize=7)
                if logits is not None:
                    axes[-1].bar(range(logits.shape[1]), logits[index].numpy())
                    axes[-1].set_ylabel("logits", fontsize=8)
                    axes[-1].set_xlabel("output")
                for ax in axes[:-1 if logits is not None else None]:
                    ax.set_xlim(0, t[-1])
                fig.tight_layout()
                path = f"figures/{_safe(str(items[index].get('token', index)))}.png"
                save_figure(fig, ctx.workdir / path, dpi=90)
                written.append((f"{word}: {items[index].get('token', index)}", path))
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
