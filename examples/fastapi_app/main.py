"""A FastAPI app that hands work to hubbub: ``uvicorn main:app``.

``POST /jobs`` sends a task from an ``async def`` endpoint (``await task.delay_async``:
published from the app's own event loop, which the lifespan connected), and
``GET /jobs/{id}`` reports its state and result.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field
from tasks import hub, word_stats

from hubbub import Result, State
from hubbub.fastapi import HubDep, lifespan

app = FastAPI(title="word stats", lifespan=lifespan(hub))


class Job(BaseModel):
    text: str = Field(min_length=1, max_length=100_000)


@app.get("/healthz")
async def healthz() -> dict[str, bool]:
    return {"ok": True}


@app.post("/jobs", status_code=202)
async def create_job(job: Job) -> dict[str, str]:
    result = await word_stats.delay_async(job.text)
    return {"id": result.id, "status": f"/jobs/{result.id}"}


@app.get("/jobs/{job_id}")
def job_state(job_id: str, hub: HubDep) -> dict[str, Any]:
    # A plain def: FastAPI runs it in a thread, where Result's sync reads belong.
    result: Result[dict[str, object]] = Result(hub, job_id, word_stats.name)
    state = result.state
    body: dict[str, Any] = {"id": job_id, "state": str(state)}
    if state == State.SUCCESS:
        body["result"] = result.get(timeout=5)
    elif state == State.FAILURE:
        body["error"] = str(result.result)
    return body
