"""A third-party wavelens plugin: the macro-averaged F1 score of a classifier, as a
metric for specs and as a command (`wavelens macro-f1 TABLE.csv --classes N`)."""

from pathlib import Path

import torch
from pydantic import Field

from wavelens import (
    Command,
    Contribution,
    Metric,
    Params,
    StageError,
    console,
    hookimpl,
    int_between,
    read_csv,
)


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


def add_arguments(parser):
    parser.add_argument("table", type=Path, help="CSV with the columns target and prediction")
    parser.add_argument("--classes", type=int_between(2, 10_000), required=True)


def run(args, ctx):
    rows = read_csv(args.table)
    try:
        target = torch.tensor([int(row["target"]) for row in rows])
        preds = torch.tensor([int(row["prediction"]) for row in rows])
    except (KeyError, ValueError):
        raise StageError(f"{args.table}: expected whole numbers in columns target, prediction") from None
    if len(rows) == 0 or min(target.min(), preds.min()) < 0 or max(target.max(), preds.max()) >= args.classes:
        raise StageError(f"{args.table}: expected classes 0 to {args.classes - 1} in at least one row")
    metric = MacroF1(MacroF1Params(n_classes=args.classes))
    metric.update(preds, target)
    console.print(f"macro F1 {metric.compute():.4f} over {len(rows)} items")
    return 0


@hookimpl
def wavelens_commands():
    return [Command("macro-f1", "macro-averaged F1 of a CSV of targets and predictions", add_arguments, run)]
