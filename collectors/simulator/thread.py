"""Run a simulator on its own event loop in a background thread, for synchronous tests and tools."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .config import SimulatorConfig
from .server import ServerInfo, Simulator

START_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ThreadedSimulator:
    simulator: Simulator
    info: ServerInfo

    @property
    def host(self) -> str:
        return self.info.host

    @property
    def port(self) -> int:
        return self.info.port

    @property
    def ws_url(self) -> str:
        return self.info.ws_url

    @property
    def public_ws_url(self) -> str:
        return self.info.public_ws_url

    @property
    def rest_url(self) -> str:
        return self.info.rest_url


@contextmanager
def run_in_thread(
    config: SimulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0
) -> Iterator[ThreadedSimulator]:
    """Serve until the block ends; the simulator's control methods may be called from the caller's thread."""
    simulator = Simulator(config or SimulatorConfig())
    ready = threading.Event()
    state: dict[str, object] = {}

    async def main() -> None:
        stop = asyncio.Event()
        state["loop"], state["stop"] = asyncio.get_running_loop(), stop
        async with simulator.serve(host, port) as info:
            state["info"] = info
            ready.set()
            await stop.wait()

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:
            state["error"] = exc
        finally:
            ready.set()

    thread = threading.Thread(target=run, name="okx-simulator", daemon=True)
    thread.start()
    if not ready.wait(START_TIMEOUT_S) or "info" not in state:
        raise RuntimeError(f"simulator did not start: {state.get('error')!r}")
    try:
        yield ThreadedSimulator(simulator, state["info"])  # type: ignore[arg-type]
    finally:
        loop, stop = state["loop"], state["stop"]
        loop.call_soon_threadsafe(stop.set)  # type: ignore[attr-defined]
        thread.join(START_TIMEOUT_S)
