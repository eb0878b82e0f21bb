"""What the client costs over the bare floor, per ``task.get`` poll.

Floor: a raw httpx POST of a prebuilt request body and an lxml parse of the
answer. Client: ``PlanfixClient.get_task`` (envelope, gate, size cap, safe
parse, error check, the full Task model). Both against one emulator running
in its own process, in interleaved rounds so that machine noise hits both
alike; the figure to read is the ratio. Target: client <= 1.5x the floor.

    python -m bench.client_overhead [--polls N] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from lxml import etree

from notifier.emulator import EmulatorControl
from notifier.planfix import ClientSettings, PlanfixClient
from notifier.planfix.envelope import build_request

RESULTS = Path(__file__).parent / "results"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_emulator(port: int, tasks: int = 50) -> subprocess.Popen[bytes]:
    """The emulator in a process of its own, so it shares no CPU or memory with what is measured."""
    process = subprocess.Popen(
        [sys.executable, "-m", "notifier", "emulator", "--port", str(port), "--tasks", str(tasks),
         "--quota", "10000000"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("the emulator did not start")


async def floor(endpoint: str, settings: ClientSettings, task_ids: list[int]) -> float:
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    account = settings.account
    bodies = [build_request("task.get", account, [("task", [("id", i)])]) for i in task_ids]
    auth = httpx.BasicAuth(settings.api_key, settings.token or "")
    async with httpx.AsyncClient(auth=auth) as http:
        await http.post(endpoint, content=bodies[0])  # connect outside the timing
        started = time.perf_counter()
        for body in bodies:
            response = await http.post(endpoint, content=body)
            root = etree.fromstring(response.content, parser)
            assert root.get("status") == "ok"
        return time.perf_counter() - started


async def through_client(settings: ClientSettings, task_ids: list[int]) -> float:
    async with PlanfixClient(settings) as client:
        await client.get_task(task_ids[0])
        started = time.perf_counter()
        for task_id in task_ids:
            await client.get_task(task_id)
        return time.perf_counter() - started


async def run(polls: int, rounds: int) -> dict[str, object]:
    port = free_port()
    process = start_emulator(port)
    try:
        control = EmulatorControl(f"http://127.0.0.1:{port}")
        task_ids = [int(t["id"]) for t in control.tasks()]
        control.close()
        endpoint = f"http://127.0.0.1:{port}/xml/"
        settings = ClientSettings(
            account="demo", endpoint=endpoint, api_key="emulator-api-key", token="emulator-token"
        )
        ids = [task_ids[i % len(task_ids)] for i in range(polls)]
        floors, clients = [], []
        for _ in range(rounds):
            floors.append(await floor(endpoint, settings, ids))
            clients.append(await through_client(settings, ids))
    finally:
        process.terminate()
        process.wait(timeout=10)
    floor_s, client_s = statistics.median(floors), statistics.median(clients)
    return {
        "polls_per_round": polls,
        "rounds": rounds,
        "floor_ms_per_poll": 1000 * floor_s / polls,
        "client_ms_per_poll": 1000 * client_s / polls,
        "ratio": client_s / floor_s,
        "ratio_per_round": [c / f for c, f in zip(clients, floors, strict=True)],
        "target_ratio": 1.5,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--polls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    result = asyncio.run(run(args.polls, args.rounds))
    print(f"task.get x {args.polls}, median of {args.rounds} interleaved rounds")
    print(f"{'path':<28}{'ms/poll':>10}")
    print(f"{'floor (httpx + lxml)':<28}{result['floor_ms_per_poll']:>10.3f}")
    print(f"{'PlanfixClient.get_task':<28}{result['client_ms_per_poll']:>10.3f}")
    rounds = ", ".join(f"{r:.2f}" for r in result["ratio_per_round"])  # type: ignore[attr-defined]
    print(f"{'ratio (target <= 1.50)':<28}{result['ratio']:>10.2f}   rounds: {rounds}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "client_overhead.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
