"""easymesh from asyncio: a sensor sends readings, a monitor listens and serves averages.

Both nodes live in one event loop here; in real life they would be two programs.
Start a coordinator first (`easymesh &`), then run `python examples/async_demo.py`.

Usage:
  async_demo.py [--coordinator=HOST:PORT] [--authkey=KEY | --authkey-file=FILE] [--count=N]
  async_demo.py (-h | --help)

Options:
  --coordinator=HOST:PORT  Coordinator address [default: $EASYMESH_COORDINATOR or localhost:6374].
  --authkey=KEY            Shared secret [default: $EASYMESH_AUTHKEY or none].
  --authkey-file=FILE      Read the shared secret from FILE (chmod 600).
  --count=N                Readings to send [default: 5].
  -h --help                Show this screen.
"""

from __future__ import annotations

import asyncio
from typing import Any

from docopt import docopt

from easymesh.aio import AsyncNode, build_node
from easymesh.cli.options import node_kwargs


async def monitor(node: AsyncNode, count: int, done: asyncio.Event) -> None:
    """Listen to readings (a coroutine callback) and serve their average."""
    readings: list[float] = []

    async def on_reading(topic: str, data: dict[str, Any]) -> None:
        readings.append(data["celsius"])
        print(f"monitor got: topic={topic}; data={data}", flush=True)
        if len(readings) == count:
            done.set()

    async def average(last: int) -> float:
        await asyncio.sleep(0)  # a handler may await whatever it likes
        window = readings[-last:]
        return round(sum(window) / len(window), 2)

    await node.add_service("average", average)
    await node.listen("readings", on_reading)


async def main(kwargs: dict[str, Any], count: int) -> None:
    async with (
        await build_node("monitor", **kwargs) as mon,
        await build_node("sensor", **kwargs) as sensor,
    ):
        done = asyncio.Event()
        await monitor(mon, count, done)
        await sensor.wait_for_listener("readings", timeout=10)
        for i in range(count):
            await sensor.send("readings", {"n": i, "celsius": 20.0 + i / 2})
        await asyncio.wait_for(done.wait(), timeout=10)
        print(
            f"sensor asked: average of the last 3 = {await sensor.request('average', 3, timeout=10)}"
        )
        results = await asyncio.gather(
            *(sensor.request("average", n, timeout=10) for n in (1, 2, 4))
        )
        print(f"three requests at once: {results}", flush=True)


if __name__ == "__main__":
    args = docopt(__doc__)
    asyncio.run(main(node_kwargs(args), int(args["--count"])))
