"""``check:``: what the prior check measures and the thresholds of its verdicts."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from priorflow.core.samplers import SAMPLERS
from priorflow.errors import ConfigError

#: The criteria of the "did the denoiser learn?" verdict (:mod:`priorflow.evaluation.learned`).
LEARNED_CRITERIA = ("mean", "std", "autocorrelation", "spectrum", "cross_channel")
#: The criteria of "what does composition do?" in standard errors
#: (:mod:`priorflow.evaluation.composition`).
COMPOSITION_CRITERIA = ("seams", "autocorrelation", "autocorrelation_beyond", "variance")


class CheckConfig(BaseModel):
    """The ``check:`` section of a run config: what the prior check measures and its thresholds
    (:mod:`priorflow.evaluation.check`).

    Two verdicts. "Did the denoiser learn?" (``learned``, the gate): the model's own blankets
    against the archive's windows, every criterion in units of its standard error, at a
    family-wise false-fail rate ``false_fail_rate`` (:mod:`priorflow.evaluation.learned`).
    "What does composition do?" (``composition``): the run's composed trajectories against the
    model's own blankets (and the archive beyond them) in units of standard errors at the same
    rate (seams, autocorrelation, variance; with ``learned``), and against the archive with the
    fixed thresholds below (``max_*``/``min_*``); a warning or a failure.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=True, description="run the check after generation (flows)")
    learned: bool = Field(
        default=False,
        description="judge the model's own blankets (then the gate; the demo and nightly configs "
        "set it); false: the composed run's verdict gates. It needs 8 archive windows per start "
        "date within blanket_window_days (docs/check.md)",
    )
    false_fail_rate: float = Field(
        default=0.01,
        gt=0,
        lt=0.5,
        description="probability that a right model fails the learned verdict (all tests)",
    )
    tolerance: dict[str, float] = Field(
        default_factory=dict,
        description="per learned criterion, a factor on its |z| threshold (>1 looser, <1 "
        "tighter; the false-fail rate holds at 1)",
    )
    composition_tolerance: dict[str, float] = Field(
        default_factory=dict,
        description="per composition criterion (seams, autocorrelation, autocorrelation_beyond, "
        "variance), a factor on its |z| threshold",
    )
    blanket_members: int = Field(
        default=32, ge=4, le=10_000, description="model blankets sampled per start date"
    )
    blanket_window_days: float = Field(
        default=15, ge=3, le=183, description="archive windows within this many days of the date"
    )
    blanket_sampler: str = Field(
        default="dpmpp",
        description="sampler of the blankets (accurate, so that the denoiser is judged, not "
        "the sampler); 'run': the run's own sampler and steps",
    )
    blanket_sampler_config: dict[str, Any] = Field(
        default_factory=lambda: {"order": 3, "grid": "band"},
        description="its config (with 'run': ignored)",
    )
    blanket_steps: int = Field(default=32, ge=1, le=10_000, description="its steps")
    bootstrap_resamples: int = Field(
        default=400, ge=50, le=100_000, description="bootstrap resamples of standard errors"
    )
    composition: Literal["warn", "fail", "off"] = Field(
        default="warn",
        description="the composed run's verdict: a warning, a failure, or not judged",
    )
    window_days: float = Field(
        default=15, gt=0, le=183, description="climatology: days either side of the day of year"
    )
    max_lag: int = Field(default=12, ge=1, description="largest lag measured (states)")
    acf_lags: int = Field(default=2, ge=1, description="lags 1..acf_lags are judged")
    max_bias: float = Field(default=0.25, gt=0, description="|mean bias| / climatological std")
    min_std_ratio: float = Field(default=0.8, gt=0, description="std / climatological std, low")
    max_std_ratio: float = Field(default=1.2, gt=0, description="std / climatological std, high")
    min_ssr: float = Field(default=0.7, gt=0, description="spread-skill ratio, low")
    max_ssr: float = Field(default=1.3, gt=0, description="spread-skill ratio, high")
    max_crps_ratio: float = Field(
        default=1.25, gt=0, description="fair CRPS of the prior / of climatology"
    )
    max_acf_error: float = Field(default=0.2, gt=0, description="|acf - archive acf|")
    max_seam_index: float = Field(default=1.5, gt=0, description="seam discontinuity index")
    max_spectrum_error: float = Field(
        default=0.75, gt=0, description="RMS log2 ratio of normalised zonal spectra"
    )
    min_diurnal_ratio: float = Field(default=0.5, ge=0, description="diurnal amplitude, low")
    max_diurnal_ratio: float = Field(default=1.6, gt=0, description="diurnal amplitude, high")
    max_diurnal_phase_hours: float = Field(
        default=3.0, gt=0, le=12, description="|diurnal phase error| in hours"
    )
    plots: bool = Field(default=True, description="write the PNG plots (and embed them)")
    plot_channels: int = Field(default=2, ge=1, description="channels in the plume plot")
    dpi: int = Field(default=150, ge=20, le=300, description="resolution of the PNGs")

    @field_validator("tolerance")
    @classmethod
    def _tolerance(cls, value: dict[str, float]) -> dict[str, float]:
        return _factors("tolerance", value, LEARNED_CRITERIA)

    @field_validator("composition_tolerance")
    @classmethod
    def _composition_tolerance(cls, value: dict[str, float]) -> dict[str, float]:
        return _factors("composition_tolerance", value, COMPOSITION_CRITERIA)

    @field_validator("blanket_sampler")
    @classmethod
    def _sampler(cls, value: str) -> str:
        if value != "run" and value not in SAMPLERS:
            raise ValueError(
                f"check.blanket_sampler: {value!r} — one of run, {', '.join(SAMPLERS)}"
            )
        return value

    def tolerance_of(self, criterion: str) -> float:
        """The factor on the |z| threshold of a learned criterion (1 unless configured)."""
        return self.tolerance.get(criterion, 1.0)

    def composition_tolerance_of(self, criterion: str) -> float:
        """The factor on the |z| threshold of a composition criterion (1 unless configured)."""
        return self.composition_tolerance.get(criterion, 1.0)

    @model_validator(mode="after")
    def _ranges(self) -> CheckConfig:
        for low, high in (
            ("min_std_ratio", "max_std_ratio"),
            ("min_ssr", "max_ssr"),
            ("min_diurnal_ratio", "max_diurnal_ratio"),
        ):
            if getattr(self, low) >= getattr(self, high):
                raise ValueError(
                    f"check.{low}: {getattr(self, low)} must be smaller than check.{high} "
                    f"({getattr(self, high)})"
                )
        return self

    @classmethod
    def parse(cls, data: dict[str, Any] | CheckConfig | None) -> CheckConfig:
        """Validate a ``check:`` mapping; :class:`ConfigError` (one line, ``check.<key>``)."""
        if isinstance(data, CheckConfig):
            return data
        if data is None:
            data = {}
        if isinstance(data, BaseModel):
            data = data.model_dump()
        if not isinstance(data, dict):
            raise ConfigError(f"check: {data!r} — a mapping of check settings (key: value)")
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise ConfigError(_one_line(error)) from None


def _factors(field: str, value: dict[str, float], criteria: tuple[str, ...]) -> dict[str, float]:
    """Factors on |z| thresholds by criterion: known criteria, each factor > 0."""
    for key, factor in value.items():
        if key not in criteria:
            raise ValueError(
                f"check.{field}.{key}: unknown criterion — one of {', '.join(criteria)}"
            )
        if not isinstance(factor, int | float) or not factor > 0:
            raise ValueError(
                f"check.{field}.{key}: {factor!r} — a factor > 0 on the |z| threshold"
            )
    return {key: float(factor) for key, factor in value.items()}


def _one_line(error: ValidationError) -> str:
    first = error.errors()[0]
    key = ".".join(str(p) for p in ("check", *first.get("loc", ())))
    kind = first.get("type", "")
    if kind == "extra_forbidden":
        return f"{key}: unknown key — check takes {', '.join(CheckConfig.model_fields)}"
    message = str(first.get("msg", "")).removeprefix("Value error, ")
    if message.startswith("check."):
        return message
    return f"{key}: {first.get('input')!r} — {message.lower()}"
