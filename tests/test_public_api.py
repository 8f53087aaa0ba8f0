"""The public names at the top of the package: what notebooks import, whatever the modules."""

from __future__ import annotations

import subprocess
import sys

import priorflow


def test_the_names_notebooks_need_import_from_the_top():
    from priorflow import (  # noqa: F401
        BlanketDenoiser,
        BlanketPlan,
        SyntheticWorld,
        generate_trajectory,
        load_model,
        make_sampler,
        make_schedule,
        write_exact_model,
    )
    from priorflow.core.blanket import BlanketPlan as defined

    assert BlanketPlan is defined
    for name in priorflow.__all__:
        assert getattr(priorflow, name) is not None, name


def test_importing_the_package_imports_no_torch_and_no_prefect():
    """The names are imported on first use: ``import priorflow`` (as the CLI's errors module
    does) stays light."""
    code = (
        "import sys, priorflow, priorflow.errors;"
        "print(sorted(m for m in ('torch', 'prefect', 'distributed') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
