"""Training: the loss, the validation split, learning on a tiny problem, checkpoints, resume."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from priorflow.core.dates import times_to_fields
from priorflow.core.denoiser import PreconditionedDenoiser
from priorflow.errors import ConfigError
from priorflow.models.card import read_card
from priorflow.models.loading import load_model
from priorflow.models.reference import ReferenceBackbone
from priorflow.models.training import (
    STATE_NAME,
    TrainConfig,
    TrainingData,
    blanket_split,
    denoising_loss,
    train,
)

SHAPE = (2, 4, 8)


def tiny_world(days: int = 16, seed: int = 0) -> TrainingData:
    """AR(1) anomalies (rho 0.9 per hour) around a diurnal mean that moves along x."""
    rng = np.random.default_rng(seed)
    times = np.datetime64("2000-01-01T00", "ns") + np.arange(24 * days) * np.timedelta64(1, "h")
    hours = np.arange(len(times)) % 24
    x = np.arange(SHAPE[2])
    mean = np.cos(2 * np.pi * (x[None, :] / SHAPE[2] - hours[:, None] / 24))  # (T, W)
    states = np.empty((len(times), *SHAPE), dtype=np.float32)
    a = rng.standard_normal(SHAPE)
    for i in range(len(times)):
        a = 0.9 * a + np.sqrt(1 - 0.81) * rng.standard_normal(SHAPE)
        states[i] = 0.5 * a + mean[i][None, None, :]
    return TrainingData(states, times, 1, "tiny")


def config(**changes) -> TrainConfig:
    base = TrainConfig(
        steps=8,
        batch_size=4,
        lr=3e-3,
        warmup=2,
        eval_every=4,
        blanket_size=4,
        val_blankets=16,
        val_every_days=4,
        backbone={"channels": [8, 16], "embedding": 16},
    )
    return replace(base, **changes)


def weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


# ------------------------------------------------------------------------ loss and split


def test_denoising_loss_formula():
    class Zero(nn.Module):
        def forward(self, x, c_noise, dates):
            return torch.zeros_like(x)

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, *SHAPE, generator=generator)
    z = torch.randn(3, 4, *SHAPE, generator=generator)
    sigma = torch.tensor([0.01, 1.0, 30.0])
    dates = torch.zeros(3, 4, 4, dtype=torch.long)
    loss = denoising_loss(PreconditionedDenoiser(Zero()), x, dates, sigma, z)
    # d = c_skip (x + sigma z) for a zero backbone
    s = sigma.reshape(-1, 1, 1, 1, 1)
    d = (x + s * z) / (s**2 + 1)
    expected = (1 / sigma**2 + 1) * (d - x).square().flatten(1).mean(1)
    torch.testing.assert_close(loss, expected)


def test_blanket_split_holds_out_whole_days():
    data = tiny_world(days=20)
    split = blanket_split(data.times, 1, 4, 1, val_every_days=5)
    hours = np.arange(len(data.times))
    day = hours // 24
    for starts, held_out in ((split.train, False), (split.val, True)):
        members = starts.numpy()[:, None] + np.arange(4)
        assert np.all((day[members] % 5 == 4) == held_out)
    assert len(split.val) > 0 and len(split.train) > 3 * len(split.val)


def test_blanket_split_skips_gaps_and_checks_dt():
    data = tiny_world(days=8)
    times = np.delete(data.times, 30)  # a missing hour
    split = blanket_split(times, 1, 4, 1, val_every_days=4)
    hours = (times - times[0]) // np.timedelta64(1, "h")
    for start in torch.cat([split.train, split.val]).numpy():
        assert hours[start + 3] - hours[start] == 3
    with pytest.raises(ConfigError, match="dt_hours"):
        blanket_split(data.times, 2, 4, 3, val_every_days=4)
    with pytest.raises(ConfigError, match="blanket_size"):
        blanket_split(data.times[:3], 1, 4, 1, val_every_days=4)


def test_strided_blankets():
    data = tiny_world(days=8)
    split = blanket_split(data.times, 1, 4, 3, val_every_days=4)
    assert split.stride == 3


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"steps": 0}, "steps"),
        ({"lr": 0.0}, "lr"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"val_every_days": 1}, "val_every_days"),
        ({"precision": "float8"}, "precision"),
        ({"schedule": "cosine"}, "schedule: 'cosine' is not a schedule"),
    ],
)
def test_bad_config(changes, field):
    with pytest.raises(ConfigError) as info:
        config(**changes).check()
    assert str(info.value).startswith(field)


# ------------------------------------------------------------------------ learning


def test_loss_decreases_on_a_tiny_problem(tmp_path):
    seen = []
    result = train(
        tiny_world(),
        tmp_path / "m",
        config(steps=160, eval_every=40, batch_size=8, val_blankets=64),
        progress=seen.append,
    )
    metadata = read_card(tmp_path / "m").metadata
    val = [entry[2] for entry in metadata["history"]]
    assert [entry[0] for entry in metadata["history"]] == [40, 80, 120, 160]
    assert val[-1] < 0.8 * metadata["initial_val_loss"]
    assert val[-1] < val[0]
    assert [p.step for p in seen] == list(range(1, 161))
    assert np.mean([p.loss for p in seen[-40:]]) < np.mean([p.loss for p in seen[:40]])
    assert result.best_val_loss == pytest.approx(min(val), rel=1e-4)


def test_files_card_and_best_checkpoint(tmp_path):
    out = tmp_path / "m"
    result = train(tiny_world(), out, config(steps=12))
    names = sorted(p.name for p in out.iterdir())
    assert names == ["card.yaml", "model_best.pt", "model_last.pt", STATE_NAME]
    card = read_card(out)
    assert card.archive == "tiny" and card.blanket_size == 4 and card.state_shape == SHAPE
    assert card.backbone.target == "priorflow.models.reference:ReferenceBackbone"
    meta = card.metadata
    assert meta["trained_steps"] == 12 and meta["seed"] == 0
    assert meta["best_step"] == result.best_step
    history = meta["history"]
    best = min(history, key=lambda entry: entry[2])
    assert best[0] == result.best_step
    # model_best.pt is the checkpoint at the best validation step
    last, best_weights = weights(out / "model_last.pt"), weights(out / "model_best.pt")
    same = all(torch.equal(last[k], best_weights[k]) for k in last)
    assert same == (result.best_step == 12)
    assert load_model(out, "last").card == card


def test_same_seed_same_model(tmp_path):
    train(tiny_world(), tmp_path / "a", config())
    train(tiny_world(), tmp_path / "b", config())
    train(tiny_world(), tmp_path / "c", config(seed=1))
    a, b, c = (weights(tmp_path / name / "model_last.pt") for name in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


class Interrupt(Exception):
    pass


def test_resume_continues_from_the_saved_step(tmp_path):
    data = tiny_world()
    train(data, tmp_path / "straight", config(steps=12))

    def stop_at_7(info):
        if info.step == 7:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(data, tmp_path / "resumed", config(steps=12), progress=stop_at_7)
    state = torch.load(tmp_path / "resumed" / STATE_NAME, weights_only=True)
    assert state["step"] == 4
    assert not list((tmp_path / "resumed").glob("*.tmp"))

    seen = []
    result = train(data, tmp_path / "resumed", config(steps=12), progress=seen.append)
    assert result.resumed_from == 4 and result.step == 12
    assert seen[0].step == 5
    straight = weights(tmp_path / "straight" / "model_last.pt")
    resumed = weights(tmp_path / "resumed" / "model_last.pt")
    for key, value in straight.items():
        torch.testing.assert_close(resumed[key], value, rtol=1e-5, atol=1e-6)

    # rerunning a finished run does nothing; extending it continues
    again = train(data, tmp_path / "resumed", config(steps=12))
    assert again.resumed_from == 12 and again.step == 12
    longer = train(data, tmp_path / "resumed", config(steps=16))
    assert longer.resumed_from == 12 and longer.step == 16
    assert read_card(tmp_path / "resumed").metadata["trained_steps"] == 16


def test_resume_with_other_settings_is_refused(tmp_path):
    data = tiny_world()
    train(data, tmp_path / "m", config(steps=4))
    with pytest.raises(ConfigError) as info:
        train(data, tmp_path / "m", config(steps=8, lr=1e-3))
    assert str(info.value).startswith("lr:") and "new --out" in str(info.value)


def test_the_spectral_skip_is_fitted_on_the_training_days_and_resumes(tmp_path, monkeypatch):
    data = tiny_world()
    settings = config(backbone={"channels": [8, 16], "embedding": 16, "spectral_skip": True})
    out = tmp_path / "m"
    train(data, out, settings)
    saved = weights(out / "model_last.pt")
    split = blanket_split(data.times, 1, 4, 1, settings.val_every_days)
    index = torch.unique((split.train[:, None] + torch.arange(4)).reshape(-1)).numpy()
    assert (saved["channel_covariance"][..., 0, 0, 0] - 1).abs().max() > 0.1  # measured
    # fitted on the training states, their dates and the pairs of them one hour apart
    position = {int(t): i for i, t in enumerate(index)}
    pairs = [[i, position[int(t) + 1]] for i, t in enumerate(index) if int(t) + 1 in position]
    assert len(pairs) < len(index) - 1  # the held-out days leave gaps
    reference = ReferenceBackbone(SHAPE, channels=[8, 16], embedding=16, spectral_skip=True)
    dates = times_to_fields(data.times[index])
    reference.fit_states(torch.from_numpy(data.states[index]), dates, torch.tensor(pairs))
    for name in ("climatology", "channel_covariance", "lag_correlation"):
        torch.testing.assert_close(saved[name], getattr(reference, name))
    everything = ReferenceBackbone(SHAPE, channels=[8, 16], embedding=16, spectral_skip=True)
    everything.fit_states(torch.from_numpy(data.states), times_to_fields(data.times))
    assert not torch.allclose(saved["climatology"], everything.climatology)
    assert saved["lag_correlation"].min() > 0.7  # AR(1) with 0.9 an hour
    # a resumed run loads what the first one fitted and does not fit again
    fits = []
    monkeypatch.setattr(ReferenceBackbone, "fit_states", lambda *args: fits.append(args))
    train(data, out, replace(settings, steps=12))
    assert fits == []
    resumed = weights(out / "model_last.pt")
    for name in ("climatology", "channel_covariance", "lag_correlation"):
        torch.testing.assert_close(resumed[name], saved[name])
    assert load_model(out).backbone.spectral_skip
