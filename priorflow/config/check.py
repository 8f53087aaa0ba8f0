"""``check:``: what the prior check measures and the thresholds of its verdict."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from priorflow.errors import ConfigError


class CheckConfig(BaseModel):
    """The ``check:`` section of a run config: what the prior check measures and its thresholds
    (:mod:`priorflow.evaluation.check`).

    The defaults pass the shipped reference model and the exact synthetic-world denoiser and
    fail a broken model (scaled or shuffled weights); see the module docstring.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=True, description="run the check after generation (flows)")
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
    dpi: int = Field(default=80, ge=20, le=300, description="resolution of the PNGs")

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
