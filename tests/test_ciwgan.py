"""ciwGAN/fiwGAN: networks faithful to the TF reference, the trainer, resumption, DDP."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from torch import nn

from wavelens import resolve_placement
from wavelens.host import Run, load_spec_text
from wavelens.plugins.ciwgan.networks import (
    CiwGAN,
    DownConv,
    UpConv,
    WaveGANDiscriminator,
    WaveGANGenerator,
    conv1d_gemm,
    conv_transpose1d_gemm,
    phase_shuffle,
    same_padding,
)
from wavelens.plugins.ciwgan.optim import TFRMSprop
from wavelens.plugins.ciwgan.trainer import GANConfig, GANTrainer, sample_latent

CPU = resolve_placement("cpu", "fp32")


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def tiny(n_codes: int = 2, dim: int = 2) -> CiwGAN:
    torch.manual_seed(0)
    return CiwGAN(n_codes, dim=dim)


def toy_data(n: int = 16) -> torch.Tensor:
    rng = np.random.default_rng(0)
    t = np.arange(16384) / 16000
    waves = [np.sin(2 * np.pi * rng.uniform(200, 2000) * t) * np.hanning(16384) for _ in range(n)]
    return torch.tensor(np.stack(waves), dtype=torch.float32).unsqueeze(1)


# -- networks --------------------------------------------------------------------------


def test_parameter_counts_match_the_reference_at_default_size():
    generator, critic = WaveGANGenerator(), WaveGANDiscriminator()
    assert count(generator) == 19_065_345  # ≈ 19.07 M
    assert count(critic) == 17_427_969  # ≈ 17.43 M
    network = CiwGAN(8)
    assert count(network.q_network) == count(critic) + 7 * (16384 + 1)  # a logit per code
    q_weight, d_weight = network.q_network.conv1.conv.weight, network.discriminator.conv1.conv.weight
    assert q_weight.data_ptr() != d_weight.data_ptr()  # its own weights


@pytest.mark.parametrize("slice_len", [8192, 16384, 32768, 65536])
def test_shapes_for_each_slice_length(slice_len):
    network = CiwGAN(3, dim=2, slice_len=slice_len)
    audio = network.generator(torch.rand(2, 100) * 2 - 1)
    assert audio.shape == (2, 1, slice_len) and audio.abs().max() <= 1
    assert network.discriminator(audio).shape == (2, 1)
    assert network.q_network(audio).shape == (2, 3)


def test_the_short_slice_keeps_five_layers_and_ends_with_a_stride_of_two():
    network = CiwGAN(3, dim=2, slice_len=8192)
    lengths = []
    x = torch.zeros(1, 1, 8192)
    for index in range(1, 6):
        x = getattr(network.q_network, f"conv{index}")(x)
        lengths.append(x.shape[-1])
    assert lengths == [2048, 512, 128, 32, 16]  # the dense layer reads 16 steps, as at 16,384
    assert [layer.stride for layer in network.generator.upconvs] == [4, 4, 4, 4, 2]
    assert not hasattr(network.q_network, "conv6")


def test_down_conv_pads_like_tf_same():
    assert same_padding(25, 4) == (10, 11)
    conv = DownConv(1, 1, 4)
    nn.init.zeros_(conv.conv.weight)
    nn.init.zeros_(conv.conv.bias)
    conv.conv.weight.data[0, 0, 3] = 1.0  # tap 3
    x = torch.zeros(1, 1, 64)
    x[0, 0, 29] = 1.0
    out = conv(x)[0, 0]
    # TF SAME: out[t] = Σ_k w[k] · x[4t + k − 10], so the impulse lands at t = (29 + 10 − 3) / 4.
    assert out.shape == (16,) and out.nonzero().flatten().tolist() == [9]


def test_up_conv_is_the_adjoint_of_the_same_conv_as_tf_defines_it():
    # TF's conv2d_transpose is the gradient of conv2d with SAME padding: its output
    # must satisfy <conv(u), x> = <u, conv_transpose(x)> with the same kernel.
    torch.manual_seed(1)
    up, down = UpConv(3, 2, 4), DownConv(2, 3, 4)
    down.conv.weight.data.copy_(up.conv.weight.data)  # (3, 2, 25) in both layouts
    nn.init.zeros_(up.conv.bias)
    nn.init.zeros_(down.conv.bias)
    u, x = torch.randn(1, 2, 256), torch.randn(1, 3, 64)
    lhs = (down(u) * x).sum()
    rhs = (u * up(x)).sum()
    assert up(x).shape == (1, 2, 256)
    assert lhs.item() == pytest.approx(rhs.item(), rel=1e-5)


@pytest.mark.parametrize("stride", [4, 2])
@pytest.mark.parametrize("length", [1, 5, 16])
def test_the_gemm_form_of_the_convs_computes_torchs_convs(stride, length):
    # What CUDA runs (one GEMM over the unfolded input) must equal the CPU's convs
    # exactly in float64, for both strides the networks use and lengths not divisible
    # by the number of taps.
    down, up = conv1d_gemm, conv_transpose1d_gemm
    torch.manual_seed(length)
    kw = {"dtype": torch.float64}
    crop = same_padding(25, stride)[0]
    x, w, b = torch.randn(2, 3, length, **kw), torch.randn(3, 4, 25, **kw), torch.randn(4, **kw)
    expected = F.conv_transpose1d(x, w, b, stride)[..., crop : crop + stride * length]
    torch.testing.assert_close(up(x, w, b, stride, crop), expected, rtol=0, atol=1e-12)
    x, w = torch.randn(2, 3, stride * length, **kw), torch.randn(4, 3, 25, **kw)
    pad = same_padding(25, stride)
    expected = F.conv1d(F.pad(x, pad), w, b, stride)
    torch.testing.assert_close(down(x, w, b, stride, pad), expected, rtol=0, atol=1e-12)


def test_the_gemm_form_has_correct_first_and_second_derivatives():
    # The gradient penalty differentiates the critic twice.
    down, up = conv1d_gemm, conv_transpose1d_gemm
    kw = {"dtype": torch.float64, "requires_grad": True}
    x, w = torch.randn(2, 2, 32, **kw), torch.randn(3, 2, 25, **kw)
    assert torch.autograd.gradgradcheck(lambda x, w: down(x, w, None, 4, (10, 11)), (x, w))
    x, w = torch.randn(2, 2, 8, **kw), torch.randn(2, 3, 25, **kw)
    assert torch.autograd.gradgradcheck(lambda x, w: up(x, w, None, 4, 10), (x, w))


def test_phase_shuffle_is_the_same_in_channels_last_memory():
    x = torch.randn(3, 5, 40)
    for seed in range(6):
        plain = phase_shuffle(x, 2, torch.Generator().manual_seed(seed))
        channels_last = phase_shuffle(x.transpose(1, 2).contiguous().transpose(1, 2), 2,
                                      torch.Generator().manual_seed(seed))
        assert torch.equal(plain, channels_last)
        assert channels_last.stride(1) == 1 or torch.equal(plain, x)  # the layout is kept


def test_generator_reads_the_dense_output_time_major_and_applies_relu():
    generator = WaveGANGenerator(dim=2)
    z = torch.rand(1, 100)
    dense = generator.dense(z).view(1, 16, 32)
    captured = {}
    generator.upconvs[0].register_forward_hook(lambda m, i, o: captured.update(x=i[0]))
    generator(z)
    torch.testing.assert_close(captured["x"], torch.relu(dense).transpose(1, 2))


def test_phase_shuffle_shifts_the_whole_batch_and_reflects_the_edge():
    x = torch.arange(10.0).repeat(2, 3, 1)  # (batch 2, channels 3, time 10)
    seen = set()
    generator = torch.Generator().manual_seed(0)
    for _ in range(60):
        out = phase_shuffle(x, 2, generator)
        phase = None
        for candidate in range(-2, 3):
            if candidate >= 0:
                expected = torch.cat([x[..., 1 : candidate + 1].flip(-1), x[..., : 10 - candidate]], -1)
            else:
                k = -candidate
                expected = torch.cat([x[..., k:], x[..., -1 - k : -1].flip(-1)], -1)
            if torch.equal(out, expected):
                phase = candidate
        assert phase is not None  # one of the five shifts, the same for every row
        seen.add(phase)
    assert seen == {-2, -1, 0, 1, 2}


def test_phase_shuffle_follows_the_first_four_layers_only_and_is_off_in_eval():
    critic = WaveGANDiscriminator(dim=2, generator=torch.Generator().manual_seed(5))
    reference = torch.Generator().manual_seed(5)
    critic(torch.randn(2, 1, 16384))
    for _ in range(4):  # one draw per shuffled layer
        torch.randint(-2, 3, (1,), generator=reference)
    assert torch.equal(critic.generator.get_state(), reference.get_state())
    critic.eval()
    x = torch.randn(2, 1, 16384)
    torch.testing.assert_close(critic(x), critic(x))
    assert torch.equal(critic.generator.get_state(), reference.get_state())  # no draws in eval


def test_weights_are_glorot_uniform_with_zero_bias():
    generator = WaveGANGenerator(dim=8)
    weight = generator.upconvs[1].conv.weight  # (in 64, out 32, 25)
    limit = np.sqrt(6 / (64 * 25 + 32 * 25))
    assert weight.abs().max() <= limit and weight.abs().max() > 0.95 * limit
    assert torch.all(generator.upconvs[1].conv.bias == 0)


# -- the optimizer ---------------------------------------------------------------------


def test_tf_rmsprop_matches_a_hand_computation():
    param = nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    optimizer = TFRMSprop([param], lr=0.01)
    grads = [torch.tensor([0.5, 0.1], dtype=torch.float64), torch.tensor([-0.3, 0.2], dtype=torch.float64)]
    expected = np.array([1.0, -2.0])
    mean_square = np.ones(2)
    for grad in grads:
        param.grad = grad.clone()
        optimizer.step()
        g = grad.numpy()
        mean_square = 0.9 * mean_square + 0.1 * g**2
        expected = expected - 0.01 * g / np.sqrt(mean_square + 1e-10)
    np.testing.assert_allclose(param.detach().numpy(), expected, rtol=0, atol=1e-15)
    # By hand, one step from 1.0 with gradient 0.5: ms = 0.9·1 + 0.1·0.25 = 0.925, so
    # the parameter becomes 1 − 0.01·0.5/√0.925 = 0.99480124755 (torch's RMSprop,
    # starting from zeros, would give 1 − 0.01·0.5/(√0.0025 + 1e-8) = 0.9).
    single = nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    single.grad = torch.tensor([0.5], dtype=torch.float64)
    TFRMSprop([single], lr=0.01).step()
    assert single.item() == pytest.approx(0.9948012475511806, abs=1e-12)


# -- training --------------------------------------------------------------------------


def make_trainer(tmp_path, network=None, **overrides) -> GANTrainer:
    settings = {"code": "categorical", "steps": 4, "batch_size": 4, "d_updates": 1,
                "checkpoint_every": 2, "log_every": 1, "sample_every": 1000, "seed": 3, **overrides}
    return GANTrainer(network or tiny(), GANConfig(**settings), CPU, tmp_path)


def test_latents_are_code_then_uniform_noise():
    z, target = sample_latent(64, 8, "categorical", 100, torch.Generator().manual_seed(0))
    assert z.shape == (64, 100)
    torch.testing.assert_close(z[:, :8], nn.functional.one_hot(target, 8).float())
    assert z[:, 8:].min() >= -1 and z[:, 8:].max() <= 1
    z, bits = sample_latent(64, 3, "binary", 100, torch.Generator().manual_seed(0))
    assert torch.equal(z[:, :3], bits) and set(bits.unique().tolist()) == {0.0, 1.0}


def _largest_change(trainer: GANTrainer) -> float:
    before = [p.detach().clone() for p in trainer.net.generator.parameters()]
    trainer.generator_update()
    after = trainer.net.generator.parameters()
    return max((p - b).abs().max().item() for p, b in zip(after, before, strict=True))


def test_the_q_loss_alone_updates_the_generator(tmp_path):
    # Adam's G step is made negligible, so any change to G comes from the Q term.
    assert _largest_change(make_trainer(tmp_path, lr=1e-12)) > 1e-6
    assert _largest_change(make_trainer(tmp_path / "q0", lr=1e-12, q_weight=0.0)) < 1e-9


def test_a_few_steps_reduce_the_q_loss(tmp_path):
    # A toy problem: a generator whose output already has the scale of audio, a latent
    # of two codes and one noise value, no phase shuffle. (From the faithful start,
    # Q learns slowly: see docs/ciwgan.md.)
    torch.manual_seed(0)
    network = CiwGAN(2, dim=4, latent_dim=3, phase_shuffle_radius=0)
    with torch.no_grad():
        for layer in network.generator.upconvs:
            layer.conv.weight.mul_(4.0)
    trainer = make_trainer(tmp_path, steps=30, batch_size=16, q_lr=0.1, checkpoint_every=100,
                           network=network)
    history = trainer.train(toy_data())
    losses = [h["q_loss"] for h in history]
    assert np.mean(losses[:3]) > 0.5 and np.mean(losses[-5:]) < 0.05
    assert history[-1]["q_accuracy"] == 1.0


def test_resume_continues_exactly_as_an_uninterrupted_run(tmp_path):
    data = toy_data()
    whole = make_trainer(tmp_path / "whole", steps=6, checkpoint_every=3)
    whole.train(data)
    first = make_trainer(tmp_path / "split", steps=3, checkpoint_every=3)
    first.train(data)
    second = make_trainer(tmp_path / "split", steps=6, checkpoint_every=3)
    second.train(data)
    for (name, a), b in zip(whole.net.state_dict().items(), second.net.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert [h["d_loss"] for h in whole.config.history] == [h["d_loss"] for h in second.config.history]


def test_processes_in_the_params_points_to_torchrun():
    from pydantic import ValidationError

    from wavelens.plugins.ciwgan.model import CiwGANParams

    with pytest.raises(ValidationError, match="launch several processes with torchrun"):
        CiwGANParams(processes=2)


@pytest.fixture
def trained_run(tmp_path):
    """A 4-step ciwGAN run on a hand-made 2-word corpus, with the lexical probe."""
    from test_timit import make_tree

    root = make_tree(tmp_path / "timit", speakers=4)
    resolved = load_spec_text(
        "spec_version: 1\nname: gan\nseed: 1\ndevice: cpu\n"
        f"data: {{plugin: timit_words, params: {{root: {root}, words: [ask, wash]}}}}\n"
        "model: {plugin: ciwgan, params: {n_codes: 2, dim: 2, sample_every: 2}}\n"
        "train: {steps: 4, batch_size: 4, checkpoint_every: 2, log_every: 1}\n"
        "probe: [{plugin: lexical_learning, params: {n_per_code: 6, values: [1, 3], "
        "classifier_epochs: 2, keep_audio: 2}}]\n",
        spec_dir=tmp_path,
    )
    return Run(resolved, runs_dir=tmp_path / "runs").execute()


def test_a_spec_trains_writes_samples_and_losses(trained_run):
    directory = trained_run
    stage = directory / "stages" / "model"
    samples = stage / "samples" / "step-0000004"
    assert sorted(p.name for p in samples.iterdir()) == ["code0.wav", "code1.wav"]
    with open(stage / "losses.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert {"d_loss", "g_loss", "q_loss", "q_accuracy", "gp", "steps_per_s"} <= set(rows[0])
    assert json.loads((stage / "stage.json").read_text())["summary"]["parameters"] > 0


def test_lexical_learning_reports_q_and_one_to_one_accuracy_per_code_and_value(trained_run):
    stage = trained_run / "stages" / "probes.0"
    summary = json.loads((stage / "lexical.json").read_text())
    assert [(r["code"], r["value"]) for r in summary["codes"]] == [("0", 1), ("1", 1), ("0", 3), ("1", 3)]
    for row in summary["codes"]:
        assert row["n_ask"] + row["n_wash"] == 6
        assert row["purity"] == max(row["n_ask"], row["n_wash"]) / 6
        assert 0 <= row["q_accuracy"] <= 1
    for at_value in summary["by_value"]:
        rows = [r for r in summary["codes"] if r["value"] == at_value["value"]]
        # two codes, two words: the assignment is one of the two pairings, whichever explains more
        straight = rows[0]["n_ask"] + rows[1]["n_wash"]
        crossed = rows[0]["n_wash"] + rows[1]["n_ask"]
        assert at_value["one_to_one_accuracy"] == max(straight, crossed) / 12
        assert at_value["code_word_accuracy"] == at_value["one_to_one_accuracy"]  # 2 codes, 2 words
        assert sorted(at_value["assignment"].values()) == ["ask", "wash"]
    assert summary["chance_q_accuracy"] == 0.5
    assert summary["learned"] is (
        summary["mean_q_accuracy"] >= 0.95 and summary["code_word_accuracy"] >= 0.8
    )
    assert summary["code_word_rule"] == "one-to-one"
    assert 0 <= summary["classifier_test_accuracy"] <= 1
    assert 0 <= summary["classifier_noisy_test_accuracy"] <= 1
    assert summary["classifier_check_noise_dbfs"] == -40
    spread = summary["code_word_single_classifiers"]  # the five single classifiers of the average
    assert len(spread) == 5 and all(0 <= a <= 1 for a in spread)
    assert len(list((stage / "audio" / "value-3" / "code-1").glob("*.wav"))) == 2
    report = (trained_run / "report.md").read_text()
    assert "code→word accuracy" in report and "(one-to-one; chance" in report and "purity" in report


def test_lexical_learning_of_a_fiwgan_with_more_bit_patterns_than_words_lets_codes_share(tmp_path):
    from test_timit import make_tree

    from wavelens.plugins.ciwgan.evaluation import code_word

    root = make_tree(tmp_path / "timit", speakers=4)
    resolved = load_spec_text(
        "spec_version: 1\nname: fiw\nseed: 1\ndevice: cpu\n"
        f"data: {{plugin: timit_words, params: {{root: {root}, words: [ask, wash]}}}}\n"
        "model: {plugin: fiwgan, params: {n_codes: 2, dim: 2, sample_every: 2}}\n"
        "train: {steps: 2, batch_size: 4, checkpoint_every: 2, log_every: 1}\n"
        "probe: [{plugin: lexical_learning, params: {n_per_code: 5, classifier_epochs: 1, "
        "classifiers: 1, keep_audio: 0}}]\n",
        spec_dir=tmp_path,
    )
    directory = Run(resolved, runs_dir=tmp_path / "runs").execute()
    summary = json.loads((directory / "stages" / "probes.0" / "lexical.json").read_text())
    assert [r["code"] for r in summary["codes"]] == ["00", "01", "10", "11"]
    assert summary["chance_q_accuracy"] == 0.25
    counts = np.array([[r["n_ask"], r["n_wash"]] for r in summary["codes"]])
    accuracy, words = code_word(counts)
    assert summary["code_word_rule"] == "every word some code's; codes may share words"
    assert summary["code_word_accuracy"] == accuracy >= summary["one_to_one_accuracy"]
    assigned = [r["assigned_word"] for r in summary["codes"]]
    assert assigned == [["ask", "wash"][w] for w in words] and set(assigned) == {"ask", "wash"}
    assert summary["learned"] is (summary["mean_q_accuracy"] >= 0.95 and accuracy >= 0.8)
    report = (directory / "report.md").read_text()
    assert "several codes may share a word: there are 4 codes for 2 words" in report


def test_the_noise_floor_has_the_level_asked_for():
    from wavelens.plugins.ciwgan.evaluation import with_noise_floor

    silent = torch.zeros(3, 1, 40000)
    floored = with_noise_floor(silent, torch.tensor([-20.0, -40.0, -60.0]), torch.Generator().manual_seed(0))
    rms_db = 20 * torch.log10(floored.pow(2).mean(dim=(1, 2)).sqrt())
    assert torch.allclose(rms_db, torch.tensor([-20.0, -40.0, -60.0]), atol=0.1)
    one = with_noise_floor(silent, -30.0, torch.Generator().manual_seed(0))
    assert torch.allclose(20 * torch.log10(one.pow(2).mean(dim=(1, 2)).sqrt()), torch.tensor(-30.0), atol=0.1)


class _Tokens:
    """Two "words" (a rising and a falling chirp, 0.25 s) in 1 s of digital silence."""

    classes = ["up", "down"]

    def __init__(self, n: int, seed: int):
        rng = np.random.default_rng(seed)
        self.items = []
        for i in range(n):
            label = i % 2
            f0 = rng.uniform(300, 500)
            sweep = np.linspace(f0, 3 * f0, 2000) if label == 0 else np.linspace(3 * f0, f0, 2000)
            audio = np.zeros(8192, np.float32)
            start = int(rng.integers(0, 6000))
            audio[start:start + 2000] = np.sin(2 * np.pi * np.cumsum(sweep) / 8000) * np.hanning(2000)
            self.items.append({"audio": torch.from_numpy(audio / np.abs(audio).max()).unsqueeze(0),
                               "label": label})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_the_word_classifier_trained_with_a_noise_floor_hears_words_under_noise():
    from wavelens.plugins.ciwgan.evaluation import (
        LexicalParams,
        _stack,
        classify,
        train_one_classifier,
        with_noise_floor,
    )

    audio, labels = _stack(_Tokens(64, seed=1))
    noisy = with_noise_floor(audio, -35.0, torch.Generator().manual_seed(3))
    params = LexicalParams(classifier_epochs=8)
    classifier = train_one_classifier(_Tokens(128, seed=0), 2, 8000, params, 0, torch.device("cpu"),
                                      lambda items, **_: items)
    assert float((classify(classifier, audio, torch.device("cpu")) == labels).float().mean()) >= 0.95
    assert float((classify(classifier, noisy, torch.device("cpu")) == labels).float().mean()) >= 0.95
    # Trained on the clean tokens only, the same classifier fails under the same noise.
    clean_only = train_one_classifier(_Tokens(128, seed=0), 2, 8000,
                                      LexicalParams(classifier_epochs=8, classifier_noise_dbfs=None), 0,
                                      torch.device("cpu"), lambda items, **_: items)
    assert float((classify(clean_only, noisy, torch.device("cpu")) == labels).float().mean()) < 0.8


def test_the_ensemble_averages_its_members_probabilities():
    from wavelens.plugins.ciwgan.evaluation import WordClassifier, WordEnsemble

    torch.manual_seed(0)
    members = [WordClassifier(3, 8000).eval() for _ in range(3)]
    audio = torch.randn(4, 1, 8192) * 0.1
    expected = torch.stack([torch.softmax(m(audio), dim=1) for m in members]).mean(dim=0)
    assert torch.allclose(WordEnsemble(members).eval()(audio), expected)


def test_one_to_one_accuracy_gives_a_collapse_onto_one_word_one_over_codes():
    from wavelens.plugins.ciwgan.evaluation import one_to_one

    collapsed = np.array([[10, 0, 0], [10, 0, 0], [10, 0, 0]])  # every code heard as word 0: purity 1
    accuracy, words = one_to_one(collapsed)
    assert accuracy == pytest.approx(1 / 3)
    assert sorted(words) == [0, 1, 2]


def test_one_to_one_accuracy_finds_a_permuted_lexicon():
    from wavelens.plugins.ciwgan.evaluation import one_to_one

    counts = np.array([[1, 9, 0], [0, 1, 9], [8, 0, 2]])
    accuracy, words = one_to_one(counts)
    assert words == [1, 2, 0]
    assert accuracy == pytest.approx(26 / 30)


def test_one_to_one_accuracy_leaves_a_code_without_a_word_when_codes_outnumber_words():
    from wavelens.plugins.ciwgan.evaluation import one_to_one

    accuracy, words = one_to_one(np.array([[5, 0], [0, 5], [3, 2]]))
    assert words == [0, 1, -1] and accuracy == pytest.approx(10 / 15)


def test_code_word_accuracy_is_one_to_one_when_codes_do_not_outnumber_words():
    from wavelens.plugins.ciwgan.evaluation import code_word, one_to_one

    for counts in (np.array([[1, 9, 0], [0, 1, 9], [8, 0, 2]]), np.array([[4, 1, 0, 3], [2, 2, 5, 0]])):
        assert code_word(counts) == one_to_one(counts)


def test_code_word_accuracy_lets_codes_share_a_word_when_they_outnumber_words():
    from wavelens.plugins.ciwgan.evaluation import code_word

    # A fiwGAN's four bit patterns for three words: two codes say the same word.
    accuracy, words = code_word(np.array([[66, 4, 30], [0, 100, 0], [6, 6, 88], [0, 99, 1]]))
    assert words == [0, 1, 2, 1] and accuracy == pytest.approx(353 / 400)
    # Every word needs a code: three codes on word 0 cannot leave word 1 unreached.
    accuracy, words = code_word(np.array([[10, 0], [10, 0], [9, 1]]))
    assert words == [0, 0, 1] and accuracy == pytest.approx(21 / 30)


def test_code_word_accuracy_is_the_best_assignment_that_reaches_every_word():
    from itertools import product

    from wavelens.plugins.ciwgan.evaluation import code_word

    rng = np.random.default_rng(3)
    for _ in range(40):
        n_codes, n_words = int(rng.integers(3, 7)), int(rng.integers(2, 4))
        if n_codes <= n_words:
            continue
        counts = rng.integers(0, 20, size=(n_codes, n_words))
        best = max(counts[np.arange(n_codes), list(choice)].sum()
                   for choice in product(range(n_words), repeat=n_codes)
                   if set(choice) == set(range(n_words)))
        accuracy, words = code_word(counts)
        assert set(words) == set(range(n_words))
        assert accuracy == pytest.approx(best / counts.sum())
        assert counts[np.arange(n_codes), words].sum() == best


def test_chance_of_one_to_one_accuracy_is_near_one_over_words_for_large_samples():
    from wavelens.plugins.ciwgan.evaluation import chance_one_to_one

    assert chance_one_to_one(8, 8, 5000) == pytest.approx(1 / 8, abs=0.01)
    assert chance_one_to_one(8, 8, 10) > chance_one_to_one(8, 8, 1000) > 1 / 8


def test_generate_command_writes_outputs_with_the_same_noise_for_every_code(trained_run, capsys):
    from wavelens.cli import main

    assert main(["generate", str(trained_run), "--code", "0", "--value", "2", "-n", "3",
                 "--out", str(trained_run / "g0")]) == 0
    assert main(["generate", str(trained_run / "stages/model/checkpoints/ckpt-000000004.pt"),
                 "--code", "1", "--value", "2", "-n", "3", "--out", str(trained_run / "g1")]) == 0
    first = sorted((trained_run / "g0").glob("*.wav"))
    assert len(first) == 3
    a = sf.read(first[0])[0]
    b = sf.read(trained_run / "g1" / "000.wav")[0]
    assert a.shape == (16384,) and not np.array_equal(a, b)  # same noise, another code
    assert main(["generate", str(trained_run), "--code", "5", "-n", "1"]) == 2
    assert "expected an index 0..1" in capsys.readouterr().err


def test_codes_read_as_indices_or_bit_strings():
    from wavelens.plugins.ciwgan.model import CiwGANModel, CiwGANParams, FiwGANModel, FiwGANParams

    ciw = CiwGANModel(CiwGANParams(n_codes=4))
    assert ciw.code_vector("2", 2.0).tolist() == [0, 0, 2, 0]
    fiw = FiwGANModel(FiwGANParams(n_codes=3))
    assert fiw.code_vector("101", 1.5).tolist() == [1.5, 0, 1.5]
    assert fiw.code_vector("1", 1.0).tolist() == [0, 1, 0]


def test_fiwgan_trains_with_sigmoid_cross_entropy_on_bits(tmp_path):
    trainer = make_trainer(tmp_path, code="binary", steps=2, network=tiny(n_codes=3))
    history = trainer.train(toy_data())
    # Untrained Q: each bit's logit is near 0, so the per-bit loss is near ln 2.
    assert history[0]["q_loss"] == pytest.approx(np.log(2), abs=0.01)
    assert 0 <= history[-1]["q_accuracy"] <= 1
    names = [name for name, _ in trainer.codes_for_samples()]
    assert names == ["bits000", "bits001", "bits010", "bits011", "bits100", "bits101", "bits110", "bits111"]


def test_sigterm_finishes_the_step_saves_and_stops(tmp_path):
    import os
    import signal

    from wavelens import RunInterrupted

    trainer = make_trainer(tmp_path, steps=6, checkpoint_every=100)
    update, calls = trainer.generator_update, []

    def update_then_signal():
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives in the middle of step 2
        return update()

    trainer.generator_update = update_then_signal
    with pytest.raises(RunInterrupted, match="SIGTERM at step 2"):
        trainer.train(toy_data())
    assert trainer.checkpoints.steps() == [2]
    resumed = make_trainer(tmp_path, steps=6, checkpoint_every=100)
    assert resumed.restore() == 2


def test_torchrun_with_two_gloo_processes_runs_the_spec_once_and_trains_in_sync(tmp_path):
    import subprocess
    import sys

    from test_timit import make_tree

    from conftest import REPO

    root = make_tree(tmp_path / "timit", speakers=4)
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "spec_version: 1\nname: gan-ddp\nseed: 1\ndevice: cpu\n"
        f"data: {{plugin: timit_words, params: {{root: {root}, words: [ask, wash]}}}}\n"
        "model: {plugin: ciwgan, params: {n_codes: 2, dim: 2, sample_every: 2}}\n"
        "train: {steps: 4, batch_size: 4, checkpoint_every: 2, log_every: 1}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "wavelens.cli", "run", str(spec), "--runs-dir", str(tmp_path / "runs")],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    if done.returncode != 0:
        # A known race, not yet fixed (it fails 1 or 2 of 8 launches here, at this commit
        # and at c1a92ea before it): gloo can abort a rank (SIGABRT) while the process
        # group is torn down, after the run has completed. Only that failure is let
        # through, and only when the run below is complete and in sync.
        assert "Signal 6 (SIGABRT)" in done.stderr, done.stderr[:3000] + "\n...\n" + done.stderr[-3000:]
    (directory,) = (tmp_path / "runs" / "gan-ddp").iterdir()  # one run, written by rank 0
    assert json.loads((directory / "run.json").read_text())["status"] == "complete"
    state = torch.load(directory / "stages/model/checkpoints/ckpt-000000004.pt", weights_only=True)
    assert len(state["replica_checksums"]) == 2 and len(set(state["replica_checksums"])) == 1


def test_fp16_training_scales_every_loss_and_checkpoints_the_scale(tmp_path):
    from wavelens import Placement

    half = Placement(torch.device("cpu"), "fp16", "cpu", "fp16")
    config = GANConfig(code="categorical", steps=2, batch_size=4, d_updates=2, checkpoint_every=2,
                       log_every=1, sample_every=1000, seed=1)
    trainer = GANTrainer(tiny(), config, half, tmp_path)
    assert trainer.scaler.is_enabled()
    history = trainer.train(toy_data(8))
    assert [h["step"] for h in history] == [1, 2]
    assert all(np.isfinite(h[k]) for h in history for k in ("d_loss", "g_loss", "q_loss", "gp"))
    state = torch.load(tmp_path / "checkpoints" / "ckpt-000000002.pt", weights_only=True)
    assert state["grad_scaler"]["scale"] == trainer.scaler.get_scale()
    # Scaled by 65536 at first, the critic's gradients overflow fp16: the steps that did were
    # skipped and the scale lowered (a loop that bypassed the scaler would leave it).
    assert trainer.scaler.get_scale() < 65536
