"""RabbitMQ on loopback (guest/guest on 127.0.0.1:5672, started by the machine)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aio_pika

from hubbub.transports._amqp_topology import (
    directory_name,
    exchange_names,
    parse_urls,
    queue_names,
)

SCHEME = "amqp"
HOST = "127.0.0.1"
PORT = int(os.environ.get("HB_TEST_AMQP_PORT", "5672"))


def server() -> tuple[str, int]:
    return (HOST, PORT)


def make_url(tmp_path: Path, run_id: str) -> str:
    return f"amqp://guest:guest@{HOST}:{PORT}/?prefix={run_id}"


def results_url(tmp_path: Path, run_id: str) -> None:
    return None  # RabbitMQ keeps no results


async def cleanup(url: str) -> None:
    """Delete every queue and exchange the namespace created, found through its directory."""
    [prefix] = parse_qs(urlsplit(url).query)["prefix"]
    [first, *_], _ = parse_urls(url)
    async with await aio_pika.connect(first) as conn:
        channel = await conn.channel()
        names: list[str] = []
        try:
            directory = await channel.declare_queue(directory_name(prefix), passive=True)
            while (message := await directory.get(no_ack=True, fail=False)) is not None:
                names.append(message.body.decode())
        except aio_pika.exceptions.ChannelNotFoundEntity:
            channel = await conn.channel()  # nothing was ever declared
        for name in dict.fromkeys(names):
            for queue in queue_names(prefix, name):
                await channel.queue_delete(queue)  # a missing queue is fine
        for exchange in exchange_names(prefix):
            await channel.exchange_delete(exchange)
        await channel.queue_delete(directory_name(prefix))
