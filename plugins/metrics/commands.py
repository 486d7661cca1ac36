"""``wavelens evaluate``: score folders of estimates against reference audio, file
by file, with metric plugins (PESQ, STOI, the composite measures, ...).

    wavelens evaluate --reference clean/ --estimate enhanced/ [--metrics composite,stoi]
                      [--by snr --meta log.csv] [--workers N] [--out DIR]

Writes ``scores.csv`` (one row per file: its values, or the reason it was refused),
``summary.json`` and ``summary.md``; the exit status is 1 when any file could not be
scored. docs/metrics.md has the conventions.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from wavelens import Command, CommandContext, hookimpl, int_between


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reference", required=True, type=Path, help="folder of reference (clean) files")
    parser.add_argument("--estimate", required=True, type=Path, nargs="+",
                        help="folder(s) of estimates, same file names; several: each system is scored and "
                             "compared with the first, file by file")
    parser.add_argument("--metrics", default="composite,stoi,si_sdr",
                        help="metric plugins, comma-separated (default composite,stoi,si_sdr)")
    parser.add_argument("--convention", choices=["voicebank", "loizou"], default=None,
                        help="composite measures' convention (default voicebank)")
    parser.add_argument("--rate", type=int_between(1000, 384000), default=16000,
                        help="rate to score at (default 16000)")
    parser.add_argument("--pesq-mode", choices=["wb", "nb"], default=None,
                        help="PESQ wideband (P.862.2, at 16 kHz; the column pesq) or narrowband (P.862.1, "
                             "at 8 kHz; the column pesq_nb); default: wb at 16 kHz and above, nb below")
    parser.add_argument("--upsample", action="store_true",
                        help="score audio recorded below --rate (e.g. 8 kHz audio upsampled for wideband "
                             "PESQ); refused by default: its upper band is empty")
    parser.add_argument("--workers", type=int_between(1, 1024), default=None,
                        help="worker processes (default: the cores this process may use)")
    parser.add_argument("--plot", action="store_true",
                        help="also draw scores.png, each metric's per-file values (several systems: "
                             "comparison.png is always drawn)")
    parser.add_argument("--by", default=None, help="group the summary by this column of --meta (Table II)")
    parser.add_argument("--meta", type=Path, default=None, help="CSV/TSV with a 'file' column and --by")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default ESTIMATE-scores; several systems: FIRST-comparison)")


def evaluate(args: argparse.Namespace, ctx: CommandContext) -> int:
    from .evaluate import evaluate as run

    return run(args, ctx)


@hookimpl
def wavelens_commands():
    return [Command("evaluate",
                    "score estimate audio against reference audio, file by file (PESQ, STOI, ...)",
                    add_arguments, evaluate)]
