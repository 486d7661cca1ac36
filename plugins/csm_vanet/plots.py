"""Training curves of a CSM-VANet model stage."""

from __future__ import annotations

from pathlib import Path

from wavelens import save_figure


def plot_training(path: Path, history: list[dict], validations: list[dict]) -> None:
    """Loss terms against step (left) and validation PESQ against epoch (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (losses, pesq) = plt.subplots(1, 2, figsize=(10, 3.5))
    steps = [h["step"] for h in history]
    for key in ("total", "time", "mag", "complex", "vad"):
        if key in history[0]:
            losses.plot(steps, [h[key] for h in history], label=key, linewidth=2 if key == "total" else 1)
    losses.set_yscale("log")
    losses.set_xlabel("step")
    losses.set_ylabel("loss (log scale)")
    losses.set_title("multi-target loss")
    losses.legend(fontsize=8)
    if validations:
        pesq.plot([v["epoch"] for v in validations], [v["val_pesq"] for v in validations], marker="o")
    else:
        pesq.text(0.5, 0.5, "no validation", ha="center", va="center", transform=pesq.transAxes)
    pesq.set_xlabel("epoch")
    pesq.set_ylabel("wideband PESQ")
    pesq.set_title("validation (test files)")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
