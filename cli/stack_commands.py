"""``headwater up | down | status | serve``: the embedded local stack."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import runpy
import signal
import subprocess
import sys
import time
from enum import StrEnum
from pathlib import Path

import typer

from headwater.cli.demo import Demo, DemoPlan, print_summary
from headwater.cli.localstack import health
from headwater.cli.localstack.ports import pid_alive, signal_pid
from headwater.cli.localstack.stack import (
    SERVICES,
    LocalStack,
    StackSettings,
    StackState,
)
from headwater.cli.output import Output, OutputOption, console, errors, print_json, print_table
from headwater.shared.lifecycle import unless_stopped

PARTS = ("broker", "postgres", *SERVICES)
StateDirOption = typer.Option(
    None, "--state-dir", envvar="HEADWATER_STACK_STATE_DIR",
    help="Where the stack keeps data and logs [env HEADWATER_STACK_STATE_DIR; default .headwater].",
)


class ServiceName(StrEnum):
    """The services ``headwater serve`` can run."""

    registry = "registry"
    gateway = "gateway"
    trainer = "trainer"
    monitor = "monitor"


def _settings(state_dir: Path | None) -> StackSettings:
    return StackSettings(state_dir=state_dir) if state_dir else StackSettings()


def up(
    detach: bool = typer.Option(False, "--detach", "-d", help="Start in the background."),
    state_dir: Path | None = StateDirOption,
) -> None:
    """Start the broker, PostgreSQL and the four services; Ctrl-C stops everything."""
    settings = _settings(state_dir)
    existing = StackState.load(settings.state_dir)
    if existing and pid_alive(existing.supervisor_pid):
        errors.print(f"a stack is already running here (pid {existing.supervisor_pid})")
        raise typer.Exit(1)
    if detach:
        _start_detached(settings)
        return
    asyncio.run(_run_foreground(settings))


async def _run_foreground(settings: StackSettings) -> None:
    stack = LocalStack(settings)
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_requested.set)
    try:
        with console.status("starting the local stack…"):
            started, state = await unless_stopped(stack.start(), stop_requested)
        if not started or state is None:
            return
        _print_endpoints(state)
        console.print("[green]stack is up[/] — Ctrl-C to stop")
        while not stop_requested.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop_requested.wait(), timeout=1.0)
            for name in stack.restart_crashed():
                errors.print(f"[yellow]{name} crashed; restarted[/] (see its log)")
                state.pids = stack.pids()
                state.save(stack.state_dir)
    finally:
        console.print("stopping…")
        stack.stop()


def _start_detached(settings: StackSettings) -> None:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.state_dir / "up.log"
    env = {**os.environ, "HEADWATER_STACK_STATE_DIR": str(settings.state_dir.resolve())}
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "headwater.cli", "up"], env=env, stdin=subprocess.DEVNULL,
            stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )
    deadline = time.monotonic() + settings.start_timeout_s + 30
    while time.monotonic() < deadline:
        state = StackState.load(settings.state_dir)
        if state and state.supervisor_pid == process.pid:
            _print_endpoints(state)
            return
        if process.poll() is not None:
            errors.print(f"the stack failed to start; see {log_path}")
            raise typer.Exit(1)
        time.sleep(0.3)
    errors.print(f"the stack did not come up in time; see {log_path}")
    raise typer.Exit(1)


def demo(
    examples: int = typer.Option(4000, help="Rows streamed through the gateway."),
    checkpoint_every: int = typer.Option(
        1000, help="Examples between checkpoint versions (when the demo starts the stack)."),
    canaries: bool = typer.Option(
        True, help="Canaries the monitor judges from the labels: of a version that never "
        "learns, then of each new checkpoint."),
    state_dir: Path | None = StateDirOption,
) -> None:
    """Run the learning loop end to end on the embedded stack, then print a summary."""
    settings = _settings(state_dir)
    plan = DemoPlan(examples=examples, canaries=canaries)
    asyncio.run(_run_demo(settings, plan, {
        "HEADWATER_TRAINER_CHECKPOINT_EVERY_EXAMPLES": str(checkpoint_every)}))


async def _run_demo(settings: StackSettings, plan: DemoPlan, env: dict[str, str]) -> None:
    state = StackState.load(settings.state_dir)
    stack = None
    try:
        if state is None or not all((await _check_all(state)).values()):
            stack = LocalStack(settings, extra_env=env)
            with console.status("starting the local stack…"):
                state = await stack.start()
        name = f"sea-{time.strftime('%Y%m%d-%H%M%S')}"
        seen = await Demo(state.endpoints, plan, name).run()
        await print_summary(state.endpoints, name, seen)
    finally:
        if stack is not None:
            with console.status("stopping the local stack…"):
                stack.stop()


def down(state_dir: Path | None = StateDirOption) -> None:
    """Stop a stack started with ``headwater up --detach``."""
    settings = _settings(state_dir)
    state = StackState.load(settings.state_dir)
    if state is None:
        console.print("no stack is running here")
        return
    signal_pid(state.supervisor_pid, signal.SIGTERM)
    deadline = time.monotonic() + settings.stop_timeout_s + 5
    while pid_alive(state.supervisor_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    leftovers = [pid for pid in state.pids.values() if pid and pid_alive(pid)]
    for pid in leftovers:  # the supervisor died without cleaning up
        signal_pid(pid, signal.SIGKILL)
    (settings.state_dir / "stack.json").unlink(missing_ok=True)
    console.print("stack stopped")


def status(state_dir: Path | None = StateDirOption, output: Output = OutputOption) -> None:
    """Endpoints and health of each part of the local stack."""
    settings = _settings(state_dir)
    state = StackState.load(settings.state_dir)
    if state is None:
        if output is Output.json:
            print_json({"running": False, "parts": {}})
        else:
            console.print("no stack is running here")
        raise typer.Exit(1)
    healthy = asyncio.run(_check_all(state))
    if output is Output.json:
        print_json({
            "running": all(healthy.values()),
            "supervisor_pid": state.supervisor_pid,
            "endpoints": dataclasses.asdict(state.endpoints),
            "parts": {part: {"healthy": ok, "pid": state.pids.get(part)}
                      for part, ok in healthy.items()},
        })
    else:
        rows = [(part, "[green]healthy[/]" if ok else "[red]down[/]", state.pids.get(part, ""))
                for part, ok in healthy.items()]
        print_table("headwater stack", ("part", "health", "pid"), rows)
        _print_endpoints(state)
    if not all(healthy.values()):
        raise typer.Exit(1)


async def _check_all(state: StackState) -> dict[str, bool]:
    results = await asyncio.gather(*(health.check(part, state.endpoints) for part in PARTS))
    return dict(zip(PARTS, results, strict=True))


def _print_endpoints(state: StackState) -> None:
    rows = list(dataclasses.asdict(state.endpoints).items())
    print_table("endpoints", ("endpoint", "address"), rows)


def serve(name: ServiceName = typer.Argument(..., help="The service to run.")) -> None:
    """Run one service in the foreground, configured by HEADWATER_* variables."""
    sys.argv = [f"headwater-{name.value}"]
    runpy.run_module(f"headwater.services.{name.value}", run_name="__main__")
