"""``wavelens generate``: outputs of a trained ciwGAN or fiwGAN for one code.

    wavelens generate RUN|CKPT|WEIGHTS --code C [--value V] [-n N] [--seed S] [--out DIR]

The noise is drawn from ``--seed``, so the same seed gives the same noise for every
code, as in the papers: only the code changes between two codes' outputs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from wavelens import Command, CommandContext, StageError, finite_float, hookimpl, int_between, load_run_model

MAX_GENERATE = 10_000  # outputs per call: 10,000 of 16,384 samples are 655 MB


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", type=Path, help="a run directory, its model stage, a checkpoint "
                        "file or a folder of shipped weights")
    parser.add_argument("--code", required=True,
                        help="the code to set: an index, or a bit string for binary codes")
    parser.add_argument("--value", type=finite_float, default=1.0,
                        help="value of the set code (outside the training range, e.g. 2)")
    parser.add_argument("-n", type=int_between(1, MAX_GENERATE), default=100,
                        help=f"number of outputs (default 100, at most {MAX_GENERATE:,} per call)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the latent noise; the same seed gives the same noise for every code")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the WAV files (default RUN_DIR/generated/...)")


def generate(args: argparse.Namespace, ctx: CommandContext) -> int:
    # Imported here, not above: `wavelens --help` imports this module (keep it light).
    from rich.markup import escape

    from wavelens import console, write_audio

    from .generative import Generative

    model, network, source, run_dir = load_run_model(args.target, ctx.disabled)
    if not isinstance(model, Generative):
        raise StageError(f"the model of {source} ({type(model).__name__}) is not a generative model: "
                            "generate needs a ciwGAN, a fiwGAN or another model with generate()")
    outputs, rate = model.generate(network, args.code, args.value, args.n, args.seed)
    out = args.out or run_dir / "generated" / f"code-{args.code}_value-{args.value:g}_seed-{args.seed}"
    peak = float(outputs.abs().max()) if outputs.numel() else 0.0
    for index, audio in enumerate(outputs):
        # Values beyond ±1 are clipped when written, as the papers do.
        write_audio(Path(out) / f"{index:03d}.wav", audio.clamp(-1, 1).numpy(), rate)
    console.print(
        f"wrote {len(outputs)} outputs of code {escape(args.code)} at value {args.value:g} "
        f"(weights {escape(str(source))}; peak {peak:.3f}) to {escape(str(out))}",
        soft_wrap=True, highlight=False)
    return 0


@hookimpl
def wavelens_commands():
    return [Command("generate", "generate outputs from a trained generative model (ciwGAN, fiwGAN)",
                    add_arguments, generate)]
