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
    from wavelens import load_spec_text
    from wavelens.run import plan_stages

    text = ("spec_version: 1\nname: x\ndata: {plugin: tones}\nmodel: {plugin: tiny_cnn}\n"
            "train: {steps: 3, on_nonfinite: %s}\n")
    keys = [next(p.key for p in plan_stages(load_spec_text(text % how)) if p.name == "model")
            for how in ("stop", "warn")]
    assert keys[0] == keys[1]
