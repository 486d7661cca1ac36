"""``tiny_cnn``: a small 1-D CNN word classifier, trained with Adam and checkpoints."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from wavelens import (
    Contribution,
    Model,
    Params,
    StageContext,
    TrainingLoop,
    TrainSpec,
    hookimpl,
    save_figure,
    write_csv,
)


class TinyCNNParams(Params):
    n_classes: int = Field(4, ge=2, description="number of output classes")
    channels: list[int] = Field([16, 32, 64, 64], min_length=1, description="channels per conv layer")
    kernel_size: int = Field(25, ge=1, description="kernel size of every conv layer")
    stride: int = Field(4, ge=1, description="stride of every conv layer")
    learning_rate: float = Field(1e-3, gt=0, description="Adam learning rate")


class TinyCNN(nn.Module):
    """Conv1d → LeakyReLU(0.2) blocks (``conv1``, ``act1``, …), mean over time, linear."""

    def __init__(self, params: TinyCNNParams):
        super().__init__()
        channels = [1, *params.channels]
        for index, (c_in, c_out) in enumerate(zip(channels, channels[1:], strict=False), start=1):
            padding = params.kernel_size // 2
            conv = nn.Conv1d(c_in, c_out, params.kernel_size, params.stride, padding)
            self.add_module(f"conv{index}", conv)
            self.add_module(f"act{index}", nn.LeakyReLU(0.2))
        self.n_layers = len(params.channels)
        self.logits = nn.Linear(channels[-1], params.n_classes)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        x = audio
        for index in range(1, self.n_layers + 1):
            x = getattr(self, f"act{index}")(getattr(self, f"conv{index}")(x))
        return self.logits(x.mean(dim=-1))


class ClassifierLoop(TrainingLoop):
    """Adam on cross-entropy; the core's loop does precision, the step, resumption,
    logging and checkpoints."""

    def __init__(self, *, data, learning_rate: float, batch_size: int, seed: int, **settings):
        super().__init__(description="train", **settings)
        self.data, self.batch_size = data, batch_size
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=learning_rate)
        # Batches drawn by a generator stored in each checkpoint, so a resumed run
        # sees exactly the batches an uninterrupted one would.
        self.sampler = torch.Generator().manual_seed(seed)

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        device = self.placement.device
        index = torch.randint(len(self.data), (self.batch_size,), generator=self.sampler)
        items = [self.data[int(i)] for i in index]
        audio = torch.stack([item["audio"] for item in items]).to(device)
        labels = torch.tensor([item["label"] for item in items], device=device)
        self.network.train()
        with self.autocast():
            loss = F.cross_entropy(self.network(audio), labels)
        self.optimizer.zero_grad(set_to_none=True)
        self.backward(loss)
        self.step(self.optimizer)
        return {"loss": loss.detach()}

    def extra_state(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "sampler": self.sampler.get_state()}

    def load_extra_state(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.sampler.set_state(state["sampler"])


class TinyCNNModel(Model):
    def __init__(self, params: TinyCNNParams):
        self.params = params

    def network(self) -> nn.Module:
        return TinyCNN(self.params)

    def train(self, network: nn.Module, ctx: StageContext, train: TrainSpec) -> None:
        loop = ClassifierLoop.from_context(ctx, train, network=network, data=ctx.dataset()["train"],
                                           learning_rate=self.params.learning_rate,
                                           batch_size=train.batch_size, seed=ctx.seed)
        history = loop.run()
        self._write_curve(ctx, [(h["step"], h["loss"]) for h in history])

    def _write_curve(self, ctx: StageContext, history: list[tuple[int, float]]) -> None:
        write_csv(ctx.workdir / "losses.csv", [{"step": step, "loss": loss} for step, loss in history],
                  ["step", "loss"])
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3))
        ax.plot([s for s, _ in history], [loss for _, loss in history], marker="o")
        ax.set_xlabel("step")
        ax.set_ylabel("cross-entropy")
        ax.set_title("tiny_cnn training loss")
        fig.tight_layout()
        save_figure(fig, ctx.workdir / "loss.png", dpi=100)
        final = f"{history[-1][1]:.4f}" if history else "n/a"
        ctx.write_report(
            f"Trained with Adam (lr {self.params.learning_rate}); final logged loss {final}.\n\n"
            "![training loss](loss.png)\n"
        )

    def predict(self, network: nn.Module, batch: dict, ctx: StageContext):
        logits = network(batch["audio"].to(ctx.placement.device))
        return logits.argmax(dim=-1).cpu(), batch["label"]


@hookimpl
def wavelens_models():
    return [Contribution("tiny_cnn", TinyCNNParams, "A small 1-D CNN classifier", TinyCNNModel)]
