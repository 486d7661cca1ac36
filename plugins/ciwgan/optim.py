"""RMSProp as TensorFlow 1 defines it, which the ciwGAN reference uses for Q.

``tf.train.RMSPropOptimizer(1e-4)`` (decay 0.9, momentum 0, epsilon 1e-10) keeps a
mean square that starts at **ones**, and puts epsilon **inside** the square root::

    ms    ← decay · ms + (1 − decay) · g²
    param ← param − lr · g / sqrt(ms + eps)

``torch.optim.RMSprop`` starts the mean square at zeros and adds epsilon outside the
root; no setting makes it equal to the above (the first steps differ by a factor of
about 3), so this is the small optimizer the reference needs.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["TFRMSprop"]


class TFRMSprop(torch.optim.Optimizer):
    def __init__(self, params: Iterable, lr: float = 1e-4, decay: float = 0.9, eps: float = 1e-10):
        if lr <= 0 or not 0 <= decay < 1 or eps < 0:
            raise ValueError(f"invalid TFRMSprop settings: lr={lr}, decay={decay}, eps={eps}")
        super().__init__(params, {"lr": lr, "decay": decay, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 - torch's signature
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state["mean_square"] = torch.ones_like(param, memory_format=torch.preserve_format)
                mean_square = state["mean_square"]
                grad = param.grad
                mean_square.mul_(group["decay"]).addcmul_(grad, grad, value=1 - group["decay"])
                param.addcdiv_(grad, mean_square.add(group["eps"]).sqrt_(), value=-group["lr"])
        return loss
