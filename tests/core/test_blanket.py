"""Blanket planning and folding: properties over random K, O, T, and batched evaluation."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from priorflow.core.blanket import FOLDS, BlanketDenoiser, BlanketPlan


@st.composite
def plans(draw: st.DrawFn) -> BlanketPlan:
    k = draw(st.integers(1, 16))
    o = draw(st.integers(0, k - 1))
    t = draw(st.integers(1, 80))
    return BlanketPlan(t, k, o)


@given(plans())
def test_padding_and_blanket_count_follow_the_formulas(plan: BlanketPlan) -> None:
    k, s, t = plan.blanket_size, plan.stride, plan.trajectory_size
    expected = k if t <= k else k + math.ceil((t - k) / s) * s
    assert plan.padded_size == expected
    assert plan.padded_size >= t
    assert plan.padded_size - t < max(s, k)  # never a whole stride of padding too many
    assert plan.num_blankets == (expected - k) // s + 1
    assert (plan.padded_size - k) % s == 0
    assert plan.starts[-1] + k == plan.padded_size


@given(plans(), st.sampled_from(["symmetrical", "causal"]))
def test_every_state_is_owned_exactly_once(plan: BlanketPlan, fold: str) -> None:
    counts = torch.zeros(plan.padded_size, dtype=torch.long)
    for start, (lo, hi) in zip(plan.starts, plan.owned(fold), strict=True):
        assert 0 <= lo < hi <= plan.blanket_size
        counts[start + lo : start + hi] += 1
    assert (counts == 1).all()


@given(plans())
def test_average_coverage_counts_every_covering_blanket(plan: BlanketPlan) -> None:
    expected = torch.zeros(plan.padded_size)
    for start in plan.starts:
        expected[start : start + plan.blanket_size] += 1
    assert torch.equal(plan.coverage, expected)
    assert (expected >= 1).all()


@settings(max_examples=50, deadline=None)
@given(plans(), st.sampled_from(FOLDS), st.integers(1, 3))
def test_identity_denoiser_gives_identity(plan: BlanketPlan, fold: str, batch: int) -> None:
    x = torch.randn(batch, plan.padded_size, 2, 3, dtype=torch.float64)
    dates = torch.zeros(plan.padded_size, 4, dtype=torch.long)
    out = BlanketDenoiser(lambda xb, s, d: xb, plan, fold=fold)(x, 1.0, dates)
    assert out.dtype == x.dtype
    torch.testing.assert_close(out, x)


@given(plans())
def test_trim_keeps_the_first_requested_states(plan: BlanketPlan) -> None:
    x = torch.arange(plan.padded_size)[None, :, None]
    assert plan.trim(x).flatten().tolist() == list(range(plan.trajectory_size))


def test_example_plan_from_the_documentation() -> None:
    plan = BlanketPlan(72, 8, 4)
    assert (plan.padded_size, plan.num_blankets, plan.stride) == (72, 17, 4)
    assert plan.owned("symmetrical")[:2] == [(0, 6), (2, 6)]
    assert plan.owned("symmetrical")[-1] == (2, 8)
    assert plan.owned("causal")[:2] == [(0, 8), (4, 8)]
    short = BlanketPlan(5, 8, 4)
    assert (short.padded_size, short.num_blankets, short.owned("symmetrical")) == (8, 1, [(0, 8)])


@pytest.mark.parametrize(("t", "k", "o"), [(10, 8, 8), (10, 8, -1), (0, 8, 2)])
def test_bad_plans_are_plain_errors(t: int, k: int, o: int) -> None:
    with pytest.raises(ValueError, match="must"):
        BlanketPlan(t, k, o)


def local_label_denoiser(
    xb: torch.Tensor, sigma: torch.Tensor, dates: torch.Tensor
) -> torch.Tensor:
    """Returns, for every blanket state, the blanket's first global index * 100 + local index."""
    first = dates[:, :1, 0].to(xb.dtype)  # dates[..., 0] carries the global state index here
    local = torch.arange(xb.shape[1], dtype=xb.dtype)[None, :]
    labels = first * 100 + local  # (n, K)
    return labels.reshape(*labels.shape, *[1] * (xb.dim() - 2)).expand_as(xb)


@pytest.mark.parametrize("fold", ["symmetrical", "causal"])
def test_fold_takes_each_state_from_its_owner(fold: str) -> None:
    plan = BlanketPlan(20, 8, 4)
    dates = torch.zeros(plan.padded_size, 4, dtype=torch.long)
    dates[:, 0] = torch.arange(plan.padded_size)
    out = BlanketDenoiser(local_label_denoiser, plan, fold=fold)(
        torch.zeros(1, plan.padded_size, 1), 1.0, dates
    )[0, :, 0]
    expected = []
    for start, (lo, hi) in zip(plan.starts, plan.owned(fold), strict=True):
        expected += [start * 100 + j for j in range(lo, hi)]
    assert out.tolist() == expected


class Net(torch.nn.Module):
    """A small nonlinear blanket denoiser using sigma and dates."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.mix = torch.nn.Linear(8 * 3, 8 * 3)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, dates: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        h = self.mix(x.reshape(n, -1)).reshape(x.shape)
        return torch.tanh(h) * sigma[:, None, None] + dates[..., 3:4].float() / 24


def per_blanket_reference(net: Net, plan: BlanketPlan, x, sigma, dates) -> torch.Tensor:
    """The slow reference: one call per blanket, then the symmetrical fold by hand."""
    out = torch.empty_like(x)
    for b in range(x.shape[0]):
        for start, (lo, hi) in zip(plan.starts, plan.owned("symmetrical"), strict=True):
            window = slice(start, start + plan.blanket_size)
            y = net(x[b : b + 1, window], sigma[b : b + 1], dates[b : b + 1, window])
            out[b, start + lo : start + hi] = y[0, lo:hi]
    return out


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"batch_size": 5},
        {"batch_size": 1},
        {"devices": ["cpu", "cpu"]},
        {"devices": ["cpu"] * 3, "batch_size": 7},
    ],
)
def test_batched_per_blanket_and_multi_device_agree(options: dict) -> None:
    torch.set_num_threads(1)
    plan = BlanketPlan(30, 8, 4)
    net = Net().eval()
    x = torch.randn(3, plan.padded_size, 3)
    sigma = torch.tensor([0.5, 2.0, 10.0])
    dates = torch.randint(0, 24, (3, plan.padded_size, 4))
    with torch.no_grad():
        expected = per_blanket_reference(net, plan, x, sigma, dates)
        composed = BlanketDenoiser(net, plan, **options)
        out = composed(x, sigma, dates)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    assert composed.blanket_evaluations == 3 * plan.num_blankets


def test_one_call_per_batch_not_per_blanket() -> None:
    plan = BlanketPlan(72, 8, 4)
    calls = []
    composed = BlanketDenoiser(lambda xb, s, d: calls.append(xb.shape[0]) or xb, plan)
    composed(
        torch.zeros(2, plan.padded_size, 1),
        1.0,
        torch.zeros(plan.padded_size, 4, dtype=torch.long),
    )
    assert calls == [2 * 17]


def test_out_of_memory_halves_the_batch_and_retries() -> None:
    plan = BlanketPlan(72, 8, 4)
    sizes = []

    def picky(xb: torch.Tensor, s: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        sizes.append(xb.shape[0])
        if xb.shape[0] > 5:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return xb

    composed = BlanketDenoiser(picky, plan)
    x = torch.randn(1, plan.padded_size, 2)
    out = composed(x, 1.0, torch.zeros(plan.padded_size, 4, dtype=torch.long))
    torch.testing.assert_close(out, x)
    assert composed.batch_size == 4  # 17 -> 8 -> 4, remembered for the next call
    assert sizes[:3] == [17, 8, 4]


def test_other_errors_are_not_swallowed() -> None:
    plan = BlanketPlan(16, 8, 4)

    def broken(xb: torch.Tensor, s: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        BlanketDenoiser(broken, plan)(
            torch.zeros(1, 16, 1), 1.0, torch.zeros(16, 4, dtype=torch.long)
        )


def test_dates_of_one_trajectory_for_a_batch_of_several_is_an_error() -> None:
    """The original code silently gave empty dates to the other trajectories."""
    plan = BlanketPlan(16, 8, 4)
    composed = BlanketDenoiser(lambda xb, s, d: xb, plan)
    with pytest.raises(ValueError, match="dates of shape"):
        composed(torch.zeros(3, 16, 1), 1.0, torch.zeros(1, 16, 4, dtype=torch.long))


def test_average_fold_stays_on_the_input_dtype_and_device(device: torch.device) -> None:
    plan = BlanketPlan(20, 8, 4)
    x = torch.randn(2, plan.padded_size, 3, dtype=torch.float64, device=device)
    out = BlanketDenoiser(lambda xb, s, d: 2 * xb, plan, fold="average")(
        x, 1.0, torch.zeros(plan.padded_size, 4, dtype=torch.long)
    )
    assert out.dtype == torch.float64 and out.device == x.device
    torch.testing.assert_close(out, 2 * x)


def test_bad_fold_and_batch_are_plain_errors() -> None:
    plan = BlanketPlan(16, 8, 4)
    with pytest.raises(ValueError, match="'mean' is not a fold mode; choose one of symmetrical"):
        BlanketDenoiser(lambda *a: a[0], plan, fold="mean")
    with pytest.raises(ValueError, match="blanket batch 0 must be a positive"):
        BlanketDenoiser(lambda *a: a[0], plan, batch_size=0)
