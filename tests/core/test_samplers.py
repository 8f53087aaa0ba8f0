"""Samplers: exact output statistics on a Gaussian prior, config checks, seeds and progress.

With a linear (Gaussian-exact) blanket denoiser every sampler is linear in its initial noise and
its step noises, so the covariance of its output follows exactly by propagating the linear maps
step by step (written here independently of the samplers, from DESIGN.md's update rules). The
empirical covariance of many samples must match it within statistical error, inside blankets and
across seams.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from priorflow.core.blanket import BlanketDenoiser, BlanketPlan
from priorflow.core.samplers import (
    SAMPLERS,
    SamplerOptionError,
    adams_bashforth_coefficients,
    check_sampler_config,
    make_sampler,
)
from priorflow.core.schedules import make_schedule
from tests.gaussian import ExactBlanketDenoiser, ar1_covariance, posterior_matrix

RHO = 0.9
K, O, T0 = 8, 4, 20  # T_pad = 20, N = 4 blankets, seams between them
STEPS = 24
CONFIGS = {
    "ddim": {},
    "ddpm": {},
    "pc": {"corrections": 1, "delta": 0.05},
    "lms": {"order": 3},
    "rewind": {"rewind_after": 4, "jump": True},
    "heun": {"grid": "karras"},
    "dpmpp": {"order": 3, "grid": "loglinear"},
}
DETERMINISTIC = ("ddim", "lms", "heun", "dpmpp")


def trajectory_matrix(plan: BlanketPlan, sigma: float) -> np.ndarray:
    """The blanket-composed denoiser as a ``(T_pad, T_pad)`` matrix, symmetrical fold.

    Built from DESIGN.md's ownership rule directly: blanket 0 gives ``[0, b)``, middle ones
    ``[a, b)``, the last ``[a, K)``, with ``a = O // 2``, ``b = a + S``.
    """
    k, s, n_blankets = plan.blanket_size, plan.stride, plan.num_blankets
    a = plan.overlap // 2
    b = a + s
    local = posterior_matrix(ar1_covariance(k, RHO), sigma)
    matrix = np.zeros((plan.padded_size, plan.padded_size))
    for n in range(n_blankets):
        lo = 0 if n == 0 else a
        hi = k if n == n_blankets - 1 else b
        start = n * s
        for row in range(lo, hi):
            matrix[start + row, start : start + k] = local[row]
    return matrix


def exact_covariance(name: str, plan: BlanketPlan, sigmas: np.ndarray, config: dict) -> np.ndarray:
    """Covariance of the sampler's output, propagated exactly through its linear steps."""
    size = plan.padded_size
    eye = np.eye(size)
    cov = sigmas[0] ** 2 * eye
    steps = len(sigmas) - 1

    def ddim(matrix: np.ndarray, s: float, s_next: float) -> np.ndarray:
        r = s_next / s
        return r * eye + (1 - r) * matrix

    if name in DETERMINISTIC:  # deterministic: track the linear map from x_0 instead
        x_map = output_map(name, plan, sigmas, config)
        return sigmas[0] ** 2 * x_map @ x_map.T

    for i in range(steps):
        s, s_next = sigmas[i], sigmas[i + 1]
        m = trajectory_matrix(plan, s)
        if name == "ddim":
            a = ddim(m, s, s_next)
            cov = a @ cov @ a.T
        elif name == "ddpm":
            tau = 1 - (s_next / s) ** 2
            a = (1 - tau) * eye + tau * m
            cov = a @ cov @ a.T + s_next**2 * tau * eye
        elif name == "pc":
            delta = config["delta"]
            for _ in range(config["corrections"]):
                a = (1 - delta) * eye + delta * m
                cov = a @ cov @ a.T + 2 * delta * s**2 * eye
            a = ddim(m, s, s_next)
            cov = a @ cov @ a.T
        elif name == "rewind":
            target = i + min(config["rewind_after"], steps - i)
            a = ddim(m, s, sigmas[target])
            cov = a @ cov @ a.T + (s_next**2 - sigmas[target] ** 2) * eye
    return cov


def output_map(
    name: str, plan: BlanketPlan, sigmas: np.ndarray, config: dict, denoiser=None
) -> np.ndarray:
    """The linear map ``A`` of a deterministic sampler, ``x_final = A x_0``, written from the
    papers' update rules (the samplers' docstrings) with the denoiser as a matrix
    (default: the blanket-composed exact one, :func:`trajectory_matrix`)."""
    matrix = denoiser or (lambda s: trajectory_matrix(plan, s))
    eye = np.eye(len(matrix(sigmas[0])))
    x_map = eye
    history: list[np.ndarray] = []
    lam = -np.log(sigmas)
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        if name == "ddim":
            r = s_next / s
            x_map = (r * eye + (1 - r) * matrix(s)) @ x_map
        elif name == "lms":
            history = [*history, (eye - matrix(s)) @ x_map / s][-config["order"] :]
            nodes = sigmas[i - len(history) + 1 : i + 1]
            coefficients = adams_bashforth_coefficients(nodes, s, s_next)
            x_map = x_map + sum(c * f for c, f in zip(coefficients, history, strict=True))
        elif name == "heun":  # Karras et al. 2022, Algorithm 1
            slope = (eye - matrix(s)) @ x_map / s
            euler = x_map + (s_next - s) * slope
            corrected = (eye - matrix(s_next)) @ euler / s_next
            x_map = x_map + 0.5 * (s_next - s) * (slope + corrected)
        elif name == "dpmpp":  # Lu et al. 2022, multistep DPM-Solver++ (data prediction)
            history = [*history, matrix(s) @ x_map][-config["order"] :]
            h = lam[i + 1] - lam[i]
            phi1 = np.expm1(-h)
            x_map = (s_next / s) * x_map - phi1 * history[-1]
            if len(history) == 2:
                r0 = (lam[i] - lam[i - 1]) / h
                x_map = x_map - 0.5 * phi1 * (history[-1] - history[-2]) / r0
            elif len(history) == 3:
                r0, r1 = (lam[i] - lam[i - 1]) / h, (lam[i - 1] - lam[i - 2]) / h
                d0 = (history[-1] - history[-2]) / r0
                d1 = (history[-2] - history[-3]) / r1
                phi2 = phi1 / h + 1
                phi3 = phi2 / h - 0.5
                x_map = x_map + phi2 * (d0 + r0 / (r0 + r1) * (d0 - d1))
                x_map = x_map - phi3 * (d0 - d1) / (r0 + r1)
    return x_map


def draw(name: str, batch: int = 64, dims: int = 64, seed: int = 0):
    """``batch * dims`` independent samples of the sampler's output, shape ``(batch*dims, T_pad)``."""
    plan = BlanketPlan(T0, K, O)
    exact = ExactBlanketDenoiser(K, RHO)
    blankets = BlanketDenoiser(exact, plan)
    dates = torch.zeros(plan.padded_size, 4, dtype=torch.long)
    schedule = make_schedule("rectified", 1e-3, 1e3)
    sampler = make_sampler(
        name, lambda x, s: blankets(x, s, dates), schedule, STEPS, **CONFIGS[name]
    )
    generator = torch.Generator().manual_seed(seed)
    x0 = sampler.sigma(0) * torch.randn(batch, plan.padded_size, dims, generator=generator)
    x = sampler(x0.double(), generator=generator)
    samples = x.double().permute(0, 2, 1).reshape(-1, plan.padded_size).numpy()
    return plan, sampler, samples


@pytest.mark.parametrize("name", SAMPLERS)
def test_empirical_covariance_matches_exact_propagation(name: str) -> None:
    plan, sampler, samples = draw(name)
    config = check_sampler_config(name, CONFIGS[name])
    exact = exact_covariance(name, plan, sampler.sigmas.numpy(), config)
    empirical = np.cov(samples, rowvar=False)
    count = samples.shape[0]
    standard_error = np.sqrt((np.outer(np.diag(exact), np.diag(exact)) + exact**2) / count)
    z = np.abs(empirical - exact) / standard_error
    assert z.max() < 5.0, f"{name}: worst covariance entry is {z.max():.1f} standard errors off"
    # Means are zero for this prior; the empirical mean must agree.
    assert np.abs(samples.mean(0)).max() < 5 * np.sqrt(np.diag(exact).max() / count)


def test_exact_covariances_distinguish_samplers() -> None:
    """The test above has power: different samplers' exact covariances differ beyond its tolerance."""
    plan = BlanketPlan(T0, K, O)
    sigmas = make_sampler("ddim", lambda x, s: x, make_schedule("rectified"), STEPS).sigmas.numpy()
    covs = {
        name: exact_covariance(name, plan, sigmas, check_sampler_config(name, CONFIGS[name]))
        for name in ("ddim", "ddpm", "rewind")
    }
    seam = plan.stride + plan.overlap // 2  # first state owned by blanket 1
    for a, b in [("ddim", "ddpm"), ("ddpm", "rewind")]:
        assert np.abs(covs[a] - covs[b]).max() > 0.05, (a, b)
    # Across a seam the composition is an approximation: correlations stay close to the prior's.
    cov = covs["ddpm"]
    std = np.sqrt(np.diag(cov))
    assert abs(cov[seam - 1, seam] / (std[seam - 1] * std[seam]) - RHO) < 0.05


def test_lms_approaches_the_prior_when_one_blanket_covers_the_trajectory() -> None:
    """With K = T the exact denoiser is the exact score: lms tends to the true prior as steps grow."""
    plan = BlanketPlan(K, K, 0)
    schedule = make_schedule("rectified")
    true = ar1_covariance(K, RHO)
    errors = []
    for steps in (4, 16, 64):
        sigmas = make_sampler("lms", lambda x, s: x, schedule, steps).sigmas.numpy()
        cov = exact_covariance("lms", plan, sigmas, {"order": 3})
        errors.append(np.abs(cov - true).max())
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.02, errors


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_adams_bashforth_coefficients_integrate_polynomials_exactly(order: int) -> None:
    nodes = np.array([5.0, 3.2, 2.0, 1.1])[:order]
    lo, hi = nodes[-1], 0.4
    coefficients = adams_bashforth_coefficients(nodes, lo, hi)
    for degree in range(order):
        values = nodes**degree
        exact = (hi ** (degree + 1) - lo ** (degree + 1)) / (degree + 1)
        assert np.isclose(coefficients @ values, exact, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", SAMPLERS)
def test_same_seed_same_sample_other_seed_other_sample(name: str) -> None:
    _, _, a = draw(name, batch=2, dims=3, seed=7)
    _, _, b = draw(name, batch=2, dims=3, seed=7)
    _, _, c = draw(name, batch=2, dims=3, seed=8)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.parametrize("name", SAMPLERS)
def test_progress_reports_every_step_and_grid_honours_t_max(name: str) -> None:
    calls: list[tuple[int, int]] = []
    schedule = make_schedule("loglinear", t_max=0.5)
    evaluations = []

    def denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        evaluations.append(float(sigma))
        return 0.5 * x

    sampler = make_sampler(name, denoiser, schedule, 10, **CONFIGS[name])
    out = sampler(
        torch.ones(1, 3), torch.Generator().manual_seed(0), lambda i, n: calls.append((i, n))
    )
    assert calls == [(i, 10) for i in range(1, 11)]
    assert len(evaluations) == sampler.evaluations
    assert float(sampler.sigmas[0]) == pytest.approx(schedule(0.5))
    assert float(sampler.sigmas[-1]) == pytest.approx(schedule(0.0))
    assert max(evaluations) == pytest.approx(schedule(0.5), rel=1e-6)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    ("name", "config", "key", "message"),
    [
        ("euler", {}, None, "'euler' is not a sampler; choose one of pc, ddpm"),
        ("lms", {"ordre": 3}, "ordre", "unknown key for sampler 'lms'; it takes grid, order"),
        ("lms", {"order": 0}, "order", "0 is not valid; it must be a whole number from 1 to 6"),
        ("lms", {"order": 2.5}, "order", "2.5 is not valid"),
        ("pc", {"delta": -1}, "delta", "-1.0 is not valid"),
        ("pc", {"corrections": True}, "corrections", "True is not valid"),
        ("pc", {"corrections": 10**6}, "corrections", "from 0 to 100"),
        ("rewind", {"jump": "yes"}, "jump", "'yes' is not valid"),
        ("ddim", {"order": 3}, "order", "unknown key for sampler 'ddim'; it takes grid"),
        ("dpmpp", {"order": 4}, "order", "4 is not valid; it must be 2 or 3"),
        ("lms", {"grid": "cosine"}, "grid", "one of uniform, karras, loglinear"),
    ],
)
def test_bad_sampler_option_names_its_key(name: str, config: dict, key: str, message: str) -> None:
    with pytest.raises(SamplerOptionError) as info:
        check_sampler_config(name, config)
    assert info.value.key == key and message in info.value.reason
    assert "\n" not in str(info.value)


def test_defaults_are_filled_in() -> None:
    assert check_sampler_config("pc", {}) == {"grid": "uniform", "corrections": 1, "delta": 0.01}
    assert check_sampler_config("rewind", {"jump": False}) == {
        "grid": "uniform",
        "rewind_after": 16,
        "jump": False,
    }
    assert check_sampler_config("lms", {"order": 2}) == {"grid": "uniform", "order": 2}
    assert check_sampler_config("dpmpp", {"grid": "karras"}) == {"grid": "karras", "order": 2}


def test_bad_steps_is_a_plain_error() -> None:
    with pytest.raises(ValueError, match="steps: 0 must be a positive integer"):
        make_sampler("ddim", lambda x, s: x, make_schedule("rectified"), 0)


def sampled_map(
    name: str, config: dict, steps: int, size: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """The sampler code's own linear map on one blanket of the exact AR(1) prior (``K = T``):
    the basis propagated through it, float64 in, and its noise levels."""
    plan = BlanketPlan(size, size, 0)
    blankets = BlanketDenoiser(ExactBlanketDenoiser(size, RHO), plan)
    dates = torch.zeros(size, 4, dtype=torch.long)
    sampler = make_sampler(
        name, lambda x, s: blankets(x, s, dates), make_schedule("rectified"), steps, **config
    )
    basis = torch.eye(size, dtype=torch.float64).reshape(size, size, 1)
    out = sampler.run(basis, lambda: None, lambda i, n: None)  # float64 all the way
    return out[..., 0].numpy().T, sampler.sigmas.numpy()


def prior_error(name: str, config: dict, steps: int) -> float:
    """Relative Frobenius error of the sampler's output covariance against the true prior."""
    x_map, sigmas = sampled_map(name, config, steps)
    cov = sigmas[0] ** 2 * x_map @ x_map.T
    true = ar1_covariance(16, RHO)
    return float(np.linalg.norm(cov - true) / np.linalg.norm(true))


@pytest.mark.parametrize("name", DETERMINISTIC)
@pytest.mark.parametrize("grid", ["uniform", "karras", "loglinear", "band"])
def test_the_code_is_the_papers_linear_map(name: str, grid: str) -> None:
    """Exact, not statistical: the sampler's code and the update rule written from its paper
    (:func:`output_map`) are the same linear map, on every grid."""
    config = check_sampler_config(name, {**CONFIGS[name], "grid": grid})
    x_map, sigmas = sampled_map(name, config, 12)
    cov = ar1_covariance(16, RHO)
    expected = output_map(name, None, sigmas, config, denoiser=lambda s: posterior_matrix(cov, s))
    # the denoiser gets sigma as float32 (as every backbone does): equal to about 1e-7
    np.testing.assert_allclose(x_map, expected, rtol=1e-5, atol=1e-9)


def test_sixteen_evaluations_reach_the_accuracy_of_lms_at_sixty_four() -> None:
    """The goal of fast sampling, proven exactly: DPM-Solver++ (order 3) on the band grid with
    16 denoiser evaluations is closer to the true prior than lms on the uniform grid with 64
    (relative Frobenius error of the output covariance; K = T = 16, rho = 0.9)."""
    lms_64 = prior_error("lms", {"order": 3}, 64)
    fast_16 = prior_error("dpmpp", {"order": 3, "grid": "band"}, 16)
    assert lms_64 == pytest.approx(1.1e-2, rel=0.05)  # the measurement
    assert fast_16 <= lms_64, (fast_16, lms_64)
    assert prior_error("heun", {"grid": "karras"}, 32) < prior_error("heun", {"grid": "karras"}, 8)
