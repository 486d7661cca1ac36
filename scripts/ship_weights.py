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
``tests/test_shipped_weights.py`` recomputes them. A run with a ``lexical_learning``
probe (ciwGAN, fiwGAN) contributes that probe's figures (``figures.lexical``).
``--figures FILE`` adds a JSON object of figures computed elsewhere. The manifest
also records the model stage's key, so a test can check that the spec's command
still trains the same network.

``--spec SPEC [--profile NAME]`` names the spec that retrains the network when it
is not the run's own (a run started with ``--set`` overrides, whose settings a spec
profile now holds): the script checks that its model stage has the run's key.

``--set KEY.PATH=VALUE`` changes a setting of the shipped spec that applies only
when the network is used, not to how it was trained (a CSM-VANet's ``vad_floor``
chosen afterwards on held-apart data); the manifest lists them.

``--checkpoint STEP`` ships the network of the model stage's checkpoint of that step
instead of its final weights (from a run stopped there, or one that went on); the
manifest says so. Its ``--spec`` must train STEP steps: its model stage key must be
the run's spec's with ``train.steps=STEP``, which the manifest records.
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
FIGURES = ("pesq", "csig", "cbak", "covl", "ssnr", "stoi")


def score_pairs(weights: Path, pairs: Path, workdir: Path) -> dict[str, dict[str, float]]:
    """Mean scores over the pairs in ``pairs`` of the noisy files and of their
    enhancement by the network in ``weights``, through the CLI."""
    from wavelens.cli import main

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
    data = run_dir / "stages" / "dataset" / "stage.json"
    if data.is_file():
        started += float(json.loads(data.read_text()).get("duration_s") or 0.0)
    return round(checkpoint.stat().st_mtime - started, 1)


LEXICAL = ("mean_q_accuracy", "chance_q_accuracy", "code_word_accuracy", "code_word_rule", "chance_code_word",
           "one_to_one_accuracy", "chance_one_to_one",
           "distinct_words", "learned", "thresholds", "classifier_test_accuracy",
           "classifier_noisy_test_accuracy", "classifier_test_tokens", "mean_purity")


def lexical_figures(run_dir: Path) -> dict | None:
    """The figures of the run's ``lexical_learning`` probe stage, if it has one:
    the summary and, per code value, the one-to-one accuracy, Q accuracy and the
    code→word assignment."""
    for stage in sorted([*(run_dir / "stages").glob("probes.*"), *(run_dir / "stages").glob("probe.*")]):
        path = stage / "lexical.json"
        if path.is_file():
            summary = json.loads(path.read_text())
            figures = {key: summary[key] for key in LEXICAL if key in summary}
            figures["by_value"] = summary["by_value"]
            first = summary["codes"][0]  # its word counts sum to the outputs per code
            figures["n_per_code"] = sum(v for k, v in first.items() if k.startswith("n_"))
            figures["stage"] = stage.name
            return figures
    return None


def _model_key(spec: Path, profile: str | None, overrides: list[str] | None = None) -> str | None:
    from wavelens.host import load_spec, plan_stages

    resolved = load_spec(spec, profile=profile, overrides=overrides)
    return next((plan.key for plan in plan_stages(resolved) if plan.name == "model"), None)


def _retraining_spec(spec: Path, profile: str | None, model_key: str | None) -> tuple[str, str | None]:
    """``(spec path relative to the repository, profile)`` of a spec that trains the
    run's network again: its model stage key must be the run's."""
    from wavelens.host import load_spec, plan_stages

    resolved = load_spec(spec, profile=profile)
    keys = [plan.key for plan in plan_stages(resolved) if plan.name == "model"]
    if keys != [model_key]:
        raise SystemExit(f"ship: {spec} (profile {profile}) does not train the run's network: its model "
                         f"stage key is {keys[0] if keys else None}, the run's {model_key}")
    spec = spec.resolve()
    return str(spec.relative_to(REPO) if spec.is_relative_to(REPO) else spec), profile


def _training_run(run_dir: Path, stage_record: dict) -> Path:
    """The run that computed the model stage of ``run_dir``: itself, or, when the
    stage was reused (linked) from an earlier run of the same experiment, that run,
    the earliest whose model stage has the same key and finish time."""
    found = []
    wanted = (stage_record.get("key"), stage_record.get("finished"))
    for record_path in run_dir.parent.glob("*/run.json"):
        other = record_path.parent / "stages" / "model" / "stage.json"
        if other.is_file():
            seen = json.loads(other.read_text())
            if (seen.get("key"), seen.get("finished")) == wanted:
                found.append((json.loads(record_path.read_text()).get("created", ""), record_path.parent))
    return min(found)[1] if found else run_dir


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
    parser.add_argument("--spec", type=Path,
                        help="the spec that retrains it (default: the run's own); its model stage "
                             "must have the run's key")
    parser.add_argument("--profile", help="the profile of --spec that retrains it")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="a setting of the shipped spec for using the network (not training it)")
    args = parser.parse_args(argv)

    import torch

    run_dir = args.run_dir.resolve()
    record = json.loads((run_dir / "run.json").read_text())
    stage = run_dir / "stages" / "model"
    target = REPO / "weights" / args.name
    model_key = next((s["key"] for s in record.get("stages", []) if s["kind"] == "model"), None)
    spec_source, profile = record.get("spec_source"), record.get("profile")
    if args.checkpoint is not None:
        # The network of step N of a longer run is the final network of the same run
        # stopped at N (training is deterministic and nothing in it depends on the
        # total): the spec that retrains it is the run's with train.steps = N.
        model_key = _model_key(run_dir / "spec.yaml", None, [f"train.steps={args.checkpoint}"])
    if args.spec is not None:  # checked before anything is written
        spec_source, profile = _retraining_spec(args.spec, args.profile, model_key)
    elif args.checkpoint is not None:
        raise SystemExit("ship: --checkpoint needs --spec (and --profile) naming the spec that trains "
                         f"{args.checkpoint} steps")
    if args.checkpoint is None:
        if record.get("status") != "complete":
            raise SystemExit(f"ship: {run_dir} is {record.get('status')}, not complete")
        stage_record = json.loads((stage / "stage.json").read_text())
        trainer = _training_run(run_dir, stage_record)
        if trainer != run_dir:  # the model stage was reused: the provenance is the training run's
            print(f"ship: the model stage was trained by {trainer}")
            trained = json.loads((trainer / "run.json").read_text())
            record = {**record, "git": trained["git"], "created": trained["created"],
                      "finished": stage_record.get("finished", record.get("finished"))}
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(stage / "model.pt", target / "model.pt")
        steps, seconds = _last_step(stage / "losses.csv"), stage_record.get("duration_s")
    else:
        from wavelens import CheckpointManager, save_torch

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
    if args.set:
        import yaml

        from wavelens.host import load_spec

        resolved = load_spec(run_dir / "spec.yaml", overrides=args.set)
        (target / "spec.yaml").write_text(
            yaml.safe_dump(resolved.to_dict(), sort_keys=False, allow_unicode=True))
    else:
        shutil.copyfile(run_dir / "spec.yaml", target / "spec.yaml")
    state = torch.load(target / "model.pt", map_location="cpu", weights_only=True)
    manifest = {
        "name": args.name,
        "spec": spec_source,
        "profile": profile,
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
        "model_stage_key": model_key,
        "use_settings": args.set,
        "parameters": int(sum(t.numel() for t in state.values() if torch.is_floating_point(t))),
        "model_pt_sha256": _sha256(target / "model.pt"),
        "note": args.note,
        "figures": {},
        "written": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")  # loadable now
    # A probe stage scored the run's final network, not an earlier checkpoint's.
    lexical = lexical_figures(run_dir) if args.checkpoint is None else None
    if lexical is not None:
        manifest["figures"]["lexical"] = lexical
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
