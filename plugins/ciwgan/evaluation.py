"""``lexical_learning``: did the generator learn words, and does Q read its codes?

For a trained ciwGAN or fiwGAN (run as a probe stage after the model):

1. **Q accuracy.** Generate ``n_per_code`` outputs per code (fresh noise, the same
   noise for every code) and score how often the Q-network (eval mode, no phase
   shuffle) recovers the code: the arg-max for ciwGAN, every bit for fiwGAN.
2. **One-to-one code→word accuracy.** Train an independent word classifier on the
   real training tokens (log-mel features, a small 2-D CNN; each batch with a faint
   noise floor and a level change added, so that it hears words, not the exact
   digital silence of the real tokens' padding; the softmax outputs of
   ``classifiers`` such CNNs, seeded apart, averaged), check it on the real test
   tokens, clean and with a noise floor, and classify every generated output. For
   each code value, the
   codes are matched to distinct words so that as many outputs as possible agree
   (the Hungarian assignment over the code × word table); the share that agree is
   the one-to-one accuracy. Outputs that all sound like one word score 1/codes,
   however pure each code is; its chance level (outputs heard as random words) is
   estimated by simulation. Each code's majority word and its share (purity) are
   kept as secondary figures: purity alone reads 1 when every code collapses onto
   the same word.
3. **Code→word accuracy**, the figure that decides "learned". With no more codes
   than words it is the one-to-one accuracy. With more codes than words (a fiwGAN's
   2^bits classes for fewer words, as the papers train theirs) one-to-one leaves
   codes without a word and cannot reach 1; there, every word must be some code's
   word and several codes may share one (the best such assignment, exactly: each
   word's representative code by the Hungarian assignment, every other code its
   majority word). Outputs that all sound like one word still score low: every
   other word needs a code of its own.

The papers judge this by a phonetician's transcription of 100 outputs per code; a
classifier trained on real tokens is the automatic stand-in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio
from pydantic import Field
from scipy.optimize import linear_sum_assignment
from torch import nn

from wavelens import (
    Contribution,
    Params,
    Probe,
    StageContext,
    StageError,
    hookimpl,
    save_figure,
    write_audio,
    write_csv,
    write_json,
)

from .generative import Generative


class LexicalParams(Params):
    n_per_code: int = Field(100, ge=1, description="generated outputs per code and value")
    values: list[float] = Field([1.0], min_length=1,
                                description="code values to test (the papers also use values beyond 1)")
    seed: int = Field(0, description="seed of the generated noise")
    classifier_epochs: int = Field(15, ge=1, description="epochs of the word classifier")
    classifier_lr: float = Field(1e-3, gt=0, description="Adam learning rate of the word classifier")
    classifier_noise_dbfs: tuple[float, float] | None = Field(
        (-80.0, -30.0),
        description="range (dB re full scale, drawn uniformly per token and batch) of the white noise "
                    "floor added to the classifier's training tokens, with a level change of 0 to -6 dB; "
                    "null trains on the clean tokens only (a classifier then fails on any noise floor)")
    classifiers: int = Field(
        5, ge=1, le=50,
        description="independently seeded word classifiers whose softmax outputs are averaged: one "
                    "small CNN's decisions on generated audio vary with its seed (measured: one-to-one "
                    "0.76 to 0.96 for one network over 5 seeds); the spread of the single ones is reported")
    check_noise_dbfs: float = Field(
        -40.0, description="level of the white noise added to the real test tokens for the classifier's "
                           "robustness check (reported beside its clean accuracy)")
    keep_audio: int = Field(5, ge=0, description="generated WAV files kept per code and value")
    q_threshold: float = Field(0.95, ge=0, le=1,
                               description="mean Q accuracy from which the network counts as learned")
    word_threshold: float = Field(
        0.8, ge=0, le=1,
        description="code→word accuracy (one-to-one when codes ≤ words) from which it counts as learned")


def one_to_one(counts: np.ndarray) -> tuple[float, list[int]]:
    """The best one-to-one assignment of codes (rows) to words (columns) of a table
    of counts: the share of all outputs it explains, and each code's word (-1 for a
    code left without one, when there are more codes than words)."""
    rows, columns = linear_sum_assignment(counts, maximize=True)
    words = [-1] * counts.shape[0]
    for row, column in zip(rows, columns, strict=True):
        words[row] = int(column)
    total = counts.sum()
    return (float(counts[rows, columns].sum() / total) if total else float("nan")), words


def code_word(counts: np.ndarray) -> tuple[float, list[int]]:
    """The code→word accuracy of a table of counts (codes × words) and each code's
    word: one-to-one when there are no more codes than words; otherwise the best
    assignment in which every word is some code's word and codes may share words.

    That optimum is exact: with ``best[c]`` a code's majority count, an assignment's
    total is ``Σ best[c]`` minus, over each word's representative code ``c``,
    ``best[c] − counts[c, w]``; the Hungarian assignment of words to distinct codes
    minimises that loss, and every other code takes its majority word."""
    n_codes, n_words = counts.shape
    if n_codes <= n_words:
        return one_to_one(counts)
    best = counts.max(axis=1)
    loss = best[:, None] - counts  # (codes, words)
    rows, columns = linear_sum_assignment(loss)
    words = [int(w) for w in counts.argmax(axis=1)]
    for row, column in zip(rows, columns, strict=True):
        words[row] = int(column)
    total = counts.sum()
    explained = counts[np.arange(n_codes), words].sum()
    return (float(explained / total) if total else float("nan")), words


def chance_one_to_one(n_codes: int, n_words: int, n_per_code: int, seed: int = 0,
                      draws: int = 200, rule: Callable = one_to_one) -> float:
    """The mean one-to-one accuracy (or another ``rule``'s) when every output is
    heard as a word drawn at random (uniformly): the chance line, a little above
    1/words for small samples."""
    rng = np.random.default_rng(seed)
    scores = [rule(rng.multinomial(n_per_code, [1 / n_words] * n_words, size=n_codes))[0]
              for _ in range(draws)]
    return float(np.mean(scores))


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


def with_noise_floor(audio: torch.Tensor, dbfs: torch.Tensor | float, generator: torch.Generator
                     ) -> torch.Tensor:
    """``audio`` (B, 1, T) plus white noise of RMS ``dbfs`` dB re full scale (one
    level per token, or one for all)."""
    level = 10 ** (torch.as_tensor(dbfs, dtype=audio.dtype).reshape(-1, 1, 1) / 20)
    return audio + level * torch.randn(audio.shape, generator=generator, dtype=audio.dtype)


class WordEnsemble(nn.Module):
    """Word classifiers whose softmax outputs are averaged; ``members`` are the single
    classifiers."""

    def __init__(self, members: list[WordClassifier]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.softmax(m(audio), dim=1) for m in self.members]).mean(dim=0)


def train_word_classifier(train: Any, n_words: int, rate: int, params: LexicalParams,
                          seed: int, device: torch.device, progress: Any) -> WordEnsemble:
    """``params.classifiers`` word classifiers (seeds ``seed``, ``seed + 1000``, ...),
    each trained by :func:`train_one_classifier`, as one ensemble."""
    return WordEnsemble([train_one_classifier(train, n_words, rate, params, seed + 1000 * index, device,
                                              progress) for index in range(params.classifiers)])


def train_one_classifier(train: Any, n_words: int, rate: int, params: LexicalParams,
                         seed: int, device: torch.device, progress: Any) -> WordClassifier:
    """One independent word classifier, trained on the real training tokens.

    Real tokens are padded with exact digital zeros, which a log-mel feature sees as
    a floor 120 dB down; a generator's output is never that silent. Trained on the
    clean tokens alone, the classifier then hears almost any generated output as one
    word (measured: 0.99 on the clean real test tokens of the 3-word corpus and 0.39
    with white noise at -40 dBFS added). Each batch therefore gets a noise floor at
    a level drawn from ``classifier_noise_dbfs`` and a level change, as a listener
    ignores both."""
    torch.manual_seed(seed)
    audio, labels = _stack(train)
    model = WordClassifier(n_words, rate).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=params.classifier_lr)
    order_rng = torch.Generator().manual_seed(seed)
    noise_rng = torch.Generator().manual_seed(seed + 1)
    model.train()
    for _ in progress(range(params.classifier_epochs), total=params.classifier_epochs,
                      description="word classifier"):
        for batch in torch.randperm(len(audio), generator=order_rng).split(32):
            tokens = audio[batch]
            if params.classifier_noise_dbfs is not None:
                low, high = params.classifier_noise_dbfs
                dbfs = low + (high - low) * torch.rand(len(batch), generator=noise_rng)
                gain = 10 ** (-6 * torch.rand(len(batch), 1, 1, generator=noise_rng) / 20)
                tokens = with_noise_floor(tokens, dbfs, noise_rng) * gain
            loss = F.cross_entropy(model(tokens.to(device)), labels[batch].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


@torch.no_grad()
def member_probabilities(ensemble: WordEnsemble, audio: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(members, outputs, words): each member's softmax over the words, in chunks of 64."""
    return torch.cat([torch.stack([torch.softmax(m(chunk.to(device)), dim=1) for m in ensemble.members]).cpu()
                      for chunk in audio.split(64)], dim=1)


@torch.no_grad()
def classify(model: nn.Module, audio: torch.Tensor, device: torch.device) -> torch.Tensor:
    return torch.cat([model(chunk.to(device)).argmax(dim=1).cpu() for chunk in audio.split(64)])


class LexicalLearning(Probe):
    def __init__(self, params: LexicalParams):
        self.params = params

    def run(self, ctx: StageContext) -> None:
        params = self.params
        model, network = ctx.model(), ctx.network()
        if not isinstance(model, Generative):
            raise StageError(f"lexical_learning needs a generative model (a ciwGAN, a fiwGAN or another "
                             f"with code_names, code_vector and generate); the spec's is "
                             f"{type(model).__name__}")
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
        check_rng = torch.Generator().manual_seed(ctx.seed)
        floored = with_noise_floor(test_audio, params.check_noise_dbfs, check_rng)
        noisy_accuracy = float((classify(classifier, floored, device) == test_labels).float().mean())
        ctx.log.info("word classifier: %.3f accuracy on %d real test tokens (%.3f with noise at %g dBFS)",
                     test_accuracy, len(test_labels), noisy_accuracy, params.check_noise_dbfs)

        network.eval()
        rows = []
        single: dict[float, list[list[np.ndarray]]] = {}  # value -> member -> each code's counts
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
                # Each member's softmax once: their mean is the ensemble's verdict, their
                # own arg-maxes the single classifiers' (WordEnsemble.forward's arithmetic).
                probabilities = member_probabilities(classifier, audio, device)
                predicted = probabilities.mean(dim=0).argmax(dim=1)
                counts = np.bincount(predicted.numpy(), minlength=len(words))
                for index, member in enumerate(probabilities):
                    heard = np.bincount(member.argmax(dim=1).numpy(), minlength=len(words))
                    single.setdefault(value, [[] for _ in classifier.members])[index].append(heard)
                best = int(counts.argmax())
                rows.append({"code": code, "value": value, "q_accuracy": q_accuracy, "word": words[best],
                             "purity": float(counts[best] / len(predicted)),
                             **{f"n_{w}": int(c) for w, c in zip(words, counts, strict=True)}})
                for index in range(min(params.keep_audio, len(audio))):
                    folder = ctx.workdir / "audio" / f"value-{value:g}" / f"code-{code}"
                    write_audio(folder / f"{index:03d}.wav", audio[index, 0].clamp(-1, 1).numpy(), rate)
        # Q guessing: one code in n for ciwGAN; every one of the n bits right for fiwGAN.
        n_codes = model.params.n_codes
        q_chance = 1 / n_codes if model.code == "categorical" else 0.5**n_codes
        # The one-to-one accuracy each single classifier would have given: the spread of
        # the instrument, reported beside the ensemble's figure.
        spread = [float(np.mean([code_word(np.array(single[value][member]))[0] for value in params.values]))
                  for member in range(len(classifier.members))]
        self._write(ctx, rows, words, test_accuracy, noisy_accuracy, len(test_labels), q_chance, spread)

    def _write(self, ctx: StageContext, rows: list[dict], words: list[str], test_accuracy: float,
               noisy_accuracy: float, n_test: int, q_chance: float, spread: list[float]) -> None:
        params = self.params
        by_value = []
        for value in params.values:
            at_value = [r for r in rows if r["value"] == value]
            counts = np.array([[r[f"n_{w}"] for w in words] for r in at_value])
            accuracy, assigned = code_word(counts)
            for row, word in zip(at_value, assigned, strict=True):
                row["assigned_word"] = words[word] if word >= 0 else ""
            by_value.append({
                "value": value,
                "code_word_accuracy": accuracy,
                "one_to_one_accuracy": one_to_one(counts)[0],
                "q_accuracy": float(np.mean([r["q_accuracy"] for r in at_value])),
                "distinct_words": len({r["word"] for r in at_value}),
                "assignment": {r["code"]: r["assigned_word"] for r in at_value},
            })
        write_csv(ctx.workdir / "lexical.csv", rows)
        n_codes = len(rows) // len(params.values)
        mean_q = float(np.mean([r["q_accuracy"] for r in rows]))
        mean_one_to_one = float(np.mean([v["one_to_one_accuracy"] for v in by_value]))
        mean_code_word = float(np.mean([v["code_word_accuracy"] for v in by_value]))
        shared = n_codes > len(words)
        summary = {
            "classifier_test_accuracy": test_accuracy,
            "classifier_noisy_test_accuracy": noisy_accuracy,
            "classifier_check_noise_dbfs": params.check_noise_dbfs,
            "classifier_test_tokens": n_test,
            "code_word_accuracy": mean_code_word,
            "code_word_rule": "every word some code's; codes may share words" if shared else "one-to-one",
            "chance_code_word": chance_one_to_one(n_codes, len(words), params.n_per_code, params.seed,
                                                  rule=code_word),
            "code_word_single_classifiers": spread,
            "one_to_one_accuracy": mean_one_to_one,
            "chance_one_to_one": chance_one_to_one(n_codes, len(words), params.n_per_code, params.seed),
            "mean_q_accuracy": mean_q,
            "chance_q_accuracy": q_chance,
            "distinct_words": len({r["word"] for r in rows}),
            "learned": bool(mean_q >= params.q_threshold and mean_code_word >= params.word_threshold),
            "thresholds": {"q_accuracy": params.q_threshold, "code_word_accuracy": params.word_threshold},
            "mean_purity": float(np.mean([r["purity"] for r in rows])),
            "chance_purity": 1 / len(words),
            "by_value": by_value,
            "codes": rows,
        }
        write_json(ctx.workdir / "lexical.json", summary, sort_keys=False)
        self._plot(ctx, rows, words, summary)
        table = [f"| value | code | Q accuracy | assigned word ({summary['code_word_rule']}) | majority word "
                 "| purity |",
                 "| --- | --- | --- | --- | --- | --- |"]
        table += [
            f"| {r['value']:g} | {r['code']} | {r['q_accuracy']:.2f} | {r['assigned_word'] or '-'} | "
            f"{r['word']} | {r['purity']:.2f} |"
            for r in rows
        ]
        shared = summary["code_word_rule"] != "one-to-one"
        values = "; ".join(
            f"value {v['value']:g}: code→word {v['code_word_accuracy']:.2f}"
            + (f" (one-to-one {v['one_to_one_accuracy']:.2f})" if shared else "")
            + f", Q {v['q_accuracy']:.2f}, {v['distinct_words']} distinct words" for v in summary["by_value"])
        verdict = "**learned**" if summary["learned"] else "**not learned**"
        n_codes = len(rows) // len(self.params.values)
        # Every code heard as one word: that word's codes score, every other word takes a
        # code whose outputs all miss it.
        collapsed = (n_codes - len(words) + 1) / n_codes if shared else 1 / n_codes
        rule = ("every word the word of at least one code, several codes may share a word: there are "
                f"{n_codes} codes for {len(words)} words; strictly one-to-one it is "
                f"{summary['one_to_one_accuracy']:.2f}, chance {summary['chance_one_to_one']:.2f}"
                if shared else "one-to-one")
        ctx.write_report(
            f"Lexical learning: {verdict} (the criterion: mean Q accuracy ≥ {self.params.q_threshold:g} "
            f"and code→word accuracy ≥ {self.params.word_threshold:g}). "
            f"Mean Q accuracy {summary['mean_q_accuracy']:.2f} (chance {summary['chance_q_accuracy']:.2f}); "
            f"code→word accuracy {summary['code_word_accuracy']:.2f} ({rule}; chance "
            f"{summary['chance_code_word']:.2f}; all outputs heard as one word: {collapsed:.2f}); "
            f"{summary['distinct_words']} of {len(words)} words reached as some code's majority word.\n\n"
            f"An independent word classifier (the average of {params.classifiers} log-mel CNNs, seeded "
            f"apart, trained on the real training tokens {self._augmentation()}) scores "
            f"{test_accuracy:.3f} on {n_test} real test tokens, and "
            f"{noisy_accuracy:.3f} on the same tokens with white noise at {params.check_noise_dbfs:g} dBFS "
            f"added (a generator's outputs are never digitally silent). Each code's "
            f"{self.params.n_per_code} generated outputs (noise seed {self.params.seed}) were "
            f"classified, and the codes matched to words so that most outputs agree "
            f"({values}); each single CNN of the average would have given a mean code→word "
            f"accuracy of {min(spread):.2f} to {max(spread):.2f}. Secondary: each code's majority "
            f"word and its share (purity; mean {summary['mean_purity']:.2f}, chance "
            f"{1 / len(words):.2f}), which reads high also when every code collapses onto one "
            f"word.\n\n" + "\n".join(table) +
            "\n\n![code by word](lexical.png)\n\n"
            f"*Left: how the {self.params.n_per_code} outputs generated for each code and value were "
            "classified by the word classifier (rows: code and value; columns: words). Right: mean Q "
            "accuracy and code→word accuracy per value, with their chance levels (dashed) "
            "and the thresholds of 'learned' (dotted); from this run's generator.*\n"
        )

    def _augmentation(self) -> str:
        noise = self.params.classifier_noise_dbfs
        if noise is None:
            return "clean, without a noise floor"
        return f"with a white noise floor at {noise[0]:g} to {noise[1]:g} dBFS and 0 to -6 dB of level change"

    def _plot(self, ctx: StageContext, rows: list[dict], words: list[str], summary: dict) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        shares = np.array([[r[f"n_{w}"] for w in words] for r in rows], dtype=float)
        shares /= shares.sum(axis=1, keepdims=True)
        fig, (ax, bars) = plt.subplots(
            1, 2, figsize=(4.5 + 0.6 * len(words), 1.5 + 0.35 * len(rows)),
            gridspec_kw={"width_ratios": [max(len(words), 2), 3]})
        image = ax.imshow(shares, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(words)), words, rotation=45, ha="right")
        ax.set_yticks(range(len(rows)), [f"{r['code']} @ {r['value']:g}" for r in rows])
        ax.set_xlabel("word the classifier hears")
        ax.set_ylabel("code @ value")
        fig.colorbar(image, ax=ax, label="share of outputs")

        by_value = summary["by_value"]
        x = np.arange(len(by_value))
        bars.bar(x - 0.2, [v["q_accuracy"] for v in by_value], 0.4, label="Q accuracy", color="tab:blue")
        bars.bar(x + 0.2, [v["code_word_accuracy"] for v in by_value], 0.4, label="code→word",
                 color="tab:orange")
        for level, color in ((summary["chance_q_accuracy"], "tab:blue"),
                             (summary["chance_code_word"], "tab:orange")):
            bars.axhline(level, color=color, linestyle="--", linewidth=1)
        for level, color in ((summary["thresholds"]["q_accuracy"], "tab:blue"),
                             (summary["thresholds"]["code_word_accuracy"], "tab:orange")):
            bars.axhline(level, color=color, linestyle=":", linewidth=1)
        bars.set_xticks(x, [f"value {v['value']:g}" for v in by_value])
        bars.set_ylim(0, 1.05)
        bars.set_ylabel("accuracy")
        bars.legend(loc="upper left", fontsize="small")
        fig.tight_layout()
        save_figure(fig, ctx.workdir / "lexical.png", dpi=100)


@hookimpl
def wavelens_probes():
    # Version 2: the word classifier trains with a noise floor, and is an average of
    # several (results differ from 1's). 3: the code→word accuracy decides "learned"
    # (one-to-one unless there are more codes than words).
    return [Contribution("lexical_learning", LexicalParams,
                         "Q accuracy and code→word accuracy of a ciwGAN/fiwGAN's outputs",
                         LexicalLearning, version="3")]
