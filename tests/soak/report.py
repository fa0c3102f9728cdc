"""The run's report, for a person: a few lines from the JSON report."""

from __future__ import annotations

from typing import Any


def summary(report: dict[str, Any]) -> str:
    """Edits, faults, convergence, losses and problems, one fact per line."""

    def kinds(counts: dict[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"

    lines = [
        f"soak report (seed {report['seed']}: rerun with --soak-seed {report['seed']})",
        f"  activity:     {report['seconds']:g}s on 3 nodes ({report['topology']})",
        f"  edits:        {report['edits']} ({kinds(report['edits_by_kind'])}); "
        f"{report['collisions']} same-file collisions",
        f"  failed edits: {kinds(report['edits_failed_by_kind'])} (a full disk refuses them)",
        f"  faults:       {report['faults']} ({kinds(report['faults_by_kind'])})"
        + (
            f"; unavailable here: {', '.join(report['fault_kinds_unavailable'])}"
            if report.get("fault_kinds_unavailable")
            else ""
        ),
        f"  converged:    {report['convergence_seconds']}s after the faults healed "
        f"({report['convergence_seconds_after_stop']}s after activity stopped; bound "
        f"{report['convergence_bound']:g}s)",
        f"  history:      {report['commits']} commits ({report['merges']} merges), "
        f"{report['commits_per_edit']} commits per edit",
        f"  final tree:   {report['final_files']} files, {report['final_variants']} variants; "
        f"{report['concurrent_pairs_checked']} pairs of concurrent versions checked",
        f"  versions lost: {report['versions_lost']}",
    ]
    problems = report["problems"]
    if problems:
        lines.append("  PROBLEMS:")
        for check, found in problems.items():
            for problem in found[:10]:
                lines.append(f"    {check}: {problem}")
            if len(found) > 10:
                lines.append(f"    {check}: ... {len(found) - 10} more")
    else:
        lines.append("  every invariant held")
    if report.get("tracebacks"):
        lines.append(f"  tracebacks in assistant logs: {len(report['tracebacks'])}")
    return "\n".join(lines)
