"""``lexical_learning``: did the generator learn words, and does Q read its codes?

For a trained ciwGAN or fiwGAN (run as a probe stage after the model):

1. **Q accuracy.** Generate ``n_per_code`` outputs per code (fresh noise, the same
   noise for every code) and score how often the Q-network (eval mode, no phase
   shuffle) recovers the code: the arg-max for ciwGAN, every bit for fiwGAN.
2. **Lexical purity.** Train an independent word classifier on the real training
   tokens (log-mel features, a small 2-D CNN), check it on the real test tokens,
   and classify every generated output. Each code maps to the word most of its
   outputs are classified as; the share of outputs that agree is the code's
   purity. Codes that map to different words with high purity are lexical
   learning; a purity near 1/words is none.

The papers judge this by a phonetician's transcription of 100 outputs per code; a
classifier trained on real tokens is the automatic stand-in.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio
from pydantic import Field
from torch import nn

from framework import (
    Contribution,
    Params,
    Probe,
    StageContext,
    StageError,
    atomic_write,
    hookimpl,
    write_audio,
    write_csv,
    write_json,
)


class LexicalParams(Params):
    n_per_code: int = Field(100, ge=1, description="generated outputs per code and value")
    values: list[float] = Field([1.0], min_length=1,
                                description="code values to test (the papers also use values beyond 1)")
    seed: int = Field(0, description="seed of the generated noise")
    classifier_epochs: int = Field(15, ge=1, description="epochs of the word classifier")
    classifier_lr: float = Field(1e-3, gt=0, description="Adam learning rate of the word classifier")
    keep_audio: int = Field(5, ge=0, description="generated WAV files kept per code and value")


class WordClassifier(nn.Module):
    """log-mel (64 bands) → a small 2-D CNN → word logits."""

    def __init__(self, n_words: int, sample_rate: int):
        super().__init__()
        self.features = torchaudio.transforms.MelSpectrogram(
            sample_rate, n_fft=512, hop_length=256, n_mels=64)
        layers: list[nn.Module] = []
        channels = [1, 16, 32, 64]
        for a, b in zip(channels, channels[1:], strict=False):
            layers += [nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(), nn.MaxPool2d(2)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(64, n_words)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:  # (B, 1, T)
        mel = torch.log(self.features(audio) + 1e-6)  # (B, 1, mels, frames)
        return self.head(self.body(mel).mean(dim=(2, 3)))


def _stack(split: Any) -> tuple[torch.Tensor, torch.Tensor]:
    audio = torch.stack([split[i]["audio"] for i in range(len(split))])
    labels = torch.tensor([split[i]["label"] for i in range(len(split))])
    return audio, labels


def train_word_classifier(train: Any, n_words: int, rate: int, params: LexicalParams,
                          seed: int, device: torch.device, progress: Any) -> WordClassifier:
    torch.manual_seed(seed)
    audio, labels = _stack(train)
    model = WordClassifier(n_words, rate).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=params.classifier_lr)
    order_rng = torch.Generator().manual_seed(seed)
    model.train()
    for _ in progress(range(params.classifier_epochs), total=params.classifier_epochs,
                      description="word classifier"):
        for batch in torch.randperm(len(audio), generator=order_rng).split(32):
            loss = F.cross_entropy(model(audio[batch].to(device)), labels[batch].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


@torch.no_grad()
def classify(model: nn.Module, audio: torch.Tensor, device: torch.device) -> torch.Tensor:
    return torch.cat([model(chunk.to(device)).argmax(dim=1).cpu() for chunk in audio.split(64)])


class LexicalLearning(Probe):
    def __init__(self, params: LexicalParams):
        self.params = params

    def run(self, ctx: StageContext) -> None:
        params = self.params
        model, network = ctx.model(), ctx.network()
        if not hasattr(model, "code_vector"):
            raise StageError("lexical_learning needs a ciwGAN or fiwGAN model")
        splits = ctx.dataset()
        if "train" not in splits or "test" not in splits:
            raise StageError("lexical_learning needs labelled train and test splits of real words")
        words = list(getattr(splits["train"], "classes", []))
        if not words:
            raise StageError("the dataset's splits name no classes (words) to classify into")
        device = ctx.placement.device
        rate = model.params.sample_rate
        classifier = train_word_classifier(splits["train"], len(words), rate, params, ctx.seed,
                                           device, ctx.progress)
        test_audio, test_labels = _stack(splits["test"])
        test_accuracy = float((classify(classifier, test_audio, device) == test_labels).float().mean())
        ctx.log.info("word classifier: %.3f accuracy on %d real test tokens", test_accuracy, len(test_labels))

        network.eval()
        rows = []
        for value in params.values:
            for code in ctx.progress(model.code_names(), description=f"codes at value {value:g}"):
                audio, _ = model.generate(network, code, value, params.n_per_code, params.seed)
                audio = audio.unsqueeze(1)
                with torch.no_grad():
                    logits = torch.cat([network(chunk.to(device)).float().cpu() for chunk in audio.split(64)])
                target = (model.code_vector(code, 1.0) > 0)
                if model.code == "categorical":
                    q_accuracy = float((logits.argmax(dim=1) == int(code)).float().mean())
                else:
                    q_accuracy = float(((logits > 0) == target).all(dim=1).float().mean())
                predicted = classify(classifier, audio, device)
                counts = np.bincount(predicted.numpy(), minlength=len(words))
                best = int(counts.argmax())
                rows.append({"code": code, "value": value, "q_accuracy": q_accuracy, "word": words[best],
                             "purity": float(counts[best] / len(predicted)),
                             **{f"n_{w}": int(c) for w, c in zip(words, counts, strict=True)}})
                for index in range(min(params.keep_audio, len(audio))):
                    folder = ctx.workdir / "audio" / f"value-{value:g}" / f"code-{code}"
                    write_audio(folder / f"{index:03d}.wav", audio[index, 0].clamp(-1, 1).numpy(), rate)
        self._write(ctx, rows, words, test_accuracy, len(test_labels))

    def _write(self, ctx: StageContext, rows: list[dict], words: list[str], test_accuracy: float,
               n_test: int) -> None:
        write_csv(ctx.workdir / "lexical.csv", rows)
        summary = {
            "classifier_test_accuracy": test_accuracy,
            "classifier_test_tokens": n_test,
            "chance_purity": 1 / len(words),
            "mean_purity": float(np.mean([r["purity"] for r in rows])),
            "mean_q_accuracy": float(np.mean([r["q_accuracy"] for r in rows])),
            "distinct_words": len({r["word"] for r in rows}),
            "codes": rows,
        }
        write_json(ctx.workdir / "lexical.json", summary, sort_keys=False)
        self._plot(ctx, rows, words)
        table = ["| value | code | Q accuracy | word | purity |", "| --- | --- | --- | --- | --- |"]
        table += [
            f"| {r['value']:g} | {r['code']} | {r['q_accuracy']:.2f} | {r['word']} | {r['purity']:.2f} |"
            for r in rows
        ]
        ctx.write_report(
            f"An independent word classifier (log-mel CNN) trained on the real training tokens "
            f"scores {test_accuracy:.3f} on {n_test} real test tokens. Each code's "
            f"{self.params.n_per_code} generated outputs (noise seed {self.params.seed}) were "
            f"classified: a code maps to its majority word, and purity is that word's share "
            f"(chance {1 / len(words):.2f}). Mean purity {summary['mean_purity']:.2f} over "
            f"{summary['distinct_words']} distinct words; mean Q accuracy on generated outputs "
            f"{summary['mean_q_accuracy']:.2f}. Purity shows lexical learning only together with "
            f"codes mapping to different words: outputs that all sound alike (noise early in "
            f"training) give a high purity for a single word.\n\n" + "\n".join(table) +
            "\n\n![code by word](lexical.png)\n\n"
            f"*How the {self.params.n_per_code} outputs generated for each code and value were "
            "classified by the word classifier (rows: code and value; columns: words); from this "
            "run's generator.*\n"
        )

    def _plot(self, ctx: StageContext, rows: list[dict], words: list[str]) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        shares = np.array([[r[f"n_{w}"] for w in words] for r in rows], dtype=float)
        shares /= shares.sum(axis=1, keepdims=True)
        fig, ax = plt.subplots(figsize=(1 + 0.6 * len(words), 1 + 0.35 * len(rows)))
        image = ax.imshow(shares, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(words)), words, rotation=45, ha="right")
        ax.set_yticks(range(len(rows)), [f"{r['code']} @ {r['value']:g}" for r in rows])
        ax.set_xlabel("word the classifier hears")
        ax.set_ylabel("code @ value")
        fig.colorbar(image, ax=ax, label="share of outputs")
        fig.tight_layout()
        with atomic_write(ctx.workdir / "lexical.png", "wb") as handle:
            fig.savefig(handle, format="png", dpi=100)
        plt.close(fig)


@hookimpl
def wavelens_probes():
    return [Contribution("lexical_learning", LexicalParams,
                         "Q accuracy and code→word purity of a ciwGAN/fiwGAN's generated outputs",
                         LexicalLearning)]
