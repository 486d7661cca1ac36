"""Test plugins that record every call, to check what a run recomputes.

Each component appends a line ``<stage> <event>`` to the file named by the
environment variable WAVELENS_TEST_JOURNAL. The model interrupts its own training
(as a SIGINT would) at the step in WAVELENS_TEST_INTERRUPT_AT, once; at the step in
WAVELENS_TEST_WAIT_AT it journals "waiting" and sleeps, for a test to signal it.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import torch
from pydantic import Field
from torch import nn

from wavelens import (
    CheckpointManager,
    Contribution,
    Dataset,
    Metric,
    Model,
    Params,
    Probe,
    Statistic,
    hookimpl,
    write_json,
    write_text,
)


def journal(event: str) -> None:
    path = os.environ.get("WAVELENS_TEST_JOURNAL")
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(event + "\n")


class DataParams(Params):
    n: int = Field(8, ge=1)
    length: int = 64


class CountingData(Dataset):
    def __init__(self, params: DataParams):
        self.params = params

    def prepare(self, ctx):
        journal(f"{ctx.stage} prepare")
        generator = torch.Generator().manual_seed(ctx.seed)
        audio = torch.randn(self.params.n, 1, self.params.length, generator=generator)
        torch.save(audio, ctx.workdir / "audio.pt")

    def load(self, workdir: Path):
        audio = torch.load(workdir / "audio.pt")
        items = [{"audio": a, "label": i % 2} for i, a in enumerate(audio)]
        return {"train": items, "test": items}


class ModelParams(Params):
    width: int = Field(4, ge=1, description="conv channels")


class CountingModel(Model):
    def __init__(self, params: ModelParams):
        self.params = params

    def network(self):
        return nn.Sequential(nn.Conv1d(1, self.params.width, 3), nn.ReLU())

    def train(self, network, ctx, train):
        checkpoints = CheckpointManager(ctx.workdir / "checkpoints", keep=train.keep_checkpoints)
        start = 0
        found = checkpoints.latest()
        if found:
            start, state = found
            network.load_state_dict(state["network"])
        journal(f"{ctx.stage} train from {start}")
        interrupt_at = int(os.environ.get("WAVELENS_TEST_INTERRUPT_AT", "0"))
        for step in range(start + 1, train.steps + 1):
            if step == interrupt_at:
                os.environ["WAVELENS_TEST_INTERRUPT_AT"] = "0"
                raise KeyboardInterrupt
            if step == int(os.environ.get("WAVELENS_TEST_WAIT_AT", "0")):
                journal(f"{ctx.stage} waiting at {step}")
                time.sleep(120)
            with torch.no_grad():
                for parameter in network.parameters():
                    parameter.add_(0.01)
            if step % train.checkpoint_every == 0:
                checkpoints.save(step, {"network": network.state_dict()})

    def predict(self, network, batch, ctx):
        out = network(batch["audio"].to(ctx.placement.device))
        return out.mean(dim=(1, 2)).cpu(), batch["label"]


class ProbeParams(Params):
    split: str = "test"


class MeanActivation(Probe):
    def __init__(self, params: ProbeParams):
        self.params = params

    def run(self, ctx):
        journal(f"{ctx.stage} run")
        network = ctx.network()
        rows = []
        with torch.no_grad():
            for index, item in enumerate(ctx.dataset()[self.params.split]):
                value = network(item["audio"].unsqueeze(0).to(ctx.placement.device)).mean()
                rows.append({"token": index, "value": float(value)})
        with open(ctx.workdir / "table.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, ["token", "value"])
            writer.writeheader()
            writer.writerows(rows)


class StatisticParams(Params):
    pass


class TableMean(Statistic):
    def __init__(self, params: StatisticParams):
        self.params = params

    def run(self, ctx):
        journal(f"{ctx.stage} run")
        values = []
        for output in ctx.upstream("probe"):
            with open(output.workdir / "table.csv") as handle:
                values += [float(row["value"]) for row in csv.DictReader(handle)]
        write_json(ctx.workdir / "result.json", {"mean": sum(values) / len(values)})
        write_text(ctx.workdir / "report.md", f"mean of {len(values)} values\n")


class MeanValueParams(Params):
    pass


class MeanValue(Metric):
    higher_is_better = None

    def __init__(self, params=None):
        super().__init__()
        self.add_state("total", torch.tensor(0.0), reduce="sum")
        self.add_state("count", torch.tensor(0), reduce="sum")

    def update(self, preds, target):
        self.total += preds.sum()
        self.count += preds.numel()

    def compute(self):
        return float(self.total / self.count)


@hookimpl
def wavelens_datasets():
    return [Contribution("counting_data", DataParams, "random noise, journaled", CountingData)]


@hookimpl
def wavelens_models():
    return [Contribution("counting_model", ModelParams, "one conv, journaled", CountingModel)]


@hookimpl
def wavelens_probes():
    return Contribution("mean_activation", ProbeParams, "mean output per item", MeanActivation)


@hookimpl
def wavelens_statistics():
    return [Contribution("table_mean", StatisticParams, "mean of probe tables", TableMean)]


@hookimpl
def wavelens_metrics():
    return [Contribution("mean_value", MeanValueParams, "mean prediction", MeanValue)]
