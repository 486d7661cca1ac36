"""``csm_vanet``: the CSM-VANet model plugin — training, prediction for the metrics
stage, and enhancement of audio of any length and rate.

The four ablations of the paper's Table I are parameters of the same plugin:
``msgc: false`` (single-scale gated convolutions), ``vad_decoder: false``
(single-stage), ``time_loss: 0`` and ``mag_loss: 0``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from pydantic import Field, field_validator, model_serializer

from wavelens import (
    Contribution,
    Model,
    Params,
    Placement,
    StageContext,
    StageError,
    TrainingLoop,
    TrainSpec,
    collate_items,
    hookimpl,
    resample,
    write_csv,
)
from wavelens.plugins.noisy_speech.enhancement import Enhanced

from .networks import CSMVANet, count_parameters

RATE = 16000


class CSMVANetParams(Params):
    channels: list[int] = Field([24, 48, 96, 192], min_length=1,
                                description="encoder block channels (each divisible by 8)")
    conformers: int = Field(4, ge=0, description="TF-Conformer blocks in the bottleneck")
    heads: int = Field(4, ge=1, description="attention heads per Conformer")
    dropout: float = Field(0.2, ge=0, lt=1, description="Conformer dropout (CMGAN's)")
    msgc: bool = Field(True, description="multi-scale gated convolutions (false: the 'w/o msgc' ablation)")
    vad_decoder: bool = Field(True, description="VAD decoder and second stage (false: single-stage)")
    vad_floor: float = Field(0.0, ge=0, lt=1, description="second-stage gain floor: floor + (1 − floor)·p")
    noisy_mix: float = Field(
        0.0, ge=0, lt=1,
        description="share of the noisy input mixed back into the output: (1 − m)·enhanced + m·noisy "
        "(a setting for using a trained network; 0, the paper's output, for training)")
    time_loss: float = Field(0.2, ge=0, description="weight of the waveform L1 loss")
    mag_loss: float = Field(0.8, ge=0, description="weight of the compressed-magnitude MSE")
    complex_loss: float = Field(0.2, ge=0, description="weight of the compressed real+imaginary MSE")
    vad_loss: float = Field(0.1, ge=0, description="weight of the VAD binary cross-entropy")
    lr: float = Field(5e-4, gt=0, description="AdamW learning rate")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (torch's default)")
    lr_halve_every: int = Field(30, ge=1, description="epochs between halvings of the learning rate")
    validation_files: int = Field(8, ge=0, description="test-split files scored (PESQ) after each epoch")
    chunk_seconds: float = Field(8.0, gt=1, description="longer inputs are enhanced in chunks this long")
    overlap_seconds: float = Field(1.0, ge=0, description="overlap of consecutive chunks (cross-faded)")

    @model_serializer(mode="wrap")
    def _without_unused_mix(self, handler: Any) -> dict[str, Any]:
        # noisy_mix came after networks were trained and shipped: at its default it
        # stays out of the dump, and so out of the stage keys, which older specs keep.
        data = handler(self)
        if not self.noisy_mix:
            data.pop("noisy_mix", None)
        return data

    @field_validator("channels")
    @classmethod
    def _divisible(cls, value: list[int]) -> list[int]:
        bad = [c for c in value if c % 8]
        if bad:
            raise ValueError(f"every channel count must be divisible by 8 (MSGC splits 1:3:4); not {bad}")
        return value


def loss_terms(network: CSMVANet, out: dict[str, Any], clean: torch.Tensor,
               vad_labels: torch.Tensor | None, params: CSMVANetParams) -> dict[str, torch.Tensor]:
    """The multi-target loss, term by term, with ``total``. Terms with weight 0 are
    left out (not computed), so an ablation removes exactly its term."""
    scale = out["scale"]
    clean = clean.reshape(clean.shape[0], -1).float()
    with torch.autocast(clean.device.type, enabled=False):
        target = network.spectra.analyse(clean * scale)
    estimate = out["spec"].float()
    terms: dict[str, torch.Tensor] = {}
    if params.time_loss:
        terms["time"] = F.l1_loss(out["audio"].float() * scale, clean * scale)
    if params.mag_loss:
        terms["mag"] = F.mse_loss(torch.linalg.vector_norm(estimate, dim=1),
                                  torch.linalg.vector_norm(target, dim=1))
    if params.complex_loss:
        terms["complex"] = F.mse_loss(estimate[:, 0], target[:, 0]) + F.mse_loss(estimate[:, 1], target[:, 1])
    if params.vad_loss and out["vad"] is not None and vad_labels is not None:
        frames = out["vad"].shape[-1]
        terms["vad"] = F.binary_cross_entropy(out["vad"].float().clamp(1e-6, 1 - 1e-6),
                                              vad_labels[:, :frames].float())
    weights = {"time": params.time_loss, "mag": params.mag_loss, "complex": params.complex_loss,
               "vad": params.vad_loss}
    terms["total"] = sum(weights[name] * value for name, value in terms.items())
    return terms


@torch.no_grad()
def enhance_16k(network: CSMVANet, audio: np.ndarray, device: torch.device, chunk: int,
                overlap: int, placement: Placement | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Enhance a 1-D 16 kHz signal; long signals in chunks of ``chunk`` samples that
    overlap by ``overlap`` (linear cross-fade). Returns the signal (same length) and
    the per-frame speech probability (``len // hop + 1`` frames) or None."""
    hop = network.spectra.hop
    n = len(audio)
    signal = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    autocast = placement.autocast() if placement is not None else torch.autocast("cpu", enabled=False)

    def run(piece: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        # A piece shorter than the STFT window (a very short file, or the tail of a
        # chunked one) is padded with zeros to one window and cut back afterwards.
        length = len(piece)
        padded = F.pad(piece, (0, max(0, network.spectra.n_fft - length)))
        with autocast:
            out = network(padded[None].to(device))
        vad = out["vad"][0].float().cpu()[: length // hop + 1] if out["vad"] is not None else None
        return out["audio"][0].float().cpu()[:length], vad

    if n <= chunk:
        estimate, vad = run(signal)
        return estimate.numpy(), None if vad is None else vad.numpy()
    overlap = min(overlap - overlap % hop, chunk // 2)
    step = chunk - overlap
    starts = list(range(0, n - overlap, step))
    output = torch.zeros(n)
    weight = torch.zeros(n)
    frames = n // hop + 1
    vad_sum = torch.zeros(frames)
    vad_weight = torch.zeros(frames)
    has_vad = False
    for start in starts:
        piece = signal[start : start + chunk]
        estimate, vad = run(piece)
        ramp = torch.ones(len(piece))
        if overlap:
            fade = torch.linspace(0, 1, overlap + 2)[1:-1]
            if start > 0:
                ramp[:overlap] = fade
            if start + chunk < n:
                ramp[-overlap:] = torch.minimum(ramp[-overlap:], fade.flip(0))
        output[start : start + len(piece)] += estimate * ramp
        weight[start : start + len(piece)] += ramp
        if vad is not None:
            has_vad = True
            first = start // hop
            frame_ramp = ramp[:: hop][: len(vad)]
            if len(frame_ramp) < len(vad):
                frame_ramp = F.pad(frame_ramp, (0, len(vad) - len(frame_ramp)), value=float(ramp[-1]))
            stop = min(first + len(vad), frames)
            vad_sum[first:stop] += (vad * frame_ramp)[: stop - first]
            vad_weight[first:stop] += frame_ramp[: stop - first]
    enhanced = (output / weight.clamp_min(1e-8)).numpy()
    if not has_vad:
        return enhanced, None
    return enhanced, (vad_sum / vad_weight.clamp_min(1e-8)).numpy()


class EnhancementLoop(TrainingLoop):
    """AdamW on the multi-target loss over random segments; the learning rate halves
    every ``lr_halve_every`` epochs; PESQ on a few test files after each epoch.

    Batches follow a per-epoch permutation drawn from (seed, epoch), and segment
    offsets from (seed, epoch, item), so a resumed run sees exactly the batches an
    uninterrupted one would. With several processes each takes its share of every
    batch, and gradients are averaged before the step.
    """

    def __init__(self, network: CSMVANet, params: CSMVANetParams, ctx: StageContext, train: TrainSpec):
        splits = ctx.dataset()
        if "train" not in splits:
            raise StageError(f"csm_vanet trains on a 'train' split; the data has {', '.join(splits)}")
        self.data = splits["train"]
        self.validation = splits.get("test")
        if train.batch_size % ctx.world:
            raise StageError(f"train.batch_size {train.batch_size} is not divisible by {ctx.world} processes")
        if len(self.data) < train.batch_size:
            raise StageError(f"the train split has {len(self.data)} items, fewer than one batch "
                             f"({train.batch_size})")
        first = self.data[0]
        missing = [key for key in ("noisy", "clean") if key not in first]
        if missing:
            raise StageError(f"csm_vanet trains on paired items with 'noisy' and 'clean' audio; the "
                             f"train split's items have {', '.join(first)} (use voicebank_demand, "
                             "noisy_mixtures or a dataset that gives both)")
        self.with_vad = "vad" in first
        if not self.with_vad and params.vad_decoder and params.vad_loss > 0:
            raise StageError("csm_vanet's VAD loss needs frame labels ('vad' in each item), which this "
                             "dataset does not give: set model.params.vad_loss: 0, or derive the labels "
                             "from the clean speech as voicebank_demand and noisy_mixtures do")
        self.steps_per_epoch = len(self.data) // train.batch_size  # the last partial batch is dropped
        steps = train.steps if train.steps is not None else train.epochs * self.steps_per_epoch
        super().__init__(context=ctx, train=train, steps=steps, network=network,
                         description="csm_vanet steps")
        self.network, self.params, self.train_spec = network, params, train
        self.seed = ctx.seed
        self.optimizer = torch.optim.AdamW(network.parameters(), lr=params.lr,
                                           weight_decay=params.weight_decay)
        self.validations: list[dict[str, float]] = []
        self._order: tuple[int, torch.Tensor] | None = None  # (epoch, permutation)

    def epoch_of(self, step: int) -> int:
        return (step - 1) // self.steps_per_epoch

    def batch(self, step: int) -> dict[str, Any]:
        epoch, position = divmod(step - 1, self.steps_per_epoch)
        if self._order is None or self._order[0] != epoch:  # one permutation per epoch
            generator = torch.Generator().manual_seed(self.seed * 1009 + epoch)
            self._order = (epoch, torch.randperm(len(self.data), generator=generator))
            set_epoch = getattr(self.data, "set_epoch", None)  # new random segments per epoch
            if set_epoch is not None:
                set_epoch(epoch)
        order = self._order[1]
        size = self.train_spec.batch_size
        indices = order[position * size : (position + 1) * size]
        share = size // self.world
        indices = indices[self.rank * share : (self.rank + 1) * share]
        return collate_items([self.data[int(i)] for i in indices])

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        lr = self.params.lr * 0.5 ** (self.epoch_of(step) // self.params.lr_halve_every)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch = self.batch(step)
        device = self.placement.device
        self.network.train()
        with self.autocast():
            out = self.network(batch["noisy"].to(device))
        vad = batch["vad"].to(device) if self.with_vad else None
        terms = loss_terms(self.network, out, batch["clean"].to(device), vad, self.params)
        self.optimizer.zero_grad(set_to_none=True)
        self.backward(terms["total"])
        self.step(self.optimizer)
        if self.world > 1:
            # BatchNorm's running statistics follow each process's share of the batch:
            # rank 0's are kept everywhere (what DistributedDataParallel does).
            for buffer in self.network.buffers():
                dist.broadcast(buffer, 0)
        return {**{k: v.detach() for k, v in terms.items()}, "lr": torch.tensor(lr)}

    def after_step(self, step: int) -> None:
        if step % self.steps_per_epoch == 0 and self.rank == 0 and self.params.validation_files:
            self.validate(step)

    def validate(self, step: int) -> None:
        from pesq import PesqError, pesq

        if self.validation is None or not len(self.validation):
            return
        scores = []
        for index in range(min(self.params.validation_files, len(self.validation))):
            item = self.validation[index]
            noisy = item["noisy"][0].numpy()
            estimate, _ = enhance_16k(self.network.eval(), noisy, self.placement.device,
                                      int(self.params.chunk_seconds * RATE),
                                      int(self.params.overlap_seconds * RATE), self.placement)
            try:
                scores.append(pesq(RATE, item["clean"][0].numpy(), estimate, "wb"))
            except PesqError:
                continue
        self.network.train()
        if scores:
            entry = {"step": step, "epoch": self.epoch_of(step) + 1, "val_pesq": float(np.mean(scores)),
                     "files": len(scores)}
            self.validations.append(entry)
            if self.log:
                self.log.info("epoch %d: validation PESQ %.3f on %d test files", entry["epoch"],
                              entry["val_pesq"], len(scores))

    def log_message(self, entry: dict[str, float]) -> str:
        parts = "  ".join(f"{k} {entry[k]:.4f}"
                          for k in ("total", "time", "mag", "complex", "vad") if k in entry)
        return (f"step {entry['step']} (epoch {self.epoch_of(entry['step']) + 1}): {parts}  "
                f"lr {entry['lr']:.2e}  {entry['steps_per_s']:.2f} steps/s")

    def extra_state(self) -> dict[str, Any]:
        # The global generators drive dropout: kept, so a resumed run continues exactly.
        cuda = self.placement.device.type == "cuda"
        return {"optimizer": self.optimizer.state_dict(),  # the loop checkpoints the network and
                "validations": self.validations,               # the gradient scaler
                "cpu_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(self.placement.device) if cuda else None}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.validations = list(state["validations"])
        torch.set_rng_state(state["cpu_rng"])
        if state.get("cuda_rng") is not None and self.placement.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.placement.device)

    def parameters_for_checksum(self) -> list[torch.Tensor]:
        return list(self.network.state_dict().values())


class CSMVANetModel(Model):
    def __init__(self, params: CSMVANetParams):
        self.params = params

    def network(self) -> CSMVANet:
        p = self.params
        return CSMVANet(tuple(p.channels), p.conformers, p.heads, p.msgc, p.vad_decoder, p.vad_floor,
                        dropout=p.dropout, noisy_mix=p.noisy_mix)

    def train(self, network: torch.nn.Module, ctx: StageContext, train: TrainSpec) -> None:
        loop = EnhancementLoop(network, self.params, ctx, train)
        ctx.log.info("csm_vanet: %d parameters; %d training segments, %d steps per epoch, %d steps",
                     count_parameters(network), len(loop.data), loop.steps_per_epoch, loop.steps)
        history = loop.run()
        if ctx.rank == 0:
            write_csv(ctx.workdir / "losses.csv", history)
            write_csv(ctx.workdir / "validation.csv", loop.validations,
                      ["step", "epoch", "val_pesq", "files"])
            self._report(ctx, history, loop.validations, count_parameters(network))

    def _report(self, ctx: StageContext, history: list[dict], validations: list[dict], n_params: int) -> None:
        from .plots import plot_training

        if history:
            plot_training(ctx.workdir / "training.png", history, validations)
        p = self.params
        switches = (("w/o msgc", not p.msgc), ("w/o vad decoder", not p.vad_decoder),
                    ("w/o time loss", p.time_loss == 0), ("w/o mag loss", p.mag_loss == 0))
        ablation = [name for name, off in switches if off]
        lines = [
            f"CSM-VANet{' (' + ', '.join(ablation) + ')' if ablation else ''}: {n_params / 1e6:.3f} M "
            f"parameters. Loss {p.time_loss}·time L1 + {p.mag_loss}·magnitude MSE + "
            f"{p.complex_loss}·complex MSE + {p.vad_loss}·VAD BCE; AdamW lr {p.lr:g}, halved every "
            f"{p.lr_halve_every} epochs.",
        ]
        if history:
            last = history[-1]
            lines.append(f"\nLast logged (step {last['step']}): total loss {last['total']:.4f}.")
        if validations:
            best = max(validations, key=lambda v: v["val_pesq"])
            lines.append(f"Validation PESQ after the last epoch {validations[-1]['val_pesq']:.3f} "
                         f"(best {best['val_pesq']:.3f} after epoch {best['epoch']}), on "
                         f"{validations[-1]['files']} test files.")
        if history:
            lines.append("\n![training curves](training.png)\n\n*Training curves of this run: each "
                         "loss term against step (means over the logging window) and wideband PESQ "
                         "on the validation files after each epoch.*\n")
        ctx.write_report("\n".join(lines) + "\n")

    def predict(self, network: torch.nn.Module, batch: dict, ctx: StageContext) -> tuple[Any, Any]:
        """Per utterance: ``({"audio": enhanced, "vad": probabilities}, {"audio": clean,
        "vad": labels})``, each a list of 1-D arrays at the utterance's true length."""
        if "noisy" not in batch or "clean" not in batch:
            raise StageError("csm_vanet scores paired data (items with 'noisy' and 'clean'); "
                             "use voicebank_demand or noisy_mixtures")
        p = self.params
        preds: dict[str, list] = {"audio": [], "vad": []}
        target: dict[str, list] = {"audio": [], "vad": []}
        for i, length in enumerate(batch["length"].tolist()):
            noisy = batch["noisy"][i, 0, :length].numpy()
            estimate, vad = enhance_16k(network, noisy, ctx.placement.device, int(p.chunk_seconds * RATE),
                                        int(p.overlap_seconds * RATE), ctx.placement)
            frames = length // network.spectra.hop + 1
            preds["audio"].append(estimate)
            target["audio"].append(batch["clean"][i, 0, :length].numpy())
            preds["vad"].append(vad if vad is not None else np.full(frames, np.nan))
            target["vad"].append(batch["vad"][i, :frames].numpy() if "vad" in batch
                                 else np.full(frames, np.nan))  # no labels: the vad metric says so
        return preds, target

    def enhance(self, network: torch.nn.Module, audio: np.ndarray, sample_rate: int,
                placement: Placement) -> Enhanced:
        p = self.params
        signal = resample(audio, sample_rate, RATE) if sample_rate != RATE else audio.astype(np.float32)
        estimate, vad = enhance_16k(network, signal, placement.device, int(p.chunk_seconds * RATE),
                                    int(p.overlap_seconds * RATE), placement)
        if sample_rate != RATE:
            estimate = resample(estimate, RATE, sample_rate)
        estimate = _fit_length(estimate, len(audio))
        hop = network.spectra.hop
        return Enhanced(estimate, sample_rate, vad, hop / RATE if vad is not None else None)


def _fit_length(signal: np.ndarray, length: int) -> np.ndarray:
    if len(signal) >= length:
        return signal[:length]
    return np.pad(signal, (0, length - len(signal)))


@hookimpl
def wavelens_models():
    return [Contribution("csm_vanet", CSMVANetParams,
                         "CSM-VANet: two-stage complex spectrum mapping with a VAD decoder", CSMVANetModel)]

