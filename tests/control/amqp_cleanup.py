"""The plane's RabbitMQ exchanges are not in the broker's queue directory (which the broker
fixtures clean up from): tests that used a plane on RabbitMQ delete them with this."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from hubbub.control.plane import CHANNELS


async def delete_plane_exchanges(url: str) -> None:
    """Delete the plane exchanges of ``url``'s prefix (a missing one is fine)."""
    import aio_pika

    from hubbub.transports._amqp_topology import parse_urls

    prefix = parse_qs(urlsplit(url).query)["prefix"][0]
    [first, *_], _ = parse_urls(url)
    async with await aio_pika.connect(first) as conn:
        channel = await conn.channel()
        for name in CHANNELS:
            await channel.exchange_delete(f"{prefix}:plane:{name}")
