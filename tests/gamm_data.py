"""Simulated averaged feature-map curves with known truth, for the GAMM tests.

Each token is one word's 16-sample curve: the word's true curve, plus a token-level
random curve (an intercept and a slope), plus AR(1) noise within the token, as the
Q-network's averaged Conv5 values look. The generator is fixed by ``seed``.

    python tests/gamm_data.py out.csv [--tokens 200] [--seed 0]

writes the table (token, word, sample, value) beside the true curves (truth.csv).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

WORDS = ["ask", "carry", "dark", "greasy", "suit", "wash", "water", "year"]
SAMPLES = 16


def true_curve(word_index: int, sample: np.ndarray) -> np.ndarray:
    """A smooth curve per word: a level, a bump whose place and width vary by word,
    and a gentle slope."""
    s = (np.asarray(sample, dtype=float) - 1) / (SAMPLES - 1)  # 0 … 1
    level = 0.5 + 0.06 * word_index
    centre, width = 0.2 + 0.08 * word_index, 0.12 + 0.02 * (word_index % 3)
    height = 0.4 * (1 if word_index % 2 == 0 else -1) * (0.6 + 0.1 * (word_index % 4))
    return (
        level + height * np.exp(-0.5 * ((s - centre) / width) ** 2) + 0.1 * (s - 0.5) * (word_index % 3 - 1)
    )


def simulate(
    n_tokens: int = 200,
    seed: int = 0,
    rho: float = 0.6,
    noise_sd: float = 0.05,
    intercept_sd: float = 0.08,
    slope_sd: float = 0.05,
    words: list[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(table, truth)``: the tidy table and each word's true curve per sample."""
    words = words or WORDS
    rng = np.random.default_rng(seed)
    sample = np.arange(1, SAMPLES + 1)
    rows = []
    for t in range(n_tokens):
        w = t % len(words)
        noise = np.empty(SAMPLES)
        noise[0] = rng.normal(0, noise_sd / np.sqrt(1 - rho**2))
        for i in range(1, SAMPLES):
            noise[i] = rho * noise[i - 1] + rng.normal(0, noise_sd)
        token_curve = rng.normal(0, intercept_sd) + rng.normal(0, slope_sd) * (sample - 8.5) / 7.5
        value = true_curve(w, sample) + token_curve + noise
        token = f"{words[w]}_{t:04d}"
        rows += [
            {"token": token, "word": words[w], "sample": int(s), "value": float(v)}
            for s, v in zip(sample, value, strict=True)
        ]
    truth = pd.DataFrame(
        [
            {"word": word, "sample": int(s), "value": float(v)}
            for w, word in enumerate(words)
            for s, v in zip(sample, true_curve(w, sample), strict=True)
        ]
    )
    return pd.DataFrame(rows), truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    table, truth = simulate(args.tokens, args.seed)
    table.to_csv(args.out, index=False)
    truth.to_csv(args.out.with_name("truth.csv"), index=False)


if __name__ == "__main__":
    main()
