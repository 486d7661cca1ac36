"""The core's training loop, as a plugin author uses it (docs/writing-plugins.md)."""

from __future__ import annotations

import pytest
import torch

from wavelens import StageError, TrainingLoop


class GuideLoop(TrainingLoop):
    """A loop written as the guide says: the network given to the loop, and
    ``extra_state`` holding only what is checkpointed besides it."""

    def __init__(self, network: torch.nn.Module, stop_after: int | None = None, **settings):
        super().__init__(network=network, **settings)
        self.model = network
        self.optimizer = torch.optim.Adam(network.parameters(), lr=0.05)
        self.stop_after = stop_after

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        if self.stop_after is not None and step > self.stop_after:
            raise KeyboardInterrupt  # killed: whatever the last checkpoint holds is all that is left
        x = torch.linspace(-1, 1, 16).unsqueeze(1) * step
        loss = (self.model(x) - torch.sin(x)).pow(2).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.detach()}

    def extra_state(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def load_extra_state(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])


def _network(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def _settings(workdir) -> dict:
    return {"workdir": workdir, "steps": 20, "checkpoint_every": 5, "log_every": 5}


def test_a_killed_guide_loop_resumes_bit_identically(tmp_path):
    whole = _network(0)
    GuideLoop(whole, **_settings(tmp_path / "whole")).run()

    with pytest.raises(KeyboardInterrupt):
        GuideLoop(_network(0), stop_after=12, **_settings(tmp_path / "killed")).run()  # last checkpoint: 10
    resumed = _network(1)  # a fresh network, as a new process would build: the checkpoint restores it
    loop = GuideLoop(resumed, **_settings(tmp_path / "killed"))
    loop.run()
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert [entry["step"] for entry in loop.history] == [5, 10, 15, 20]


class NoNetworkLoop(GuideLoop):
    def __init__(self, network, **settings):
        TrainingLoop.__init__(self, **settings)  # the network is not given to the loop
        self.model = network
        self.optimizer = torch.optim.Adam(network.parameters(), lr=0.05)
        self.stop_after = None


def test_a_loop_that_would_checkpoint_no_network_is_refused_before_training(tmp_path):
    with pytest.raises(StageError, match="would checkpoint no network weights"):
        NoNetworkLoop(_network(0), **_settings(tmp_path)).run()
    assert not (tmp_path / "checkpoints").exists()


def test_a_checkpoint_without_the_network_is_not_resumed_from_fresh_weights(tmp_path):
    from wavelens import CheckpointManager

    CheckpointManager(tmp_path / "checkpoints").save(5, {"step": 5, "history": [], "optimizer": {}})
    with pytest.raises(StageError, match="holds no network weights"):
        GuideLoop(_network(0), **_settings(tmp_path)).run()


class DivergingLoop(GuideLoop):
    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        values = super().train_step(step)
        if step >= 7:
            values["loss"] = torch.tensor(float("nan"))
        return values


def test_a_diverging_run_stops_naming_the_step(tmp_path):
    with pytest.raises(StageError, match=r"diverged at step 7: loss = nan .*of step 5, is kept"):
        DivergingLoop(_network(0), **_settings(tmp_path)).run()
    assert [p.name for p in sorted((tmp_path / "checkpoints").iterdir())] == ["ckpt-000000005.pt"]


def test_a_diverging_run_may_be_told_to_go_on(tmp_path, caplog):
    import logging

    loop = DivergingLoop(_network(0), on_nonfinite="warn", log=logging.getLogger("wavelens.test"),
                         **_settings(tmp_path))
    loop.run()
    assert caplog.text.count("diverged at step 7") == 1 and loop.history[-1]["step"] == 20


def test_on_nonfinite_does_not_change_the_model_stage_key():
    from wavelens.host import load_spec_text, plan_stages

    text = ("spec_version: 1\nname: x\ndata: {plugin: tones}\nmodel: {plugin: tiny_cnn}\n"
            "train: {steps: 3, on_nonfinite: %s}\n")
    keys = [next(p.key for p in plan_stages(load_spec_text(text % how)) if p.name == "model")
            for how in ("stop", "warn")]
    assert keys[0] == keys[1]


# -- settings from the stage, precision and the step --------------------------------------


def test_a_loop_takes_its_settings_from_the_stage_and_the_spec(tmp_path):
    import logging

    from wavelens import StageContext, TrainSpec, resolve_placement

    ctx = StageContext(stage="model", workdir=tmp_path, placement=resolve_placement("cpu"), seed=3,
                       log=logging.getLogger("wavelens.test"), spec_dir=tmp_path)
    train = TrainSpec(steps=7, batch_size=1, checkpoint_every=3, keep_checkpoints=2, log_every=2,
                      on_nonfinite="warn")
    loop = GuideLoop.from_context(ctx, train, network=_network(0))
    assert (loop.steps, loop.checkpoint_every, loop.log_every, loop.on_nonfinite) == (7, 3, 2, "warn")
    assert loop.workdir == tmp_path and loop.placement is ctx.placement and loop.log is ctx.log
    assert loop.checkpoints.keep == 2 and (loop.rank, loop.world) == (0, 1)
    assert GuideLoop.from_context(ctx, train, network=_network(0), steps=4).steps == 4  # given wins
    loop.run()
    assert [p.name for p in sorted((tmp_path / "checkpoints").iterdir())] == [
        "ckpt-000000006.pt", "ckpt-000000007.pt"]


def _fp16_cpu():
    from wavelens import Placement

    return Placement(torch.device("cpu"), "fp16", "cpu", "fp16")


class HalfLoop(TrainingLoop):
    """fp16 autocast on the CPU; ``gain`` sets the size of the gradients."""

    def __init__(self, *, gain: float, **settings):
        super().__init__(**settings)
        self.gain = gain
        self.optimizer = torch.optim.SGD(self.network.parameters(), lr=1e6)

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        with self.autocast():
            output = self.network(torch.ones(2, 4))
        loss = (output.float() * self.gain).sum()
        self.optimizer.zero_grad()
        self.backward(loss)
        self.step(self.optimizer)
        return {"loss": loss.detach()}

    def extra_state(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def load_extra_state(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])


def test_fp16_gradients_are_scaled_so_that_small_ones_do_not_vanish(tmp_path):
    torch.manual_seed(0)
    network = torch.nn.Linear(4, 1)
    before = network.weight.detach().clone()
    HalfLoop(gain=1e-9, network=network, placement=_fp16_cpu(), workdir=tmp_path, steps=1).run()
    # d loss / d weight = 2e-9 per entry, below fp16's smallest number: unscaled, it is 0.
    torch.testing.assert_close(network.weight.detach() - before, torch.full((1, 4), -2e-3), rtol=2e-3,
                               atol=0)
    plain = torch.nn.Linear(4, 1)
    with torch.autocast("cpu", dtype=torch.float16):
        output = plain(torch.ones(2, 4))
    (output.float() * 1e-9).sum().backward()
    assert not plain.weight.grad.any()


def test_an_overflowing_fp16_step_is_skipped_and_the_scale_is_checkpointed(tmp_path):
    torch.manual_seed(0)
    network = torch.nn.Linear(4, 1)
    before = network.weight.detach().clone()
    loop = HalfLoop(gain=1.0, network=network, placement=_fp16_cpu(), workdir=tmp_path, steps=1)
    loop.run()  # gradient 2 times the initial scale 65536 overflows fp16: step skipped
    assert torch.equal(network.weight.detach(), before) and loop.scaler.get_scale() == 32768
    resumed = HalfLoop(gain=1.0, network=torch.nn.Linear(4, 1), placement=_fp16_cpu(),
                       workdir=tmp_path, steps=1)
    assert resumed.restore() == 1 and resumed.scaler.get_scale() == 32768
