"""``ciwgan`` and ``fiwgan``: the model plugins (Beguš 2021; Beguš & Zhou 2022)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from wavelens import (
    Contribution,
    Model,
    Params,
    StageContext,
    StageError,
    TrainSpec,
    hookimpl,
    save_figure,
)

from .networks import CiwGAN
from .trainer import GANConfig, GANTrainer, code_names, code_vector, write_history


class CiwGANParams(Params):
    n_codes: int = Field(8, ge=1, le=99, description="number of one-hot codes (words to learn)")
    dim: int = Field(64, ge=1, description="model width (64 in the papers; smaller for CPU runs)")
    slice_len: Literal[8192, 16384, 32768, 65536] = Field(
        16384, description="samples per output (8192: a shorter variant, docs/ciwgan.md)")
    latent_dim: int = Field(100, ge=2, description="latent size: codes plus uniform noise")
    phase_shuffle: int = Field(2, ge=0, description="phase shuffle radius of D and Q")
    d_updates: int = Field(5, ge=1, description="critic updates per generator step")
    gp_weight: float = Field(10.0, ge=0, description="gradient penalty weight (WGAN-GP λ)")
    lr: float = Field(1e-4, gt=0, description="Adam learning rate of G and D")
    q_lr: float = Field(1e-4, gt=0, description="RMSProp (TF1) learning rate of the Q loss over Q and G")
    q_weight: float = Field(1.0, ge=0, description="weight of the Q loss")
    sample_every: int = Field(500, ge=1, description="write one WAV per code every this many steps")
    sample_value: float = Field(1.0, description="code value of the periodic samples")
    sample_rate: int = Field(16000, description="rate of the audio (generated files are written at it)")
    cuda_convs: Literal["gemm", "cudnn"] = Field(
        "gemm", description="how the convs run on CUDA (the same function; see docs/ciwgan.md)")


    @model_validator(mode="before")
    @classmethod
    def _processes_moved_to_torchrun(cls, data: Any) -> Any:
        if isinstance(data, dict) and "processes" in data:
            raise ValueError(
                "processes is no longer a model parameter: launch several processes with torchrun "
                "(torchrun --nproc_per_node=N -m wavelens.cli run SPEC; docs/ciwgan.md)")
        return data


class FiwGANParams(CiwGANParams):
    n_codes: int = Field(3, ge=1, le=99, description="number of binary code bits")


class CiwGANModel(Model):
    code = "categorical"

    def __init__(self, params: CiwGANParams):
        self.params = params

    def network(self) -> CiwGAN:
        p = self.params
        return CiwGAN(p.n_codes, p.dim, p.slice_len, p.latent_dim, p.phase_shuffle, p.cuda_convs)

    def config(self, train: TrainSpec, seed: int) -> GANConfig:
        p = self.params
        return GANConfig(
            code=self.code, steps=train.required_steps(type(self).__name__), batch_size=train.batch_size,
            d_updates=p.d_updates,
            gp_weight=p.gp_weight, lr=p.lr, q_lr=p.q_lr, q_weight=p.q_weight,
            checkpoint_every=train.checkpoint_every, keep_checkpoints=train.keep_checkpoints,
            log_every=train.log_every, sample_every=p.sample_every, sample_value=p.sample_value,
            seed=seed, on_nonfinite=train.on_nonfinite,
        )

    def training_audio(self, ctx: StageContext) -> tuple[torch.Tensor, int]:
        splits = ctx.dataset()
        if "train" not in splits:
            raise StageError(f"{type(self).__name__} trains on a 'train' split; the data has "
                             f"{', '.join(splits)}")
        split = splits["train"]
        first = split[0]
        if first["audio"].shape[-1] != self.params.slice_len:
            raise StageError(
                f"the data's items have {first['audio'].shape[-1]} samples, but the model's "
                f"slice_len is {self.params.slice_len}; set the dataset's slice_len to match"
            )
        audio = torch.stack([split[i]["audio"] for i in range(len(split))])
        return audio, int(first.get("sample_rate", 16000))

    def train(self, network: torch.nn.Module, ctx: StageContext, train: TrainSpec) -> None:
        audio, rate = self.training_audio(ctx)
        if rate != self.params.sample_rate:
            raise StageError(f"the data is at {rate} Hz, but the model's sample_rate is "
                             f"{self.params.sample_rate}; set model.params.sample_rate: {rate}")
        config = self.config(train, ctx.seed)
        config.sample_rate = rate
        ctx.log.info("training on %d real tokens; %d generator steps of batch %d", len(audio),
                     config.steps, config.batch_size)
        history = GANTrainer(network, config, context=ctx).train(audio)
        if ctx.rank != 0:
            return
        write_history(ctx.workdir / "losses.csv", history)
        self._report(ctx, history, len(audio))

    def _report(self, ctx: StageContext, history: list[dict], n_tokens: int) -> None:
        if not history:
            return
        chance = 1 / self.params.n_codes if self.code == "categorical" else 0.5
        plot_history(ctx.workdir / "losses.png", history, chance)
        last = history[-1]
        ctx.write_report(
            f"Trained on {n_tokens} real tokens for {last['step']} generator steps "
            f"({self.params.d_updates} critic updates each; {self.params.n_codes} "
            f"{'codes' if self.code == 'categorical' else 'bits'}). Last logged: D loss "
            f"{last['d_loss']:.4f}, G loss {last['g_loss']:.4f}, Q loss {last['q_loss']:.4f}, "
            f"Q accuracy on generated audio {last['q_accuracy']:.3f} (chance {chance:.3f}), "
            f"{last['steps_per_s']:.2f} steps/s. Samples per code are in `samples/`.\n\n"
            "![losses](losses.png)\n\n"
            f"*Training curves of this run: critic, generator and Q losses and the Q-network's "
            f"accuracy on generated audio (chance {chance:.3f}), each the mean over "
            f"{_log_window(history)} steps.*\n"
        )

    def predict(self, network: torch.nn.Module, batch: dict, ctx: StageContext) -> tuple[Any, Any]:
        """The Q-network's code for each real token, against its word label."""
        logits = network(batch["audio"].to(ctx.placement.device))
        codes = logits.argmax(dim=1) if self.code == "categorical" else (logits > 0).long()
        return codes.cpu(), batch["label"]


    def code_vector(self, code: str, value: float) -> torch.Tensor:
        """The code part of the latent for ``code`` (see :func:`.trainer.code_vector`)."""
        return code_vector(self.code, self.params.n_codes, code, value)

    def code_names(self) -> list[str]:
        """The codes to show one at a time (see :func:`.trainer.code_names`)."""
        return code_names(self.code, self.params.n_codes)

    @torch.no_grad()
    def generate(self, network: torch.nn.Module, code: str, value: float, n: int,
                 seed: int) -> tuple[torch.Tensor, int]:
        generator = network.generator
        was_training = generator.training
        generator.eval()
        device = next(generator.parameters()).device
        # The same seed gives the same noise whatever the code, so outputs of two
        # codes differ only by the code.
        noise = torch.rand(n, generator.latent_dim - self.params.n_codes,
                           generator=torch.Generator().manual_seed(seed)) * 2 - 1
        z = torch.cat([self.code_vector(code, value).expand(n, -1), noise], dim=1)
        outputs = [generator(chunk.to(device))[:, 0].float().cpu() for chunk in z.split(64)]
        generator.train(was_training)
        return torch.cat(outputs), self.params.sample_rate


class FiwGANModel(CiwGANModel):
    code = "binary"


def plot_history(path: Path, history: list[dict], chance: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    steps = [h["step"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3))
    axes[0].plot(steps, [h["d_loss"] for h in history], label="D loss")
    axes[0].plot(steps, [h["wasserstein"] for h in history], label="Wasserstein estimate")
    axes[0].legend()
    axes[1].plot(steps, [h["g_loss"] for h in history], color="tab:green")
    axes[1].set_title("G loss")
    axes[2].plot(steps, [h["q_loss"] for h in history], color="tab:red", label="Q loss")
    axes[2].plot(steps, [h["q_accuracy"] for h in history], color="tab:purple", label="Q accuracy")
    axes[2].axhline(chance, color="tab:purple", linestyle=":", label="chance")
    axes[2].legend()
    for ax in axes:
        ax.set_xlabel("step")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


@hookimpl
def wavelens_models():
    return [
        Contribution("ciwgan", CiwGANParams,
                     "ciwGAN: WaveGAN with a Q-network learning one-hot word codes (Beguš 2021)",
                     CiwGANModel),
        Contribution("fiwgan", FiwGANParams,
                     "fiwGAN: WaveGAN with a Q-network learning binary codes (Beguš 2021)",
                     FiwGANModel),
    ]


def _log_window(history: list[dict]) -> int:
    """The logging window of a history (steps between its entries)."""
    steps = [int(h["step"]) for h in history]
    return steps[1] - steps[0] if len(steps) > 1 else steps[0]
