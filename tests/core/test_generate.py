"""generate_trajectory: seeds, shapes, records, precision and devices, on a small real network."""

from __future__ import annotations

from datetime import datetime

import pytest
import torch
from torch import nn

from priorflow.core.dates import timestamps
from priorflow.core.generate import generate_trajectories, generate_trajectory
from priorflow.core.seeds import job_seed
from priorflow.models.card import ModelCard
from priorflow.models.loading import Model


class SmallBackbone(nn.Module):
    """A small conditioned MLP backbone over (n, K, C) blankets."""

    def __init__(self, state_shape: tuple[int, ...] = (3,), blanket_size: int = 8):
        super().__init__()
        torch.manual_seed(1)
        size = blanket_size * state_shape[0]
        self.inp = nn.Linear(size + 3, 64)
        self.out = nn.Linear(64, size)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, dates: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        hour = dates[:, 0, 3].float() / 24 * 2 * torch.pi
        cond = torch.stack([c_noise / 10, torch.sin(hour), torch.cos(hour)], dim=1)
        h = torch.relu(self.inp(torch.cat([x.reshape(n, -1), cond.to(x.dtype)], dim=1)))
        return self.out(h).reshape(x.shape)


def small_model(precision: str = "float32") -> Model:
    card = ModelCard(
        backbone={"target": "tests.test_generate:SmallBackbone"},
        blanket_size=8,
        dt_hours=6,
        state_shape=(3,),
        denoising_steps=12,
        precision=precision,
    )
    return Model(card, SmallBackbone().eval())


START = datetime(2000, 4, 3)


def test_same_seed_is_bit_identical_and_members_differ() -> None:
    model = small_model()
    seed1, seed2 = job_seed(0, 30, START, 0), job_seed(0, 30, START, 1)
    a = generate_trajectory(model, 30, START, seed1, overlap=4)
    b = generate_trajectory(model, 30, START, seed1, overlap=4)
    c = generate_trajectory(model, 30, START, seed2, overlap=4)
    assert torch.equal(a.latent, b.latent)
    assert not torch.allclose(a.latent, c.latent)


def test_shapes_timestamps_and_record() -> None:
    model = small_model()
    out = generate_trajectory(model, 30, START, 5, overlap=4, sampler="pc", steps=6)
    assert out.latent.shape == (30, 3) and out.latent.dtype == torch.float32
    assert torch.equal(out.timestamps, timestamps(START, 30, 6))
    assert out.timestamps[1].tolist() == [2000, 4, 3, 6]
    record = out.record
    assert record["padded_size"] == 32 and record["num_blankets"] == 7
    assert record["denoiser_evaluations"] == 12  # pc: (corrections + 1) per step
    assert record["blanket_evaluations"] == 12 * 7
    assert record["finite"] is True and record["steps"] == 6 and record["blanket_batch"] is None
    assert record["mean"] == pytest.approx(float(out.latent.mean()))
    assert set(record) >= {"seconds", "device", "host", "precision", "std"}


def test_steps_default_to_the_card_and_progress_is_reported() -> None:
    calls = []
    out = generate_trajectory(
        small_model(), 8, START, 1, overlap=2, progress=lambda i, n: calls.append((i, n))
    )
    assert out.record["steps"] == 12 and calls[-1] == (12, 12) and len(calls) == 12


def test_trajectory_prefix_does_not_depend_on_batching_or_devices() -> None:
    model = small_model()
    base = generate_trajectory(model, 40, START, 3, overlap=4)
    batched = generate_trajectory(model, 40, START, 3, overlap=4, blanket_batch=3)
    spread = generate_trajectory(model, 40, START, 3, overlap=4, devices=["cpu", "cpu"])
    torch.testing.assert_close(batched.latent, base.latent, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(spread.latent, base.latent, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_reduced_precision_is_finite_and_close_to_float32(precision: str) -> None:
    model = small_model()
    reference = generate_trajectory(model, 30, START, 9, overlap=4, precision="float32")
    reduced = generate_trajectory(model, 30, START, 9, overlap=4, precision=precision)
    assert reduced.record["precision"] == precision
    assert torch.isfinite(reduced.latent).all()
    error = (reduced.latent - reference.latent).abs().max() / reference.latent.abs().max()
    assert error < 0.1, f"{precision}: relative max error {error:.3f}"
    assert torch.get_default_dtype() == torch.float32


def test_null_precision_uses_the_training_precision() -> None:
    model = small_model(precision="bfloat16")
    out = generate_trajectory(model, 8, START, 1, overlap=2, precision=None)
    assert out.record["precision"] == "bfloat16"
    assert torch.isfinite(out.latent).all()


@pytest.mark.parametrize("sampler", ["pc", "ddpm", "ddim", "rewind", "lms"])
def test_every_sampler_through_generate(sampler: str) -> None:
    out = generate_trajectory(small_model(), 20, START, 2, overlap=4, sampler=sampler, steps=8)
    assert torch.isfinite(out.latent).all() and out.latent.shape == (20, 3)


def test_on_device(device: torch.device) -> None:
    model = small_model()
    cpu = generate_trajectory(model, 20, START, 4, overlap=4)
    there = generate_trajectory(model, 20, START, 4, overlap=4, devices=[device])
    assert there.latent.device.type == "cpu"
    torch.testing.assert_close(there.latent, cpu.latent, rtol=1e-3, atol=1e-3)


def test_a_member_in_a_batch_is_the_member_alone() -> None:
    """Batching changes a member only by the rounding of batched arithmetic: its noise comes
    from its own generator, its dates are its own."""
    model = small_model()
    starts = [START, datetime(2000, 4, 3, 6), datetime(2001, 1, 1), START]
    seeds = [job_seed(0, 30, s, m) for m, s in enumerate(starts)]
    batch = generate_trajectories(model, 30, starts, seeds, overlap=4, steps=8)
    assert [t.record["batch"] for t in batch] == [4] * 4
    for start, seed, member in zip(starts, seeds, batch, strict=True):
        alone = generate_trajectory(model, 30, start, seed, overlap=4, steps=8)
        torch.testing.assert_close(member.latent, alone.latent, rtol=0, atol=1e-5)
        assert torch.equal(member.timestamps, alone.timestamps)
        assert member.record["mean"] == pytest.approx(float(member.latent.mean()))
    assert not torch.allclose(batch[0].latent, batch[3].latent)  # same date, other seed


def test_the_same_batch_layout_is_bit_identical() -> None:
    model = small_model()
    starts, seeds = [START, START], [3, 4]
    a = generate_trajectories(model, 30, starts, seeds, overlap=4, steps=6, sampler="ddpm")
    b = generate_trajectories(model, 30, starts, seeds, overlap=4, steps=6, sampler="ddpm")
    assert all(torch.equal(x.latent, y.latent) for x, y in zip(a, b, strict=True))


def test_a_stochastic_sampler_draws_each_members_noise_from_its_seed() -> None:
    """ddpm draws fresh noise every step: member 1's trajectory is the one its seed gives alone."""
    model = small_model()
    batch = generate_trajectories(
        model, 16, [START, START], [7, 8], overlap=4, steps=6, sampler="ddpm"
    )
    alone = generate_trajectory(model, 16, START, 8, overlap=4, steps=6, sampler="ddpm")
    torch.testing.assert_close(batch[1].latent, alone.latent, rtol=0, atol=1e-5)


def test_starts_and_seeds_come_in_pairs() -> None:
    with pytest.raises(ValueError, match="one of each per member"):
        generate_trajectories(small_model(), 16, [START, START], [1], overlap=4)
    with pytest.raises(ValueError, match="one of each per member"):
        generate_trajectories(small_model(), 16, [], [], overlap=4)
