#!/usr/bin/env python
"""Lexical learning at each checkpoint of a ciwGAN/fiwGAN run: when did it learn?

    scripts/lexical_curve.py RUN_DIR [--every 500] [--n-per-code 100] [--values 1 2]

For every kept checkpoint of the run's model stage (or every ``--every`` steps of
them), the generator's outputs are scored as the ``lexical_learning`` probe scores
them: the Q-network's accuracy on its own codes, and the code→word
accuracy under the word classifier trained on the run's real training tokens (one
classifier for all checkpoints, with the probe's settings). Writes
``lexical_curve.csv`` and ``lexical_curve.png`` into the run directory, next to the
chance lines; works on a run that is still training (it reads the checkpoints kept
so far).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def model_stage(run_dir: Path) -> Path:
    """The model stage's folder: finished, or still training (``model.partial``)."""
    done = run_dir / "stages" / "model"
    return done if done.is_dir() else run_dir / "stages" / "model.partial"


def _checkpoint_steps(folder: Path, every: int) -> list[int]:
    from wavelens import CheckpointManager

    return [step for step in CheckpointManager(folder).steps() if step % every == 0]


def lexical_curve(run_dir: Path, every: int, n_per_code: int, values: list[float]) -> list[dict]:
    import numpy as np
    import torch

    from wavelens import CheckpointManager
    from wavelens.host import load_spec
    from wavelens.plugins.ciwgan.evaluation import (
        LexicalParams,
        chance_one_to_one,
        classify,
        code_word,
        train_word_classifier,
        with_noise_floor,
    )

    resolved = load_spec(run_dir / "spec.yaml")
    model = resolved.component("model").build()
    stages = run_dir / "stages"
    folder = stages / "dataset" if (stages / "dataset").is_dir() else stages / "data"  # a run before spec 2
    splits = resolved.component("dataset").build().load(folder)
    words = list(splits["train"].classes)
    params = LexicalParams(n_per_code=n_per_code, values=values)
    device = torch.device("cpu")
    rate = model.params.sample_rate
    classifier = train_word_classifier(splits["train"], len(words), rate, params, resolved.spec.seed,
                                       device, lambda items, **_: items)
    test = torch.stack([splits["test"][i]["audio"] for i in range(len(splits["test"]))])
    labels = torch.tensor([splits["test"][i]["label"] for i in range(len(splits["test"]))])
    test_accuracy = float((classify(classifier, test, device) == labels).float().mean())
    check_rng = torch.Generator().manual_seed(resolved.spec.seed)
    floored = with_noise_floor(test, params.check_noise_dbfs, check_rng)
    noisy_accuracy = float((classify(classifier, floored, device) == labels).float().mean())
    print(f"word classifier: {test_accuracy:.3f} on {len(labels)} real test tokens, {noisy_accuracy:.3f} "
          f"with noise at {params.check_noise_dbfs:g} dBFS", flush=True)

    network = model.network()
    folder = model_stage(run_dir) / "checkpoints"
    chance = chance_one_to_one(len(model.code_names()), len(words), n_per_code, rule=code_word)
    rows = []
    for step in _checkpoint_steps(folder, every):
        state = torch.load(CheckpointManager(folder).path(step), map_location="cpu", weights_only=True)
        network.load_state_dict(state["network"])
        network.eval()
        for value in values:
            counts, q = [], []
            for code in model.code_names():
                audio, _ = model.generate(network, code, value, n_per_code, params.seed)
                audio = audio.unsqueeze(1)
                with torch.no_grad():
                    logits = network(audio)
                if model.code == "categorical":
                    q.append(float((logits.argmax(dim=1) == int(code)).float().mean()))
                else:
                    target = model.code_vector(code, 1.0) > 0
                    q.append(float(((logits > 0) == target).all(dim=1).float().mean()))
                counts.append(np.bincount(classify(classifier, audio, device).numpy(), minlength=len(words)))
            accuracy, _ = code_word(np.array(counts))
            majority = {words[int(c.argmax())] for c in counts}
            rows.append({"step": step, "value": value, "q_accuracy": float(np.mean(q)),
                         "code_word_accuracy": accuracy, "distinct_words": len(majority),
                         "chance_code_word": chance, "classifier_test_accuracy": test_accuracy,
                         "classifier_noisy_test_accuracy": noisy_accuracy})
            print(f"step {step} value {value:g}: Q {np.mean(q):.3f}  code→word {accuracy:.3f} "
                  f"(chance {chance:.3f})  {len(majority)} distinct words", flush=True)
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    for value in sorted({r["value"] for r in rows}):
        at = [r for r in rows if r["value"] == value]
        steps = [r["step"] for r in at]
        ax.plot(steps, [r["q_accuracy"] for r in at], marker="o", label=f"Q accuracy, value {value:g}")
        ax.plot(steps, [r["code_word_accuracy"] for r in at], marker="s",
                label=f"code→word, value {value:g}")
    ax.axhline(rows[0]["chance_code_word"], color="grey", linestyle="--", linewidth=1,
               label="chance (code→word)")
    ax.set_xlabel("generator step")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(REPO))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--every", type=int, default=1, help="score checkpoints at multiples of this step")
    parser.add_argument("--n-per-code", type=int, default=100)
    parser.add_argument("--values", type=float, nargs="+", default=[1.0, 2.0])
    args = parser.parse_args(argv)
    from wavelens import write_csv

    rows = lexical_curve(args.run_dir.resolve(), args.every, args.n_per_code, args.values)
    if not rows:
        print("no checkpoints yet", file=sys.stderr)
        return 1
    write_csv(args.run_dir / "lexical_curve.csv", rows)
    plot(rows, args.run_dir / "lexical_curve.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
