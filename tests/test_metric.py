"""The Metric base class and the accuracy metric."""

from __future__ import annotations

import pytest
import torch

from wavelens import Metric, StageError
from wavelens.plugins.classification import Accuracy


def test_accuracy_accepts_indices_and_logits():
    metric = Accuracy()
    metric.update(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]))
    metric.update(torch.tensor([[0.9, 0.1], [0.2, 0.8]]), torch.tensor([0, 0]))
    assert metric.compute() == pytest.approx(3 / 5)


def test_accuracy_reset_returns_to_empty():
    metric = Accuracy()
    metric.update(torch.tensor([1]), torch.tensor([1]))
    metric.reset()
    with pytest.raises(StageError, match="no examples were scored"):
        metric.compute()


def test_accuracy_rejects_mismatched_shapes():
    with pytest.raises(StageError, match=r"shape \(3,\) do not match targets of shape \(2,\)"):
        Accuracy().update(torch.tensor([1, 2, 3]), torch.tensor([1, 2]))


def test_merged_states_equal_one_metric_over_all_batches():
    preds = torch.tensor([0, 1, 1, 0, 1, 1, 0])
    target = torch.tensor([0, 1, 0, 0, 0, 1, 1])
    whole, left, right = Accuracy(), Accuracy(), Accuracy()
    whole.update(preds, target)
    left.update(preds[:3], target[:3])
    right.update(preds[3:], target[3:])
    left.merge(right.state())
    assert left.compute() == whole.compute()


class Extremes(Metric):
    def __init__(self):
        super().__init__()
        self.add_state("low", torch.tensor(float("inf")), reduce="min")
        self.add_state("high", torch.tensor(float("-inf")), reduce="max")
        self.add_state("values", [], reduce="cat")

    def update(self, preds, target):
        self.low = torch.minimum(self.low, preds.min())
        self.high = torch.maximum(self.high, preds.max())
        self.values.append(preds)

    def compute(self):
        return float(self.low), float(self.high), torch.cat(self.values).tolist()


def test_min_max_and_cat_states_merge_exactly():
    a, b = Extremes(), Extremes()
    a.update(torch.tensor([3.0, 5.0]), None)
    b.update(torch.tensor([-1.0, 4.0]), None)
    a.merge(b.state())
    assert a.compute() == (-1.0, 5.0, [3.0, 5.0, -1.0, 4.0])


def test_unknown_reduction_is_refused():
    metric = Extremes()
    with pytest.raises(ValueError, match="reduce must be one of"):
        metric.add_state("x", torch.tensor(0), reduce="median")
