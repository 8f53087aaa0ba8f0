"""Print the power table of the learned verdict (docs/check.md) as markdown.

Each row: a model, a criterion, the criterion's worst test (statistic, archive value, standard
error, z, allowed |z|) and the verdict. The models: exact denoisers of the archive's own world
(seeds 0-2) and of subtly wrong worlds, the shipped reference model and two broken copies of it.
The same verdicts are asserted by tests/evaluation/test_learned.py (slow tests, run in CI).

Usage (from the repository root; about 10 min on 2 cores)::

    .venv/bin/python scripts/power_table.py [--only reference] > /tmp/power.md
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from priorflow.evaluation.learned import LearnedResult, criterion_tests  # noqa: E402
from priorflow.models.exact import write_exact_model  # noqa: E402
from priorflow.models.loading import Model, load_model  # noqa: E402
from tests._check_runs import (  # noqa: E402
    REFERENCE,
    corrupt_model,
    learned_verdict,
    write_archive,
)

DEMO_DATES = ("2000-04-03 0h", "2000-10-15 12h", "2001-06-20 6h")
WRONG_WORLDS = {
    "rho 0.85 (world 0.9)": {"rho": 0.85},
    "length scale 2.0 (1.5)": {"length_scale": 2.0},
    "variance 1.1 (1.0)": {"variance": 1.1},
    "season amplitude 0.8-1.3 (0.6-1.0)": {"season_amplitude": (0.8, 1.3)},
}


def _rows(name: str, result: LearnedResult) -> list[str]:
    rows = []
    for finding in result.findings:
        _, worst = criterion_tests(result.judged, finding.criterion)
        t = worst.test
        rows.append(
            f"| {name} | {finding.criterion} | {t.label} | {t.model:.4g} | {t.archive:.4g} | "
            f"{t.se:.2g} | {t.z:+.1f} | {worst.threshold:.2f} | "
            f"{'pass' if finding.ok else 'FAIL'} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["exact", "wrong", "reference"], default=None)
    args = parser.parse_args()
    print(
        "| model | criterion | worst test | statistic | archive | SE | z | allowed abs(z) | verdict |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        archive = write_archive(Path(tmp) / "archive.zarr")

        def exact(**world: object) -> Model:
            name = "-".join(f"{k}{v}" for k, v in world.items()) or "right"
            if not (Path(tmp) / name).exists():
                write_exact_model(Path(tmp) / name, **world)
            return load_model(Path(tmp) / name)

        def emit(name: str, result: LearnedResult) -> None:
            print("\n".join(_rows(name, result)), flush=True)

        if args.only in (None, "exact"):
            for seed in (0, 1, 2):
                emit(f"right world, seed {seed}", learned_verdict(exact(), archive, seed=seed))
        if args.only in (None, "wrong"):
            for name, world in WRONG_WORLDS.items():
                emit(name, learned_verdict(exact(**world), archive))
        if args.only in (None, "reference"):
            reference = load_model(REFERENCE)
            emit(
                "shipped reference, demo dates",
                learned_verdict(reference, archive, dates=DEMO_DATES),
            )
            emit("exact model, demo dates", learned_verdict(exact(), archive, dates=DEMO_DATES))
            for how, label in (("scaled", "x1.5 weights"), ("shuffled", "shuffled weights")):
                emit(
                    f"reference {label}",
                    learned_verdict(corrupt_model(reference, how), archive, dates=DEMO_DATES),
                )


if __name__ == "__main__":
    main()
