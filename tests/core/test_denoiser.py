"""The preconditioned denoiser: EDM coefficients, shapes, precision."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from priorflow.core.denoiser import PreconditionedDenoiser
from priorflow.core.precision import resolve_precision


class Recorder(nn.Module):
    """Returns a constant and records what it was given."""

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, dates: torch.Tensor) -> torch.Tensor:
        self.seen = (
            x.clone(),
            c_noise.clone(),
            dates.clone(),
            torch.is_autocast_enabled(x.device.type),
        )
        return torch.full_like(x, 3.0)


@pytest.mark.parametrize("sigma", [1e-3, 0.5, 1.0, 80.0, 1e3])
def test_edm_preconditioning(sigma: float) -> None:
    backbone = Recorder()
    x = torch.randn(2, 4, 5)
    dates = torch.ones(2, 4, 4, dtype=torch.long)
    out = PreconditionedDenoiser(backbone)(x, torch.tensor([sigma, sigma]), dates)
    c_skip, c_out, c_in = (
        1 / (sigma**2 + 1),
        sigma / math.sqrt(sigma**2 + 1),
        1 / math.sqrt(sigma**2 + 1),
    )
    torch.testing.assert_close(out, c_skip * x + c_out * 3.0)
    seen_x, c_noise, seen_dates, autocast = backbone.seen
    torch.testing.assert_close(seen_x, c_in * x)
    torch.testing.assert_close(c_noise, torch.full((2,), 10 * math.log(sigma)))
    assert torch.equal(seen_dates, dates) and not autocast


def test_scalar_sigma_broadcasts_and_precision_autocasts() -> None:
    backbone = Recorder()
    out = PreconditionedDenoiser(backbone, "bfloat16")(
        torch.randn(3, 2, 1), torch.tensor(2.0), torch.zeros(3, 2, 4)
    )
    assert out.dtype == torch.float32 and backbone.seen[1].shape == (3,) and backbone.seen[3]


def test_resolve_precision() -> None:
    assert resolve_precision(None, "bfloat16") == "bfloat16"
    assert resolve_precision("float16", "float32") == "float16"
    with pytest.raises(ValueError, match="'half' is not a precision; choose float32"):
        resolve_precision("half", "float32")
