"""CSM-VANet: features, shapes, ablations, loss, training, resume and enhancement."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from wavelens import CheckpointManager, StageContext, StageError, TrainSpec, resolve_placement
from wavelens.cli import main
from wavelens.host import Run, load_spec
from wavelens.plugins.csm_vanet.model import (
    CSMVANetModel,
    CSMVANetParams,
    EnhancementLoop,
    enhance_16k,
    loss_terms,
)
from wavelens.plugins.csm_vanet.networks import CSMVANet, Spectra, count_parameters
from wavelens.plugins.noisy_speech.commands import speech_segments

from conftest import SHARED_DATA

CPU = resolve_placement("cpu")
SMALL = {"channels": (8, 16), "conformers": 1, "dropout": 0.0}


def _small(**overrides) -> CSMVANet:
    torch.manual_seed(0)
    return CSMVANet(**{**SMALL, **overrides})


@pytest.mark.parametrize("length", [1601, 16037, 3999])
def test_feature_pipeline_round_trip_is_lossless(length):
    spectra = Spectra()
    audio = torch.randn(2, length) * 0.1
    compressed = spectra.analyse(audio)
    assert compressed.shape == (2, 2, length // 100 + 1, 201)
    back = spectra.synthesise(compressed, length)
    assert torch.max(torch.abs(back - audio)).item() < 1e-5


def test_features_compress_the_magnitude_and_keep_the_phase():
    spectra = Spectra()
    audio = torch.randn(1, 4000)
    spec = spectra.stft(audio)
    compressed = spectra.analyse(audio)
    complex_ = torch.complex(compressed[:, 0], compressed[:, 1])
    torch.testing.assert_close(complex_.abs(), spec.abs() ** 0.3, rtol=1e-4, atol=1e-5)
    keep = spec.abs() > 1e-3
    torch.testing.assert_close(torch.angle(complex_)[keep], torch.angle(spec)[keep], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("length", [1601, 8037])
def test_output_shapes_for_odd_lengths(length):
    network = _small().eval()
    with torch.no_grad():
        out = network(torch.randn(3, length))
    frames = length // 100 + 1
    assert out["audio"].shape == (3, length)
    assert out["spec"].shape == (3, 2, frames, 201)
    assert out["vad"].shape == (3, frames)
    assert torch.all((out["vad"] >= 0) & (out["vad"] <= 1))


def test_the_full_network_matches_the_papers_size_and_shapes():
    network = CSMVANet().eval()
    assert network.bins == [201, 101, 51, 26, 13]
    n = count_parameters(network)
    assert abs(n - 8.81e6) / 8.81e6 < 0.01  # Table I: 8.81 M (docs/csm-vanet.md explains the gap)
    with torch.no_grad():
        out = network(torch.randn(1, 3217))
    assert out["vad"].shape == (1, 3217 // 100 + 1)


def test_noisy_mix_blends_the_input_back_and_is_out_of_the_key_at_zero():
    torch.manual_seed(0)
    plain = CSMVANet((8, 16), 1).eval()
    mixed = CSMVANet((8, 16), 1, noisy_mix=0.25).eval()
    mixed.load_state_dict(plain.state_dict())
    noisy = torch.randn(2, 4000) * 0.1
    with torch.no_grad():
        enhanced, blended = plain(noisy)["audio"], mixed(noisy)["audio"]
    torch.testing.assert_close(blended, 0.75 * enhanced + 0.25 * noisy)
    assert "noisy_mix" not in CSMVANetParams().model_dump()
    assert CSMVANetParams(noisy_mix=0.1).model_dump()["noisy_mix"] == 0.1
    assert CSMVANetModel(CSMVANetParams(channels=[8, 16], noisy_mix=0.1)).network().noisy_mix == 0.1


def test_relative_attention_equals_shaws_formula():
    from wavelens.plugins.csm_vanet.networks import RelativeAttention

    torch.manual_seed(0)
    attention = RelativeAttention(32, 4, 0.0, max_distance=5).eval()
    x = torch.randn(2, 9, 32)
    b, n, _ = x.shape
    q = attention.to_q(x).view(b, n, 4, 8).transpose(1, 2)
    k, v = attention.to_kv(x).view(b, n, 2, 4, 8).permute(2, 0, 3, 1, 4)
    position = torch.arange(n)
    rel = attention.rel_pos((position[:, None] - position[None, :]).clamp(-5, 5) + 5)  # (n, n, d)
    logits = (q @ k.transpose(-1, -2) + torch.einsum("bhid,ijd->bhij", q, rel)) * attention.scale
    expected = attention.to_out((logits.softmax(-1) @ v).transpose(1, 2).reshape(b, n, -1))
    torch.testing.assert_close(attention(x), expected, rtol=1e-5, atol=1e-6)


def test_each_ablation_removes_exactly_what_it_names():
    full = CSMVANet()
    names = {name: p.numel() for name, p in full.named_parameters()}
    single = {name: p.numel() for name, p in CSMVANet(vad_decoder=False).named_parameters()}
    assert set(names) - set(single) == {n for n in names if n.startswith("vad.")}
    assert set(single) <= set(names)
    gated = {name: p.numel() for name, p in CSMVANet(msgc=False).named_parameters()}
    changed = {n for n in set(names) | set(gated) if names.get(n) != gated.get(n)}
    assert changed and all(".block." in n for n in changed)  # only the gated blocks' context
    assert all(n.split(".block.")[1].split(".")[0] in {"dw0", "dw1", "dw2"} for n in changed)
    # the counts reported in docs/csm-vanet.md
    assert (count_parameters(full), sum(gated.values()), sum(single.values())) == (8875511, 8847497, 8874729)


def _batch(length=8000, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(length) / 16000
    clean = (0.3 * np.sin(2 * np.pi * 220 * t) * (t > 0.15)).astype(np.float32)
    noisy = clean + 0.05 * rng.standard_normal(length).astype(np.float32)
    vad = torch.tensor((np.arange(length // 100 + 1) * 100 / 16000 > 0.15).astype(np.float32))
    stack = lambda x: torch.from_numpy(np.stack([x, x]))  # noqa: E731
    return stack(noisy), stack(clean), torch.stack([vad, vad])


def test_loss_terms_follow_the_weights_and_ablations_drop_theirs():
    network = _small()
    noisy, clean, vad = _batch()
    out = network(noisy)
    full = loss_terms(network, out, clean, vad, CSMVANetParams())
    assert set(full) == {"time", "mag", "complex", "vad", "total"}
    expected = 0.2 * full["time"] + 0.8 * full["mag"] + 0.2 * full["complex"] + 0.1 * full["vad"]
    torch.testing.assert_close(full["total"], expected)
    for field, term in (("time_loss", "time"), ("mag_loss", "mag")):
        ablated = loss_terms(network, out, clean, vad, CSMVANetParams(**{field: 0}))
        assert term not in ablated
        torch.testing.assert_close(ablated["total"], expected - {"time": 0.2, "mag": 0.8}[term] * full[term])
    single = _small(vad_decoder=False)
    terms = loss_terms(single, single(noisy), clean, vad, CSMVANetParams(vad_decoder=False))
    assert "vad" not in terms


def test_one_training_step_reduces_the_loss_on_a_fixed_batch():
    network = _small()
    noisy, clean, vad = _batch()
    params = CSMVANetParams()
    optimizer = torch.optim.AdamW(network.parameters(), lr=params.lr)
    before = loss_terms(network, network(noisy), clean, vad, params)["total"]
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    after = loss_terms(network, network(noisy), clean, vad, params)["total"]
    assert after.item() < before.item()


class _Pairs(torch.utils.data.Dataset):
    """Deterministic tiny pairs with the items of wavelens.plugins.noisy_speech's splits."""

    def __init__(self, n: int, length: int = 4000):
        self.n, self.length, self.epoch = n, length, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        noisy, clean, vad = _batch(self.length, seed=index * 7 + self.epoch)
        return {"audio": noisy[:1], "noisy": noisy[:1], "clean": clean[:1], "vad": vad[0],
                "name": f"u{index}", "length": self.length, "sample_rate": 16000}


def _context(tmp_path, splits) -> StageContext:
    return StageContext("model", tmp_path, CPU, 3, logging.getLogger("test"), tmp_path,
                        _dataset=lambda: splits)


def test_training_resumes_exactly_where_it_stopped(tmp_path):
    splits = {"train": _Pairs(8), "test": _Pairs(2, length=24000)}
    params = CSMVANetParams(channels=[8, 16], conformers=1, validation_files=1)

    def train(folder, steps):
        torch.manual_seed(1)
        network = CSMVANet((8, 16), 1)
        torch.manual_seed(2)  # the resumed run restores the dropout generator from its checkpoint
        loop = EnhancementLoop(network, params, _context(folder, splits),
                               TrainSpec(steps=steps, batch_size=4, checkpoint_every=2, log_every=1))
        loop.run()
        return network, loop

    whole, whole_loop = train(tmp_path / "a", 4)
    train(tmp_path / "b", 2)
    resumed, resumed_loop = train(tmp_path / "b", 4)  # continues from the step-2 checkpoint
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert [h["total"] for h in whole_loop.history] == [h["total"] for h in resumed_loop.history]
    # two epochs of 2 steps: validated after each epoch, and the count of epochs is right
    assert [v["epoch"] for v in whole_loop.validations] == [1, 2]


def test_epochs_set_the_steps_and_the_learning_rate_halves(tmp_path):
    splits = {"train": _Pairs(8)}
    params = CSMVANetParams(channels=[8, 16], conformers=1, lr_halve_every=1, validation_files=0)
    loop = EnhancementLoop(CSMVANet((8, 16), 1), params, _context(tmp_path, splits),
                           TrainSpec(epochs=2, batch_size=4, log_every=1))
    assert loop.steps == 4
    history = loop.run()
    assert [h["lr"] for h in history] == pytest.approx([5e-4, 5e-4, 2.5e-4, 2.5e-4])


class _PairsWithoutLabels(torch.utils.data.Dataset):
    """Pairs without VAD labels and without set_epoch, as an outside dataset may be."""

    def __init__(self, n: int):
        self.pairs = _Pairs(n)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        item = dict(self.pairs[index])
        del item["vad"]
        return item


def test_datasets_without_vad_labels_or_pairs_get_clear_errors_or_train_without_the_vad_loss(tmp_path):
    spec = TrainSpec(steps=1, batch_size=4, log_every=1)
    splits = {"train": _PairsWithoutLabels(4)}
    params = CSMVANetParams(channels=[8, 16], conformers=1, validation_files=0)
    with pytest.raises(StageError, match=r"needs frame labels \('vad' in each item\).*vad_loss: 0"):
        EnhancementLoop(CSMVANet((8, 16), 1), params, _context(tmp_path / "a", splits), spec)
    unpaired = {"train": [{"audio": torch.zeros(1, 4000)}] * 4}
    with pytest.raises(StageError, match="paired items with 'noisy' and 'clean'.*have audio"):
        EnhancementLoop(CSMVANet((8, 16), 1), params, _context(tmp_path / "b", unpaired), spec)
    without_vad_loss = params.model_copy(update={"vad_loss": 0.0})
    loop = EnhancementLoop(CSMVANet((8, 16), 1), without_vad_loss, _context(tmp_path / "c", splits), spec)
    (entry,) = loop.run()
    assert "vad" not in entry and np.isfinite(entry["total"])


def test_long_inputs_are_enhanced_in_chunks_to_the_same_length():
    network = _small().eval()
    audio = np.random.default_rng(0).standard_normal(40_123).astype(np.float32) * 0.1
    estimate, vad = enhance_16k(network, audio, torch.device("cpu"), chunk=16000, overlap=4000)
    assert estimate.shape == audio.shape and np.all(np.isfinite(estimate))
    assert vad.shape == (40_123 // 100 + 1,) and np.all((vad >= 0) & (vad <= 1))
    whole, _ = enhance_16k(network, audio[:12000], torch.device("cpu"), chunk=16000, overlap=4000)
    assert whole.shape == (12000,)


def test_speech_segments_join_short_gaps():
    p = np.array([0, 1, 1, 0, 1, 1, 0, 0, 0, 0, 1], dtype=float)
    assert speech_segments(p, 0.01, min_gap=0.015) == [(0.005, 0.055), (0.095, 0.105)]


@pytest.fixture
def small_run(write_spec, tmp_path):
    if not (SHARED_DATA / "voicebank_demand").is_dir():
        pytest.skip(f"the shared recordings are missing ({SHARED_DATA})")
    root = tmp_path / "pairs"  # four of the real pairs, linked
    for side in ("clean", "noisy"):
        (root / side).mkdir(parents=True)
        for name in sorted((SHARED_DATA / "voicebank_demand" / side).iterdir())[:4]:
            (root / side / name.name).symlink_to(name)
    spec = write_spec(f"""
        spec_version: 1
        name: csm-small
        device: cpu
        data:
          plugin: voicebank_demand
          params: {{root: {root}, flat_split: train, segment_seconds: 0.5}}
        model:
          plugin: csm_vanet
          params: {{channels: [8, 16], conformers: 1, validation_files: 0, chunk_seconds: 1.5,
                    overlap_seconds: 0.5}}
        train: {{steps: 1, batch_size: 2}}
        """)
    return Run(load_spec(spec), runs_dir=tmp_path / "runs").execute()


def test_enhance_writes_the_inputs_length_and_rate_with_the_vad_track(small_run, tmp_path, capsys):
    rng = np.random.default_rng(1)
    inputs = tmp_path / "in"
    inputs.mkdir()
    sf.write(inputs / "a48k.wav", rng.standard_normal(48000 * 2 + 17) * 0.05, 48000)
    sf.write(inputs / "b22k.flac", rng.standard_normal((22050 + 5, 2)) * 0.05, 22050)  # stereo
    (inputs / "broken.wav").write_bytes(b"RIFF not audio")
    out = tmp_path / "out"
    code = main(["enhance", str(inputs), "-o", str(out), "--checkpoint", str(small_run), "--vad", "both",
                 "--device", "cpu"])
    captured = capsys.readouterr()
    text = " ".join((captured.out + captured.err).split())
    assert code == 1 and "broken.wav" in text and "2 channels mixed to mono" in text
    a, b = sf.info(out / "in" / "a48k.wav"), sf.info(out / "in" / "b22k.wav")
    assert (a.samplerate, a.frames, b.samplerate, b.frames) == (48000, 96017, 22050, 22055)
    track = (out / "in" / "a48k.vad.csv").read_text().splitlines()
    assert track[0] == "frame,time_s,speech_probability"
    assert len(track) - 1 == len(torch.arange(0, 96017 * 16000 // 48000)) // 100 + 1
    assert (out / "in" / "a48k.segments.csv").read_text().startswith("start_s,end_s")


def _hostile_folder(folder: Path) -> dict[str, bool]:
    """Broken, odd and good audio files; the value says whether ``enhance`` can
    write an output for the file (the rest are refused with a reason)."""
    rng = np.random.default_rng(5)
    folder.mkdir(parents=True)
    speech = (rng.standard_normal(16000) * 0.1).astype(np.float32)
    files = {}

    def write(name, data, rate=16000, subtype=None, ok=True):
        sf.write(folder / name, data, rate, subtype=subtype)
        files[name] = ok

    write("good.wav", speech)
    write("stereo.wav", np.stack([speech, speech[::-1]], axis=1))
    write("rate8k.wav", speech[:8000], 8000)
    write("rate44k.wav", rng.standard_normal(44100).astype(np.float32) * 0.1, 44100)
    write("eightbit.wav", speech, subtype="PCM_U8")
    write("float64.wav", speech.astype(np.float64), subtype="DOUBLE")
    write("flac.flac", speech)
    write("silent.wav", np.zeros(16000, np.float32))
    write("clipped.wav", np.clip(speech * 40, -1, 1))
    write("dc.wav", speech * 0.5 + 0.4)
    write("short8.wav", speech[:8])
    write("short1.wav", speech[:1])
    write("nan.wav", np.where(np.arange(16000) == 500, np.nan, speech), subtype="FLOAT", ok=False)
    write("inf.wav", np.where(np.arange(16000) == 500, np.inf, speech), subtype="FLOAT", ok=False)
    write("empty.wav", np.zeros(0, np.float32), ok=False)
    (folder / "zero.wav").write_bytes(b"")
    files["zero.wav"] = False
    (folder / "notaudio.wav").write_bytes(b"RIFF not audio at all")
    files["notaudio.wav"] = False
    good = (folder / "good.wav").read_bytes()
    (folder / "truncated.wav").write_bytes(good[:30])  # inside the header
    files["truncated.wav"] = False
    return files


def test_enhance_over_a_folder_of_hostile_audio_accounts_for_every_file(small_run, tmp_path, capsys):
    import csv

    files = _hostile_folder(tmp_path / "in")
    out = tmp_path / "out"
    code = main(["enhance", str(tmp_path / "in"), "-o", str(out), "--checkpoint", str(small_run),
                 "--device", "cpu"])
    text = " ".join(capsys.readouterr().err.split())
    assert code == 1  # because of the refusals only
    assert "Traceback" not in text
    rows = {Path(r["file"]).name: r for r in csv.DictReader((out / "enhance.csv").open())}
    assert set(rows) == set(files)
    for name, writable in files.items():
        row = rows[name]
        assert row["outcome"] == ("enhanced" if writable else "refused"), (name, row)
        if not writable:
            assert row["reason"], name
            continue
        written, rate = sf.read(row["output"], dtype="float32")
        source = sf.info(tmp_path / "in" / name)
        assert (rate, len(written)) == (source.samplerate, source.frames), name
        assert np.all(np.isfinite(written)), name
    assert "silent input" in rows["silent.wav"]["reason"]
    assert "2 channels mixed to mono" in rows["stereo.wav"]["reason"]


def test_the_metrics_stage_scores_enhanced_items_one_by_one(small_run, tmp_path):
    spec = load_spec(small_run / "spec.yaml", overrides=[
        "metrics=[{plugin: pesq}, {plugin: stoi}, {plugin: vad}]",
        "evaluation={split: test, batch_size: 4, per_item: true, workers: 2}",
        "dataset.params.flat_split=test",  # whole utterances
        "train=null",
        f"model.weights={small_run / 'stages' / 'model' / 'model.pt'}",
    ])
    directory = Run(spec, runs_dir=tmp_path / "runs2").execute()
    rows = (directory / "stages" / "metrics" / "scores.csv").read_text().splitlines()
    assert rows[0].startswith("item,status,reason,pesq,stoi,vad_accuracy")
    assert len(rows) == 5 and all(",ok," in row for row in rows[1:])
    report = (directory / "stages" / "metrics" / "report.md").read_text()
    assert "Scored 4 of 4 items" in report and "| set | PESQ | STOI |" in report


def test_a_model_without_the_vad_decoder_is_still_enhanced(tmp_path):
    model = CSMVANetModel(CSMVANetParams(channels=[8, 16], conformers=1, vad_decoder=False))
    network = model.network().eval()
    result = model.enhance(network, np.random.default_rng(2).standard_normal(8000).astype(np.float32) * 0.1,
                           8000, CPU)
    assert result.audio.shape == (8000,) and result.speech_probability is None


def _distributed_worker(rank: int, world: int, port: int, folder: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.manual_seed(1)
        network = CSMVANet((8, 16), 1)
        torch.manual_seed(2 + rank)  # different dropout streams, as on separate machines
        ctx = StageContext("model", Path(folder), CPU, 3, logging.getLogger("test"), Path(folder), rank=rank,
                           world=world, _dataset=lambda: {"train": _Pairs(8)})
        params = CSMVANetParams(channels=[8, 16], conformers=1, validation_files=0)
        EnhancementLoop(network, params, ctx, TrainSpec(steps=2, batch_size=4, log_every=1)).run()
        dist.barrier()  # leave together: a peer destroying the group early can abort this one
    finally:
        dist.destroy_process_group()


def test_training_in_two_processes_keeps_the_replicas_identical(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_distributed_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    step, state = CheckpointManager(tmp_path / "checkpoints").latest()
    assert step == 2
    checksums = state["replica_checksums"]
    assert len(checksums) == 2 and checksums[0] == checksums[1]


def test_evaluate_over_a_folder_of_hostile_audio_accounts_for_every_file(tmp_path, capsys):
    import csv
    import shutil

    files = _hostile_folder(tmp_path / "estimates")
    (tmp_path / "references").mkdir()
    for name in files:
        shutil.copy(tmp_path / "estimates" / "good.wav", tmp_path / "references" / name)
    code = main(["evaluate", "--reference", str(tmp_path / "references"), "--estimate",
                 str(tmp_path / "estimates"), "--metrics", "stoi", "--workers", "1", "--out",
                 str(tmp_path / "scores")])
    assert code == 1 and "Traceback" not in capsys.readouterr().err
    rows = {r["file"]: r for r in csv.DictReader((tmp_path / "scores" / "scores.csv").open())}
    assert set(rows) == set(files)
    for name, row in rows.items():
        assert row["status"] in ("ok", "error") and (row["status"] == "ok" or row["reason"]), name
    assert rows["good.wav"]["status"] == "ok" and float(rows["good.wav"]["stoi"]) > 0.99
