"""``wavelens enhance``: enhance audio files or folders with a trained
speech-enhancement model (CSM-VANet, or a baseline's run).

    wavelens enhance IN... -o OUTDIR [--checkpoint RUN|CKPT|WEIGHTS] [--vad csv|segments|both]

Without ``--checkpoint`` it uses the network the project ships,
``weights/csm_vanet_cpu``. Every input gets a row in ``OUTDIR/enhance.csv`` (file,
outcome ``enhanced``/``refused``/``failed``, reason or notes, output); the exit status
is 1 when any file was not enhanced. docs/csm-vanet.md, "Enhancement", has the
details.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from wavelens import (
    AudioError,
    Command,
    CommandContext,
    StageError,
    hookimpl,
    load_run_model,
    probability,
    shipped_weights,
)

# The enhancement network `wavelens enhance` uses when given no --checkpoint.
SHIPPED_ENHANCER = "csm_vanet_cpu"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", help="audio files or folders (searched recursively)")
    parser.add_argument("-o", "--output", required=True, type=Path, help="output folder")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a run directory, its model stage folder, a training checkpoint (.pt) "
                        f"or a folder of shipped weights (default: weights/{SHIPPED_ENHANCER})")
    parser.add_argument("--vad", choices=["none", "csv", "segments", "both"], default="none",
                        help="also write the frame-level speech probability (NAME.vad.csv) and/or "
                        "speech segments (NAME.segments.csv)")
    parser.add_argument("--threshold", type=probability, default=0.5,
                        help="speech probability for segments")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                        help="autocast precision on CUDA (default fp32)")


def _enhance_inputs(inputs: list[Path]) -> list[tuple[Path, Path]]:
    """(file, path relative to the output folder) for every input file and every
    audio file under the input folders."""
    from wavelens import AUDIO_SUFFIXES

    found: list[tuple[Path, Path]] = []
    for item in inputs:
        if item.is_dir():
            files = sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
            if not files:
                raise StageError(f"{item} holds no audio files ({', '.join(sorted(AUDIO_SUFFIXES))})")
            found += [(f, Path(item.name) / f.relative_to(item)) for f in files]
        elif item.is_file():
            found.append((item, Path(item.name)))
        else:
            raise StageError(f"{item} does not exist")
    return found


def speech_segments(probabilities, frame_seconds: float, threshold: float = 0.5,
                    min_gap: float = 0.1) -> list[tuple[float, float]]:
    """(start, end) seconds of runs of frames at or above ``threshold``; runs apart by
    less than ``min_gap`` are joined. Frame ``t`` covers ±half a hop around
    ``t * frame_seconds``."""
    import numpy as np

    speech = np.asarray(probabilities) >= threshold
    segments: list[list[float]] = []
    edges = np.flatnonzero(np.diff(np.concatenate([[0], speech.astype(int), [0]])))
    for start, stop in zip(edges[::2], edges[1::2], strict=True):
        begin = max(0.0, (start - 0.5) * frame_seconds)
        end = (stop - 0.5) * frame_seconds
        if segments and begin - segments[-1][1] < min_gap:
            segments[-1][1] = end
        else:
            segments.append([begin, end])
    return [(round(a, 4), round(b, 4)) for a, b in segments]


def enhance(args: argparse.Namespace, ctx: CommandContext) -> int:
    # Imported here, not above: `wavelens --help` imports this module (keep it light).
    import numpy as np
    from rich.markup import escape

    from wavelens import (
        audio_channels,
        console,
        progress,
        read_audio,
        resolve_placement,
        write_audio,
        write_csv,
    )

    from .enhancement import Enhancer

    files = _enhance_inputs([Path(p) for p in args.inputs])
    checkpoint = args.checkpoint if args.checkpoint is not None else shipped_weights(SHIPPED_ENHANCER)
    model, network, source, _ = load_run_model(checkpoint, ctx.disabled)
    if not isinstance(model, Enhancer):
        raise StageError(f"the model of {source} ({type(model).__name__}) is not a speech-enhancement "
                            "model: it has no enhance()")
    placement = resolve_placement(args.device, args.precision)
    network = network.to(placement.device).eval()
    out = Path(args.output)
    rows: list[dict[str, str]] = []  # one per input: what happened to it, and why
    for path, relative in progress(files, total=len(files), description="enhancing"):
        notes: list[str] = []
        try:
            audio, rate = read_audio(path, channels="mix")
        except AudioError as exc:
            rows.append({"file": str(path), "outcome": "refused", "reason": exc.reason, "output": ""})
            continue
        channels = audio_channels(path)
        if channels > 1:
            notes.append(f"{channels} channels mixed to mono")
        if not np.any(audio):
            notes.append("silent input, written unchanged")
            enhanced, speech, frame_seconds = audio, None, None
        else:
            try:
                result = model.enhance(network, audio, rate, placement)
            except Exception as exc:  # noqa: BLE001 - one file's failure must not stop the others
                reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
                rows.append({"file": str(path), "outcome": "failed", "reason": reason, "output": ""})
                continue
            enhanced, speech = result.audio, result.speech_probability
            frame_seconds = result.frame_seconds
        if not np.all(np.isfinite(enhanced)):
            rows.append({"file": str(path), "outcome": "failed", "reason": "the model's output is not finite",
                         "output": ""})
            continue
        peak = float(np.max(np.abs(enhanced))) if len(enhanced) else 0.0
        if peak > 1.0:
            notes.append(f"output peaked at {peak:.2f}; clipped to ±1")
        target = out / relative.with_suffix(".wav")
        write_audio(target, np.clip(enhanced, -1, 1), rate)
        if speech is not None and args.vad in ("csv", "both"):
            write_csv(target.with_suffix(".vad.csv"),
                      [{"frame": i, "time_s": round(i * frame_seconds, 4), "speech_probability": float(p)}
                       for i, p in enumerate(speech)])
        if speech is not None and args.vad in ("segments", "both"):
            write_csv(target.with_suffix(".segments.csv"),
                      [{"start_s": a, "end_s": b} for a, b in speech_segments(speech, frame_seconds,
                                                                             args.threshold)],
                      ["start_s", "end_s"])
        rows.append({"file": str(path), "outcome": "enhanced", "reason": "; ".join(notes),
                     "output": str(target)})
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "enhance.csv", rows, ["file", "outcome", "reason", "output"])
    for row in rows:
        if row["outcome"] != "enhanced":
            console.print(f"[red]{row['outcome']}:[/] {escape(row['file'])}: {escape(row['reason'])}",
                          soft_wrap=True, highlight=False)
        elif row["reason"]:
            console.print(f"[yellow]note:[/] {escape(row['file'])}: {escape(row['reason'])}", soft_wrap=True,
                          highlight=False)
    done = sum(row["outcome"] == "enhanced" for row in rows)
    console.print(f"enhanced {done} of {len(files)} file(s) with {escape(str(source))} into "
                  f"{escape(str(out))}; every file's outcome in {escape(str(out / 'enhance.csv'))}",
                  soft_wrap=True, highlight=False)
    return 0 if done == len(files) else 1


@hookimpl
def wavelens_commands():
    return [Command("enhance", "enhance audio files or folders with a trained speech-enhancement model",
                    add_arguments, enhance)]
