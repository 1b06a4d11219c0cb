"""The API's tasks: ``hubbub worker -A tasks:hub --pool async`` runs them.

The hub reads ``$HUBBUB_BROKER``; without it, the broker is ``hubbub.db`` beside this file,
which the API and the worker share.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from hubbub import Hub, get_task_logger

hub = Hub()
log = get_task_logger(__name__)


@hub.task(retries=3)
async def word_stats(text: str) -> dict[str, object]:
    """Count the words of ``text`` and find the most common one."""
    await asyncio.sleep(0.01)  # stands in for the I/O a real task awaits
    words = text.lower().split()
    common = Counter(words).most_common(1)
    log.info("counted %d words", len(words))
    return {"words": len(words), "most_common": common[0][0] if common else None}
