"""Property: whatever a task returns or raises, the worker survives and settles it.

Hypothesis draws a plan of task outcomes (return values of any JSON-ish shape, NaN and
infinities included; exceptions with any text, lone surrogates included; retries with odd
countdowns), a worker drains them all, and every task must end SUCCESS or FAILURE, with
SUCCESS only for values that JSON can carry, stored as they were returned.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hubbub import Hub, Retry, State
from hubbub.testing import drain_async
from hubbub.worker.pools import make_pool

texts = st.text(st.characters() | st.characters(  # and lone surrogates, which JSON refuses
    min_codepoint=0xD800, max_codepoint=0xDFFF, exclude_categories=()), max_size=40)
values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=12,
)
plans = st.lists(
    st.one_of(
        st.tuples(st.just("return"), values),
        st.tuples(st.just("raise"), texts),
        st.tuples(st.just("retry"), st.sampled_from([None, -1.0, 0.0, math.nan])),
        st.tuples(st.just("interrupt"), st.none()),
    ),
    min_size=1, max_size=12,
)


def finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(finite(v) for v in value)
    if isinstance(value, dict):
        return all(finite(v) for v in value.values())
    return True


def encodable(value: Any) -> bool:
    if isinstance(value, str):
        return not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, list):
        return all(encodable(v) for v in value)
    if isinstance(value, dict):
        return all(encodable(k) and encodable(v) for k, v in value.items())
    return True


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=plans)
def test_the_worker_settles_any_outcome_and_survives(plan: list[tuple[str, Any]]) -> None:
    hub = Hub(f"memory://{uuid.uuid4().hex}", lease=5)

    @hub.task(retries=1, retry_backoff=0.01, retry_jitter=False)
    def act(i: int) -> Any:
        kind, payload = plan[i]
        if kind == "return":
            return payload
        if kind == "raise":
            raise ValueError(payload)
        if kind == "retry":
            raise Retry(countdown=payload)
        raise KeyboardInterrupt

    try:
        results = [act.delay(i) for i in range(len(plan))]
        asyncio.run(drain_async(hub, pool=make_pool("async", 4), timeout=60))
        found = hub.bridge.run(hub.read_results([r.id for r in results]))
        for (kind, payload), result in zip(plan, results, strict=True):
            record = found[result.id]
            if kind == "return" and finite(payload) and encodable(payload):
                assert record.state == State.SUCCESS, (payload, record)
                assert record.value == payload
            elif kind == "return" and not finite(payload):
                assert record.state == State.FAILURE, (payload, record)
            else:
                assert record.state in {State.SUCCESS, State.FAILURE}, (kind, record)
                if kind != "return":
                    assert record.state == State.FAILURE
    finally:
        hub.close()
