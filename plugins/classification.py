"""``accuracy``: the fraction of correctly classified examples."""

from __future__ import annotations

import torch

from wavelens import Contribution, Metric, MetricColumn, Params, StageError, hookimpl


class AccuracyParams(Params):
    pass


class Accuracy(Metric):
    """Accepts class indices, or scores/logits with one more dimension than target."""

    higher_is_better = True

    def columns(self):
        return [MetricColumn("accuracy", "Accuracy", digits=3, rank=10)]

    def __init__(self, params: AccuracyParams | None = None):
        super().__init__()
        self.add_state("correct", torch.tensor(0), reduce="sum")
        self.add_state("total", torch.tensor(0), reduce="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        preds, target = torch.as_tensor(preds), torch.as_tensor(target)
        if preds.ndim == target.ndim + 1:
            preds = preds.argmax(dim=-1)
        if preds.shape != target.shape:
            raise StageError(
                f"accuracy: predictions of shape {tuple(preds.shape)} do not match targets "
                f"of shape {tuple(target.shape)}"
            )
        self.correct += (preds.cpu() == target.cpu()).sum()
        self.total += target.numel()

    def compute(self) -> float:
        if int(self.total) == 0:
            raise StageError("accuracy: no examples were scored")
        return float(self.correct) / float(self.total)


@hookimpl
def wavelens_metrics():
    return [Contribution("accuracy", AccuracyParams, "Classification accuracy", Accuracy)]
