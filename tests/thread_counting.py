"""A metric that reports the thread pools of the process that computes it (for the
worker-pool tests: importable by the workers, which unpickle it by reference)."""

from __future__ import annotations

import torch

from wavelens import Metric


class ThreadCounting(Metric):
    def __init__(self, params=None):
        super().__init__()

    def update(self, preds, target):
        pass

    def compute(self):
        import numpy as np  # noqa: F401 - the BLAS pools numpy loaded
        from threadpoolctl import threadpool_info

        pools = [pool["num_threads"] for pool in threadpool_info()]
        return {"native_threads": float(max(pools, default=1)),
                "torch_threads": float(torch.get_num_threads())}
