"""A model wavelens did not write: a plain nn.Module whose forward applies its
activations functionally (F.relu), contributed from a local plugin file."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from wavelens import Contribution, Model, Params, hookimpl


class MyCNN(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv1d(1, width, 9, stride=4, padding=4)
        self.conv2 = nn.Conv1d(width, width, 9, stride=4, padding=4)
        self.head = nn.Linear(width, 4)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(audio))  # no ReLU module to hook: declare it in the spec
        x = F.relu(self.conv2(x))
        return self.head(x.mean(dim=-1))


class MyCNNParams(Params):
    width: int = Field(16, ge=1, description="channels of both convs")


class MyCNNModel(Model):
    def __init__(self, params: MyCNNParams):
        self.params = params

    def network(self) -> nn.Module:
        torch.manual_seed(0)
        return MyCNN(self.params.width)


@hookimpl
def wavelens_models():
    return [Contribution("my_cnn", MyCNNParams, "A user's CNN with functional ReLUs", MyCNNModel)]
