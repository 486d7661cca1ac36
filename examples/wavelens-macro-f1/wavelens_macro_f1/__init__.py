"""A third-party wavelens plugin: the macro-averaged F1 score of a classifier."""

import torch
from pydantic import Field

from wavelens import Contribution, Metric, Params, StageError, hookimpl


class MacroF1Params(Params):
    n_classes: int = Field(ge=2, description="number of classes")


class MacroF1(Metric):
    higher_is_better = True

    def __init__(self, params: MacroF1Params):
        super().__init__()
        self.n_classes = params.n_classes
        # confusion[target, prediction]; a "sum" state, so workers' counts add up
        self.add_state("confusion", torch.zeros(params.n_classes, params.n_classes), "sum")

    def update(self, preds, target):
        preds, target = torch.as_tensor(preds).cpu(), torch.as_tensor(target).cpu()
        if preds.ndim == target.ndim + 1:  # scores or logits
            preds = preds.argmax(dim=-1)
        index = target * self.n_classes + preds
        counts = torch.bincount(index.flatten(), minlength=self.n_classes**2)
        self.confusion += counts.reshape(self.n_classes, self.n_classes)

    def compute(self):
        if self.confusion.sum() == 0:
            raise StageError("macro_f1: no examples were scored")
        true_positive = self.confusion.diag()
        precision = true_positive / self.confusion.sum(dim=0).clamp(min=1)
        recall = true_positive / self.confusion.sum(dim=1).clamp(min=1)
        f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
        return float(f1.mean())


@hookimpl
def wavelens_metrics():
    return [Contribution("macro_f1", MacroF1Params, "Macro-averaged F1 score", MacroF1)]
