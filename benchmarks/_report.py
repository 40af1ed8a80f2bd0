"""
What the benchmark harness writes: the machine record, the human table on
stdout, the JSON record, and the Markdown and reStructuredText summaries.

A run is one JSON-able dictionary (see L{emptyRun}); every writer reads it.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from _scenarios import DIRECT, Scenario, scenarioNamed

SCHEMA = 1


def machine(twistd: str | None, fileLimit: int) -> dict[str, Any]:
    """
    Describe this machine and the software the run used.

    @param twistd: a C{twistd} to ask for Twisted's version when this
        Python cannot import Twisted.
    """
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    memory = int(line.split()[1])
    except OSError:
        pass
    try:
        import twisted

        twistedVersion = twisted.__version__
    except ImportError:
        twistedVersion = ""
        if twistd is not None:
            try:
                twistedVersion = subprocess.run(
                    [twistd, "--version"], capture_output=True, text=True, timeout=30
                ).stdout.splitlines()[0]
            except (OSError, subprocess.TimeoutExpired, IndexError):
                pass
    return {
        "nproc": os.cpu_count(),
        "cpusUsable": len(os.sched_getaffinity(0)),
        "cpuModel": model,
        "memoryKiB": memory,
        "kernel": platform.release(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "pythonImplementation": platform.python_implementation(),
        "twisted": twistedVersion,
        "fileLimit": fileLimit,
        "loadAverageAtStart": list(os.getloadavg()),
    }


def _pinning(run: dict[str, Any]) -> str:
    """How the run placed the proxies (C{--pin-proxy}), as a clause."""
    cpu = run.get("proxyCpu")
    if cpu is None:
        return ""
    return f"; each proxy pinned to CPU {cpu}, targets and load on the others"


def emptyRun() -> dict[str, Any]:
    """
    The skeleton of a run record; the harness fills it in.
    """
    return {
        "schema": SCHEMA,
        "started": "",
        "finished": "",
        "seconds": 0.0,
        "command": [],
        "quick": False,
        "settings": {},
        "machine": {},
        "servers": {},
        "scenarios": {},
    }


def _number(value: float) -> str:
    if value != value:  # NaN
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _ratio(this: float | None, that: float | None) -> str:
    # A ratio of differences that can be negative (added latency within
    # the noise) means nothing.
    if this is None or that is None or this <= 0 or that <= 0:
        return "-"
    return f"{this / that:.2f}"


def _columns(run: dict, scenarioName: str) -> list[str]:
    """
    The servers of a scenario that have figures, direct excluded.
    """
    rows = run["scenarios"][scenarioName]["rows"]
    return [name for name, row in rows.items() if name != DIRECT and row.get("median")]


def _tableRows(
    run: dict, scenario: Scenario
) -> tuple[list[str], list[list[str]], list[tuple[str, str]], list[str]]:
    """
    The header, the rows, the servers without figures (name, reason) and
    the footnotes of one scenario's table.
    """
    record = run["scenarios"][scenario.name]
    rows = record["rows"]
    peers = _columns(run, scenario.name)
    header = ["metric", "server", "value", "unit"]
    if scenario.direct:
        header.append("vs direct")
    header += [f"vs {peer}" for peer in peers]
    body: list[list[str]] = []
    notes: list[str] = [
        f"* {name}: {row['note']}" for name, row in rows.items() if row.get("note")
    ]
    for metric in scenario.metrics:
        values = {
            name: row.get("median", {}).get(metric.key) for name, row in rows.items()
        }
        if not metric.compare:
            shown = [
                f"{name} {_number(value)}"
                for name, value in values.items()
                if value is not None
            ]
            if shown:
                notes.append(f"{metric.label}: " + ", ".join(shown))
            continue
        for name, row in rows.items():
            value = values[name]
            if value is None:
                continue  # a failed server (below), or "added" on the direct row
            line = [
                metric.label,
                name + ("*" if row.get("note") else ""),
                _number(value),
                metric.unit,
            ]
            if scenario.direct:
                line.append(
                    _ratio(value, values.get(DIRECT)) if metric.againstDirect else "-"
                )
            line += [
                "" if peer == name else _ratio(value, values.get(peer))
                for peer in peers
            ]
            body.append(line)
    failures = [
        (name, row.get("reason", "no figures"))
        for name, row in rows.items()
        if not row.get("median")
    ]
    return header, body, failures, notes


def _directionNote(scenario: Scenario) -> str:
    higher = [m.label for m in scenario.metrics if m.compare and m.higherIsBetter]
    lower = [m.label for m in scenario.metrics if m.compare and not m.higherIsBetter]
    parts = [
        f"{word} is better: {', '.join(labels)}"
        for word, labels in (("higher", higher), ("lower", lower))
        if labels
    ]
    return "ratio = this row's value / the column's value; " + "; ".join(parts)


def textTable(run: dict) -> str:
    """
    The human table: one block per scenario, one row per server and metric.
    """
    out: list[str] = []
    info = run["machine"]
    out.append(
        f"machine: {info.get('nproc')} CPUs ({info.get('cpuModel')}), kernel "
        f"{info.get('kernel')}, Python {info.get('python')}, Twisted {info.get('twisted')}"
    )
    out.append(
        f"{'quick run' if run.get('quick') else 'full run'}: medians of "
        f"{run['settings'].get('repeats')} repetition(s){_pinning(run)}"
    )
    for name in run["scenarios"]:
        scenario = scenarioNamed(name)
        header, body, failures, notes = _tableRows(run, scenario)
        out.append("")
        out.append(f"== {scenario.title} ==")
        if scenario.baseline:
            out.append(f"   {scenario.baseline}")
        out.append(f"   {_directionNote(scenario)}")
        widths = [
            max(len(row[i]) for row in [header] + body) for i in range(len(header))
        ]
        for row in [header] + body:
            cells = [
                cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i])
                for i, cell in enumerate(row)
            ]
            out.append("  ".join(cells).rstrip())
        out.extend(f"   no figures from {name}: {reason}" for name, reason in failures)
        out.extend(f"   {note}" for note in notes)
    return "\n".join(out) + "\n"


def markdown(run: dict) -> str:
    """
    The summary as GitHub-flavoured Markdown.
    """
    info = run["machine"]
    out = [
        "# socksd benchmark summary",
        "",
        f"Generated by `python benchmarks/run.py` on {run['finished']}: "
        f"{info.get('nproc')} CPUs ({info.get('cpuModel')}), kernel {info.get('kernel')}, "
        f"Python {info.get('python')}, Twisted {info.get('twisted')}; "
        f"{'quick run, ' if run.get('quick') else ''}medians of "
        f"{run['settings'].get('repeats')} repetition(s){_pinning(run)}. "
        "Ratios are this row's value divided by the column's.",
    ]
    for name in run["scenarios"]:
        scenario = scenarioNamed(name)
        header, body, failures, notes = _tableRows(run, scenario)
        body = body + [
            ["-", name, reason] + [""] * (len(header) - 3) for name, reason in failures
        ]
        out += ["", f"## {scenario.title}", ""]
        if scenario.baseline:
            out += [scenario.baseline[0].upper() + scenario.baseline[1:] + ".", ""]
        out.append("| " + " | ".join(header) + " |")
        out.append(
            "|" + "|".join("---" if i < 2 else "--:" for i in range(len(header))) + "|"
        )
        for row in body:
            out.append(
                "| "
                + " | ".join(cell.replace("|", "/").replace("*", "\\*") for cell in row)
                + " |"
            )
        for note in notes:
            out += ["", note.replace("*", "\\*", 1)]
    return "\n".join(out) + "\n"


def restructuredText(run: dict) -> str:
    """
    The summary as reStructuredText, for C{.. include::} from docs/.
    """
    info = run["machine"]
    out = [
        f"Generated by ``python benchmarks/run.py`` on {run['finished']}: "
        f"{info.get('nproc')} CPUs ({info.get('cpuModel')}), kernel {info.get('kernel')}, "
        f"Python {info.get('python')}, Twisted {info.get('twisted')}; "
        f"{'quick run, ' if run.get('quick') else ''}medians of "
        f"{run['settings'].get('repeats')} repetition(s){_pinning(run)}. "
        "Ratios are this row's value divided by the column's.",
    ]
    for name in run["scenarios"]:
        scenario = scenarioNamed(name)
        header, body, failures, notes = _tableRows(run, scenario)
        body = body + [
            ["-", name, reason] + [""] * (len(header) - 3) for name, reason in failures
        ]
        out += ["", f".. list-table:: {scenario.title}", "   :header-rows: 1", ""]
        for row in [header] + body:
            out.append("   * - " + _rstCell(row[0]))
            out.extend("     - " + _rstCell(cell) for cell in row[1:])
        extra = (
            [scenario.baseline[0].upper() + scenario.baseline[1:] + "."]
            if scenario.baseline
            else []
        )
        extra += [note.replace("*", "\\*", 1) for note in notes]
        if extra:
            out += [""] + [line for text in extra for line in (text, "")][:-1]
    return "\n".join(out) + "\n"


def _rstCell(cell: str) -> str:
    return cell.replace("*", "\\*").replace("`", "'") if cell else ".."


def save(run: dict, directory: Path, stamp: str) -> list[Path]:
    """
    Write C{STAMP.json}, C{latest.json}, C{latest.md} and C{latest.rst}
    into C{directory}.

    @return: the paths written.
    """
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(run, indent=1, sort_keys=False, default=str) + "\n"
    written = []
    for name, content in (
        (f"{stamp}.json", text),
        ("latest.json", text),
        ("latest.md", markdown(run)),
        ("latest.rst", restructuredText(run)),
    ):
        path = directory / name
        path.write_text(content)
        written.append(path)
    return written
