"""
Benchmark socksd against a direct connection and against peer proxies, in
the same run.

    python benchmarks/run.py [--quick] [--servers socksd,microsocks,...]
        [--scenarios throughput,tps,memory,latency,auth] [--socksd-args '...']

Prints a table (one row per server and figure, with ratios against direct
and against each other server) and writes benchmarks/results/STAMP.json,
latest.json, latest.md and latest.rst. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import select
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _procs  # noqa: E402
import _report  # noqa: E402
import _servers  # noqa: E402
from _load import HandshakeFailed  # noqa: E402
from _scenarios import (  # noqa: E402
    DIRECT,
    SCENARIO_NAMES,
    SCENARIOS,
    Context,
    LoadFailed,
    Medians,
    Scenario,
    Settings,
    fullSettings,
    quickSettings,
    scenarioNamed,
)

RESULTS = Path(__file__).resolve().parent / "results"


def _names(text: str, known: tuple[str, ...], what: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})"
        )
    return names


def parseArguments(argv: list[str]) -> argparse.Namespace:
    """
    The command line; see C{--help}.
    """
    parser = argparse.ArgumentParser(
        description="Measure socksd against a direct connection and peer proxies.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small volumes, short windows, one repetition",
    )
    parser.add_argument(
        "--servers",
        default=",".join(_servers.SERVER_NAMES),
        type=lambda text: _names(text, _servers.SERVER_NAMES, "server"),
        help="comma-separated, from: %(default)s (direct always runs)",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIO_NAMES),
        type=lambda text: _names(text, SCENARIO_NAMES, "scenario"),
        help="comma-separated, from: %(default)s",
    )
    parser.add_argument(
        "--socksd-args",
        default="",
        help="extra arguments for twistd socksd (shell syntax)",
    )
    parser.add_argument(
        "--twistd", default=None, help="the twistd to run socksd and twistd-socks with"
    )
    parser.add_argument(
        "--pypy",
        default=None,
        help="a PyPy 3.11 interpreter with socksd installed: adds the server socksd-pypy",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="repetitions per figure (median reported)",
    )
    parser.add_argument(
        "--idle-tunnels", type=int, default=None, help="tunnels for the memory scenario"
    )
    parser.add_argument(
        "--bulk-mib",
        type=int,
        default=None,
        help="MiB per direction through one tunnel; each of the 8 tunnels carries a quarter of it",
    )
    parser.add_argument(
        "--tps-seconds",
        type=float,
        default=None,
        help="measured seconds per tunnels/s figure",
    )
    parser.add_argument(
        "--tps-warmup",
        type=float,
        default=None,
        help="unmeasured seconds of load before each tunnels/s figure (PyPy's JIT wants ~10)",
    )
    parser.add_argument(
        "--load-processes",
        type=int,
        default=max(2, os.cpu_count() or 1),
        help="load generator processes for tunnels/s (default: %(default)s)",
    )
    parser.add_argument(
        "--pin-proxy",
        action="store_true",
        help=(
            "run each proxy (all its processes) on the last CPU, and the "
            "targets and load generators on the others"
        ),
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=RESULTS,
        help="where to write results (default: %(default)s)",
    )
    parser.add_argument(
        "--no-save", action="store_true", help="print only; write no files"
    )
    return parser.parse_args(_procs.glueOption(argv, "--socksd-args"))


def settingsFrom(options: argparse.Namespace) -> Settings:
    """
    The L{Settings} for the options: quick or full defaults, then overrides.
    """
    base = (quickSettings if options.quick else fullSettings)(options.load_processes)
    changes: dict[str, Any] = {}
    if options.repeat is not None:
        changes["repeats"] = options.repeat
    if options.idle_tunnels is not None:
        changes["idleTunnels"] = options.idle_tunnels
    if options.bulk_mib is not None:
        changes["bulkBytes"] = options.bulk_mib << 20
        changes["bulkBytesEach"] = max(1, (options.bulk_mib << 20) // 4)
    if options.tps_seconds is not None:
        changes["tpsSeconds"] = options.tps_seconds
    if options.tps_warmup is not None:
        changes["tpsWarmup"] = options.tps_warmup
    values = asdict(base)
    values.update(changes)
    return Settings(**values)


def startTargets(
    directory: Path, echoProcesses: int, onceSize: int
) -> tuple[subprocess.Popen, dict[str, tuple[str, int]]]:
    """
    Start the sink/source and echo servers (see C{_targets.py}).

    @return: the process, and the address of each server by name (C{bulk},
        C{echo}, C{once}).
    """
    process = _procs.spawn(
        [
            sys.executable,
            str(Path(__file__).resolve().parent / "_targets.py"),
            "--echo-processes",
            str(echoProcesses),
            "--once-size",
            str(onceSize),
            "--lifetime",
            str(6 * 3600),
        ],
        cwd=directory,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    ready, _, _ = select.select([process.stdout], [], [], 30)
    line = process.stdout.readline() if ready else ""
    if not line:
        raise RuntimeError("the target servers did not start")
    ports = json.loads(line)
    return process, {name: ("127.0.0.1", port) for name, port in ports.items()}


def _failure(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return " ".join(text.split())


def medianOf(samples: list[dict[str, Any]]) -> dict[str, float]:
    """
    The median of each numeric figure over the repetitions.
    """
    keys = {
        key
        for sample in samples
        for key, value in sample.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }
    return {
        key: statistics.median(s[key] for s in samples if key in s)
        for key in sorted(keys)
    }


def runScenario(
    scenario: Scenario,
    specs: list[_servers.ServerSpec],
    available: dict[str, str | None],
    context: Context,
    workDirectory: Path,
    socksdArgs: tuple[str, ...],
    log: Any,
) -> dict[str, Any]:
    """
    Measure one scenario: direct (if it has a baseline; before and after
    the servers) and every server, interleaved, C{repeats} times; return
    its record for the run.
    """
    rows: dict[str, dict[str, Any]] = {}
    samples: dict[str, list[dict[str, Any]]] = {}
    running: dict[str, _servers.RunningServer] = {}
    if scenario.direct:
        rows[DIRECT] = {"status": "ok"}
        samples[DIRECT] = []
    for spec in specs:
        reason = available[spec.name]
        if reason is not None:
            rows[spec.name] = {"status": "skipped", "reason": reason}
            continue
        missing = scenario.needs - spec.features
        if missing:
            rows[spec.name] = {
                "status": "skipped",
                "reason": f"not supported here ({', '.join(sorted(missing))})",
            }
            continue
        rows[spec.name] = {"status": "ok"}
        if spec.protocol != "socks5":
            rows[spec.name][
                "note"
            ] = f"{spec.protocol.upper()} handshake (speaks no SOCKS5)"
        samples[spec.name] = []
    repeats = context.settings.repeats if scenario.repeatable else 1
    try:
        for spec in specs:
            if rows[spec.name]["status"] != "ok":
                continue
            try:
                running[spec.name] = _servers.start(
                    spec,
                    workDirectory / f"{scenario.name}-{spec.name}",
                    context.echo,
                    auth=scenario.auth,
                    extraArgs=socksdArgs if spec.name.startswith("socksd") else (),
                )
                rows[spec.name]["command"] = running[spec.name].command
            except _servers.ServerFailed as error:
                rows[spec.name] = {
                    "status": "error",
                    "reason": f"did not start: {_failure(error)}",
                }
        # Direct runs first and last in each repetition, so that a burst of
        # load from elsewhere on the machine shows in the baseline too.
        order = list(samples) + ([DIRECT] if DIRECT in samples else [])
        for repetition in range(repeats):
            for name in order:
                if rows[name]["status"] != "ok":
                    continue
                server = running.get(name)
                if name != DIRECT and server is None:
                    continue
                if server is not None and not server.alive():
                    rows[name] = {
                        "status": "error",
                        "reason": f"exited: {server.logTail(2)}",
                    }
                    continue
                began = time.monotonic()
                try:
                    sample = scenario.measure(context, server)
                except (
                    LoadFailed,
                    HandshakeFailed,
                    OSError,
                    ValueError,
                    subprocess.SubprocessError,
                ) as error:
                    reason = _failure(error)
                    if server is not None and not server.alive():
                        reason += f"; the server exited: {server.logTail(2)}"
                    rows[name] = {"status": "error", "reason": reason[:300]}
                    print(
                        f"  {scenario.name:<10} {name:<13} error: {reason[:200]}",
                        file=log,
                        flush=True,
                    )
                    continue
                samples[name].append(sample)
                if sample.get("errors"):
                    note = (
                        f"{sample['errors']} failed tunnels in repetition "
                        f"{repetition + 1} ({sample.get('errorKinds', {})})"
                    )
                    rows[name]["note"] = "; ".join(
                        filter(None, (rows[name].get("note"), note))
                    )
                shown = ", ".join(
                    f"{m.key}={sample[m.key]:.4g}"
                    for m in scenario.metrics
                    if m.key in sample
                )
                print(
                    f"  {scenario.name:<10} {name:<13} #{repetition + 1}: {shown} "
                    f"({time.monotonic() - began:.1f} s)",
                    file=log,
                    flush=True,
                )
    finally:
        for server in running.values():
            server.stop()
    for name, row in rows.items():
        if row["status"] == "ok" and samples.get(name):
            row["median"] = medianOf(samples[name])
            row["samples"] = samples[name]
        elif row["status"] == "ok":
            row["status"] = "error"
            row["reason"] = "no measurement"
    return {
        "title": scenario.title,
        "baseline": scenario.baseline,
        "metrics": [asdict(metric) for metric in scenario.metrics],
        "rows": rows,
    }


def applyDerived(run: dict[str, Any]) -> None:
    """
    Add the figures scenarios derive from the run's medians (added latency,
    auth over no auth).
    """
    medians: Medians = {
        name: {
            server: row["median"]
            for server, row in record["rows"].items()
            if "median" in row
        }
        for name, record in run["scenarios"].items()
    }
    for name in run["scenarios"]:
        scenario = scenarioNamed(name)
        if scenario.derive is None:
            continue
        for server, values in scenario.derive(medians).items():
            run["scenarios"][name]["rows"][server]["median"].update(values)


def main(argv: list[str]) -> int:
    """
    Run the benchmarks; print the table; save the results.
    """
    options = parseArguments(argv)
    settings = settingsFrom(options)
    scenarioNames = list(options.scenarios)
    for name in list(scenarioNames):
        for required in scenarioNamed(name).requires:
            if required not in scenarioNames:
                print(
                    f"note: adding scenario {required!r}, which {name!r} compares against"
                )
                scenarioNames.insert(scenarioNames.index(name), required)
    scenarios = [s for s in SCENARIOS if s.name in scenarioNames]
    specs = [spec for spec in _servers.SERVERS if spec.name in options.servers]
    if options.twistd:
        _servers.setTwistd(options.twistd)
    if options.pypy:
        _servers.setPypy(options.pypy)

    pinned = None
    if options.pin_proxy:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            print("--pin-proxy needs at least 2 CPUs", file=sys.stderr)
            return 2
        pinned = cpus[-1]
        _servers.proxyCpus = {pinned}
        # The harness, the targets and the load generators inherit this.
        os.sched_setaffinity(0, set(cpus[:-1]))

    fileLimit = _procs.raiseFileLimit()
    # Turn SIGTERM and SIGHUP into SystemExit so that finally blocks and
    # atexit stop every process this harness started.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda number, frame: sys.exit(128 + number))

    run = _report.emptyRun()
    began = time.time()
    run["started"] = datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"
    )
    run["command"] = ["benchmarks/run.py", *argv]
    run["quick"] = options.quick
    run["settings"] = asdict(settings)
    run["proxyCpu"] = pinned
    run["machine"] = _report.machine(_servers._findTwistd(), fileLimit)

    available: dict[str, str | None] = {}
    for spec in specs:
        program = spec.find()
        available[spec.name] = (
            None if program is not None else f"not installed ({spec.install})"
        )
        run["servers"][spec.name] = {
            "summary": spec.summary,
            "protocol": spec.protocol,
            "features": sorted(spec.features),
            "available": program is not None,
            "program": program,
            "version": spec.version(program) if program else "",
            "reason": available[spec.name],
        }
    for name, info in run["servers"].items():
        if options.socksd_args and name.startswith("socksd"):
            info["extraArgs"] = shlex.split(options.socksd_args)

    log = sys.stderr
    for name, info in run["servers"].items():
        state = (
            (info["version"] or "installed") if info["available"] else info["reason"]
        )
        print(f"{name:<13} {state}", file=log)

    with tempfile.TemporaryDirectory(prefix="socksd-bench-") as temporary:
        work = Path(temporary)
        targets = None
        try:
            targets, addresses = startTargets(
                work, max(2, os.cpu_count() or 1), settings.payloadSize
            )
            context = Context(
                settings,
                addresses["bulk"],
                addresses["echo"],
                addresses["once"],
                fileLimit,
            )
            for scenario in scenarios:
                print(f"== {scenario.name}", file=log, flush=True)
                try:
                    run["scenarios"][scenario.name] = runScenario(
                        scenario,
                        specs,
                        available,
                        context,
                        work,
                        tuple(shlex.split(options.socksd_args)),
                        log,
                    )
                except Exception as error:  # a harness bug: keep the other scenarios
                    print(f"  {scenario.name} failed: {error!r}", file=log, flush=True)
                    run["scenarios"][scenario.name] = {
                        "title": scenario.title,
                        "baseline": scenario.baseline,
                        "metrics": [asdict(metric) for metric in scenario.metrics],
                        "rows": {DIRECT: {"status": "error", "reason": repr(error)}},
                    }
        finally:
            if targets is not None:
                _procs.stop(targets)
            _procs.stopAll()

    applyDerived(run)
    run["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"
    )
    run["seconds"] = round(time.time() - began, 1)
    print()
    sys.stdout.write(_report.textTable(run))
    if not options.no_save:
        stamp = run["started"].replace(":", "").replace("-", "").replace("+0000", "Z")
        for path in _report.save(run, options.output_dir, stamp):
            print(f"wrote {path}", file=log)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        _procs.stopAll()
        print(
            "interrupted; every process the harness started is stopped", file=sys.stderr
        )
        sys.exit(130)
