"""The end of the setup: does this environment run wavelens?

Run by ``scripts/setup.sh`` with the virtual environment's Python. It checks that
every distribution ``requirements.lock`` pins for this interpreter is installed at
its locked version, that the packages with compiled parts load and work (torch,
torchaudio's extension, pesq, pystoi, soundfile with libsndfile, mssm), that
wavelens itself imports, and that the system tools run (R with mgcv, festival
with its three voices, espeak-ng). A broken environment ends with one line per
broken package, naming it and what to do, and exit status 1, instead of hundreds
of failing tests.

With ``--system warn`` (the setup could not install system packages: no root, no
sudo, or ``WAVELENS_SKIP_APT=1``) a missing system tool is a warning, since the
tests that need it skip; a system tool that is there but broken is always an error.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
import tempfile
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

TOP = Path(__file__).resolve().parent.parent
SYNC = "run `scripts/setup.sh --sync` to reinstall the locked versions"


def _load_environment_module():
    # By path, not as wavelens._environment: importing the package `framework`
    # imports torch, which is one of the things being checked.
    path = TOP / "framework" / "_environment.py"
    spec = importlib.util.spec_from_file_location("_wavelens_environment", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _one_line(error: BaseException) -> str:
    # The innermost cause says most (torchaudio's "undefined symbol" is the cause of
    # its "Could not load this library").
    while error.__cause__ is not None or (error.__context__ is not None and not error.__suppress_context__):
        error = error.__cause__ or error.__context__
    text = " ".join(str(error).split())
    if len(text) > 240:
        text = text[:237] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


# -- Python packages with compiled parts ----------------------------------------------


def _torch() -> None:
    import torch

    if float((torch.ones(3) @ torch.ones(3)).item()) != 3.0:
        raise RuntimeError("a dot product of ones gave the wrong value")


def _torchaudio() -> None:
    import torch
    import torchaudio

    # Importing this loads libtorchaudio.so, built against one torch release: a
    # mismatched pair fails here with an undefined symbol.
    from torchaudio._extension import _IS_TORCHAUDIO_EXT_AVAILABLE

    if not _IS_TORCHAUDIO_EXT_AVAILABLE:
        raise RuntimeError("torchaudio's compiled extension (_torchaudio) is missing")
    if torchaudio.functional.resample(torch.zeros(1600), 16000, 8000).shape[-1] != 800:
        raise RuntimeError("resampling 1600 samples from 16 to 8 kHz did not give 800")


def _pesq() -> None:
    from pesq import cypesq  # noqa: F401 - the compiled extension


def _pystoi() -> None:
    import numpy as np
    from pystoi import stoi

    rng = np.random.default_rng(0)
    clean = rng.standard_normal(16000)
    if not 0.99 < stoi(clean, clean, 16000) <= 1.0 + 1e-9:
        raise RuntimeError("STOI of a signal against itself is not 1")


def _soundfile() -> None:
    import io

    import numpy as np
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(160, dtype="float32"), 16000, format="WAV", subtype="FLOAT")
    buffer.seek(0)
    data, rate = soundfile.read(buffer, dtype="float32")
    if rate != 16000 or data.shape != (160,):
        raise RuntimeError("a WAV written to memory did not read back")


def _mssm() -> None:
    import mssm.models  # noqa: F401


def _wavelens() -> None:
    # Installed (editable in a checkout): the import names map to framework/ and plugins/.
    import wavelens  # noqa: F401
    import wavelens.plugins  # noqa: F401


PYTHON_CHECKS: list[tuple[str, Callable[[], None]]] = [
    ("torch", _torch),
    ("torchaudio", _torchaudio),
    ("pesq", _pesq),
    ("pystoi", _pystoi),
    ("soundfile", _soundfile),
    ("mssm", _mssm),
    ("wavelens", _wavelens),
]


# -- system tools ---------------------------------------------------------------------


def _run(command: list[str], timeout: float = 120) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(command[:2])} ...` exited {done.returncode}: "
                           f"{' '.join((done.stderr or done.stdout).split())[-200:]}")
    return done.stdout


def _rscript() -> None:
    script = 'suppressMessages(library(mgcv)); cat("mgcv", format(packageVersion("mgcv")))'
    found = _run(["Rscript", "-e", script])
    if not found.startswith("mgcv "):
        raise RuntimeError(f"Rscript did not report mgcv's version (it printed {found[:80]!r})")


FESTIVAL_VOICES = {"voice_kal_diphone": "festvox-kallpc16k", "voice_ked_diphone": "festvox-kdlpc16k",
                   "voice_cmu_us_slt_arctic_hts": "festvox-us-slt-hts"}


def _festival() -> None:
    with tempfile.TemporaryDirectory() as folder:
        wave = Path(folder) / "check.wav"
        script = Path(folder) / "check.scm"
        script.write_text(
            "".join(f"(if (symbol-bound? '{voice}) (format t \"HAVE {voice}\\n\"))\n"
                    for voice in FESTIVAL_VOICES)
            + f'(voice_kal_diphone)\n(utt.save.wave (utt.synth (Utterance Text "ask")) "{wave}")\n'
        )
        found = _run(["festival", "-b", str(script)]).split()
        missing = [package for voice, package in FESTIVAL_VOICES.items() if voice not in found]
        if missing:
            raise RuntimeError(f"festival has no voice from {', '.join(missing)}")
        if not wave.is_file() or wave.stat().st_size <= 44:
            raise RuntimeError("festival synthesised no audio for the word 'ask'")


def _espeak() -> None:
    with tempfile.TemporaryDirectory() as folder:
        wave = Path(folder) / "check.wav"
        _run(["espeak-ng", "-w", str(wave), "ask"])
        if not wave.is_file() or wave.stat().st_size <= 44:
            raise RuntimeError("espeak-ng synthesised no audio for the word 'ask'")


# (what to report, the command that must exist, the check, the Debian packages)
SYSTEM_CHECKS: list[tuple[str, str, Callable[[], None], str]] = [
    ("R with mgcv", "Rscript", _rscript, "r-base-core r-cran-mgcv"),
    ("festival", "festival", _festival, "festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts"),
    ("espeak-ng", "espeak-ng", _espeak, "espeak-ng"),
]


# -- the whole check ------------------------------------------------------------------


def check(lock: Path, system: str, verbose: bool = False) -> tuple[list[str], list[str]]:
    """The errors and warnings, one line each, for this environment."""
    environment = _load_environment_module()
    errors: list[str] = []
    cautions: list[str] = []

    # One line per package: a package at another version than the lock's that
    # also fails to load is said once, with both facts.
    mismatched: dict[str, str] = {}
    for name, versions in environment.differences(lock).items():
        installed = versions["installed"]
        state = f"{installed} is installed" if installed else "is not installed"
        locked = versions["locked"]
        mismatched[environment.canonical_name(name)] = f"{name} {state}, but {lock.name} pins {locked}"

    failed: list[str] = []
    for name, probe in PYTHON_CHECKS:
        if name == "wavelens" and failed:
            break  # it imports the packages that failed: it would fail the same way
        try:
            with warnings.catch_warnings():  # what a package warns on import is no concern here
                warnings.simplefilter("ignore")
                probe()
        except BaseException as error:  # noqa: BLE001 - an import can fail in any way
            if isinstance(error, KeyboardInterrupt):
                raise
            if verbose:
                traceback.print_exc()
            failed.append(name)
            mismatch = mismatched.pop(name, None)
            if mismatch:
                errors.append(f"{mismatch}, and it does not load ({_one_line(error)}); {SYNC}")
            elif name == "wavelens":
                errors.append(f"wavelens does not import ({_one_line(error)}); run `scripts/setup.sh "
                              "--sync`; if that does not help, report it with `--verbose`'s traceback")
            else:
                errors.append(f"{name} does not load ({_one_line(error)}); {SYNC}")
    errors[:0] = [f"{line}; {SYNC}" for line in mismatched.values()]

    for label, command, probe, packages in SYSTEM_CHECKS:
        if shutil.which(command) is None:
            line = f"{label}: `{command}` is not installed; install it with `sudo apt-get install {packages}`"
            if system == "require":
                errors.append(line)
            else:
                cautions.append(line + " (until then the tests that need it are skipped)")
            continue
        try:
            probe()
        except (OSError, RuntimeError, subprocess.SubprocessError) as error:
            errors.append(f"{label} does not work ({_one_line(error)}); "
                          f"reinstall it with `sudo apt-get install --reinstall {packages}`")
    return errors, cautions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lock", type=Path, default=TOP / "requirements.lock")
    parser.add_argument("--system", choices=["require", "warn"], default="require",
                        help="whether a missing system tool is an error (default) or a warning")
    parser.add_argument("--verbose", action="store_true", help="print the traceback of each failure")
    options = parser.parse_args(argv)
    errors, cautions = check(options.lock, options.system, options.verbose)
    for line in cautions:
        print(f"setup: warning: {line}", file=sys.stderr)
    for line in errors:
        print(f"setup: error: {line}", file=sys.stderr)
    if errors:
        print(f"setup: the environment is broken ({len(errors)} problem(s) above); nothing was run",
              file=sys.stderr)
        return 1
    print("setup: environment checked: the locked Python packages load, and "
          + ("the system tools run" if not cautions else "some system tools are missing (warnings above)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
