"""The soak: three nodes, random concurrent edits, faults at random moments; afterwards no
version may be lost and the nodes must agree (see README.md for what is checked)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from sshd_tools import sshd_unavailable

from soak.namespaces import namespaces_problem
from soak.report import summary
from soak.run import SoakSettings, run


def test_three_nodes_under_edits_and_faults_lose_nothing_and_converge(
    soak_options: dict[str, object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    problem = sshd_unavailable() or namespaces_problem()
    if problem:
        pytest.skip(f"soak needs network namespaces, mounts and a real sshd: {problem}")
    settings = SoakSettings(
        seconds=float(soak_options["seconds"]),  # type: ignore[arg-type]
        seed=int(soak_options["seed"]),  # type: ignore[call-overload]
        bound=float(soak_options["bound"]),  # type: ignore[arg-type]
    )
    # Short: unix socket paths under it must stay within 108 bytes.
    base = Path(tempfile.mkdtemp(prefix="annexsync-soak-"))
    with capsys.disabled():
        print(f"\nsoak: seed {settings.seed}, {settings.seconds:g}s; files under {base}")
    outcome = run(settings, base, log=lambda line: None)
    report = outcome.report()
    path = Path(str(soak_options["report"] or tmp_path / "soak-report.json"))
    path.write_text(json.dumps(report, indent=2) + "\n")
    with capsys.disabled():
        print(summary(report))
        print(f"  report: {path}")
    failures = outcome.failures()
    assert not failures, f"seed {settings.seed}; logs kept under {base}:\n" + "\n".join(
        failures[:40]
    )
    shutil.rmtree(base, ignore_errors=True)
