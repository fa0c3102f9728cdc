"""Options of the soak suite: how long, which seed, where the report goes.

Given on the command line when the suite is run on its own (``python -m pytest tests/soak
--soak-seconds 600``), or as environment variables anywhere (``ANNEXSYNC_SOAK_SECONDS=600``):
pytest only reads these options from a directory named on its command line.
"""

from __future__ import annotations

import os
import random

import pytest

# The CI-length run: about a minute in all, set-up and checks included.
DEFAULT_SECONDS = 40.0
DEFAULT_BOUND = 60.0

OPTIONS = {
    "seconds": ("ANNEXSYNC_SOAK_SECONDS", "seconds of edits and faults (default 40)"),
    "seed": ("ANNEXSYNC_SOAK_SEED", "seed of every random choice; a run prints its own"),
    "report": ("ANNEXSYNC_SOAK_REPORT", "write the run's report as JSON to this file"),
    "bound": ("ANNEXSYNC_SOAK_BOUND", "seconds to converge in after the faults heal (default 60)"),
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("soak", "annexsync soak suite")
    for name, (env, text) in OPTIONS.items():
        group.addoption(f"--soak-{name}", dest=f"soak_{name}", default=None, help=f"{text} [{env}]")


def soak_option(config: pytest.Config, name: str) -> str | None:
    value = config.getoption(f"soak_{name}", default=None)
    return value if value is not None else os.environ.get(OPTIONS[name][0])


@pytest.fixture
def soak_options(request: pytest.FixtureRequest) -> dict[str, object]:
    """seconds, seed, report path (or None) and convergence bound of this run."""
    config = request.config
    seed = soak_option(config, "seed")
    return {
        "seconds": float(soak_option(config, "seconds") or DEFAULT_SECONDS),
        "seed": int(seed) if seed is not None else random.randrange(1 << 31),
        "report": soak_option(config, "report"),
        "bound": float(soak_option(config, "bound") or DEFAULT_BOUND),
    }
