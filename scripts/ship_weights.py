#!/usr/bin/env python
"""Copy a finished run's trained network into ``weights/NAME/`` with its manifest.

    scripts/ship_weights.py RUN_DIR NAME --command "wavelens run specs/...yaml" \
        --machine "2 CPU cores, no GPU" [--score-pairs ../shared/data/voicebank_demand]

The folder holds ``spec.yaml`` (the run's resolved spec), ``model.pt`` (the model
stage's weights) and ``manifest.json``: the spec's source and profile, the command,
the commit, the steps, the wall time of the model stage, the machine, the size, and
the figures reached. With ``--score-pairs`` (a folder of ``clean/`` and ``noisy/``)
the figures are the mean scores of the shipped network's enhancement of the noisy
files, next to those of the noisy files themselves, computed through
``wavelens enhance`` and ``wavelens evaluate`` exactly as
``tests/test_shipped_weights.py`` recomputes them. ``--figures FILE`` adds a JSON
object of figures computed elsewhere (a ciwGAN's lexical learning).

``--checkpoint STEP`` ships the network of the model stage's checkpoint of that step
instead of its final weights, from a run that was stopped there (SIGTERM or Ctrl-C
end a run at a checkpoint); the manifest says so.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
METRICS = "pesq,stoi,composite"
FIGURES = ("pesq", "csig", "cbak", "covl", "segsnr", "stoi")


def score_pairs(weights: Path, pairs: Path, workdir: Path) -> dict[str, dict[str, float]]:
    """Mean scores over the pairs in ``pairs`` of the noisy files and of their
    enhancement by the network in ``weights``, through the CLI."""
    from framework.cli import main

    enhanced = workdir / "enhanced"
    if main(["enhance", str(pairs / "noisy"), "-o", str(enhanced), "--checkpoint", str(weights),
             "--device", "cpu"]) != 0:
        raise SystemExit(f"ship: enhancing {pairs / 'noisy'} failed")
    result = {}
    for label, estimate in (("noisy", pairs / "noisy"), ("enhanced", enhanced / "noisy")):
        out = workdir / f"{label}-scores"
        if main(["evaluate", "--reference", str(pairs / "clean"), "--estimate", str(estimate),
                 "--metrics", METRICS, "--workers", "1", "--out", str(out)]) != 0:
            raise SystemExit(f"ship: scoring {estimate} failed")
        (row,) = json.loads((out / "summary.json").read_text())["summary"]
        if row["scored"] != row["files"]:
            raise SystemExit(f"ship: only {row['scored']} of {row['files']} files of {estimate} scored")
        result[label] = {key: round(float(row[key]), 4) for key in FIGURES} | {"files": row["files"]}
    return result


def _last_step(losses: Path) -> int | None:
    """The last logged training step (``losses.csv``, written by the model stage)."""
    import csv

    if not losses.is_file():
        return None
    rows = list(csv.DictReader(losses.read_text().splitlines()))
    return int(float(rows[-1]["step"])) if rows and "step" in rows[0] else None


def _seconds_to(checkpoint: Path, record: dict, run_dir: Path) -> float:
    """Wall time of the model stage up to ``checkpoint``: from the run's start plus its
    data stage to the checkpoint's modification time (a stopped run has no stage.json
    of its model stage)."""
    started = dt.datetime.fromisoformat(record["created"]).timestamp()
    data = run_dir / "stages" / "data" / "stage.json"
    if data.is_file():
        started += float(json.loads(data.read_text()).get("duration_s") or 0.0)
    return round(checkpoint.stat().st_mtime - started, 1)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("name")
    parser.add_argument("--command", required=True, help="the command that trained it")
    parser.add_argument("--machine", required=True, help="where it trained, in words")
    parser.add_argument("--score-pairs", type=Path, help="a folder with clean/ and noisy/ to score on")
    parser.add_argument("--figures", type=Path, help="a JSON object of further figures")
    parser.add_argument("--note", default="", help="anything a reader of the manifest should know")
    parser.add_argument("--checkpoint", type=int, metavar="STEP",
                        help="ship the checkpoint of this step of a stopped run")
    args = parser.parse_args(argv)

    import torch

    run_dir = args.run_dir.resolve()
    record = json.loads((run_dir / "run.json").read_text())
    stage = run_dir / "stages" / "model"
    target = REPO / "weights" / args.name
    if args.checkpoint is None:
        if record.get("status") != "complete":
            raise SystemExit(f"ship: {run_dir} is {record.get('status')}, not complete")
        stage_record = json.loads((stage / "stage.json").read_text())
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(stage / "model.pt", target / "model.pt")
        steps, seconds = _last_step(stage / "losses.csv"), stage_record.get("duration_s")
    else:
        from framework import CheckpointManager, save_torch

        if not stage.is_dir():  # still training, or stopped: the stage folder is partial
            stage = run_dir / "stages" / "model.partial"
        checkpoint = CheckpointManager(stage / "checkpoints").path(args.checkpoint)
        if not checkpoint.is_file():
            raise SystemExit(f"ship: no checkpoint of step {args.checkpoint} ({checkpoint})")
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
        target.mkdir(parents=True, exist_ok=True)
        save_torch(target / "model.pt", saved["network"])
        steps = args.checkpoint
        seconds = _seconds_to(checkpoint, record, run_dir)
        record["finished"] = dt.datetime.fromtimestamp(checkpoint.stat().st_mtime,
                                                       dt.timezone.utc).isoformat(timespec="seconds")
    shutil.copyfile(run_dir / "spec.yaml", target / "spec.yaml")

    state = torch.load(target / "model.pt", map_location="cpu", weights_only=True)
    manifest = {
        "name": args.name,
        "spec": record.get("spec_source"),
        "profile": record.get("profile"),
        "variant": record.get("variant"),
        "command": args.command,
        "commit": record["git"]["revision"],
        "dirty": record["git"]["dirty"],
        "trained": {"started": record["created"], "finished": record["finished"]},
        "steps": steps,
        "from_checkpoint": args.checkpoint is not None,
        "model_stage_seconds": seconds,
        "machine": args.machine,
        "device": record.get("device"),
        "lock_sha256": (record.get("lock") or {}).get("sha256"),
        "parameters": int(sum(t.numel() for t in state.values() if torch.is_floating_point(t))),
        "model_pt_sha256": _sha256(target / "model.pt"),
        "note": args.note,
        "figures": {},
        "written": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")  # loadable now
    if args.figures is not None:
        manifest["figures"].update(json.loads(args.figures.read_text()))
    if args.score_pairs is not None:
        with tempfile.TemporaryDirectory() as scratch:
            scores = score_pairs(target, args.score_pairs.resolve(), Path(scratch))
        manifest["figures"]["pairs"] = str(args.score_pairs)
        manifest["figures"].update(scores)
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(manifest["figures"], indent=2))
    print(f"ship: wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
