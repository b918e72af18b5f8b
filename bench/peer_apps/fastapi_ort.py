"""Peer: the usual FastAPI + ONNX Runtime server, no cache (pydantic body, one intra-op thread).

    uvicorn fastapi_ort:app   (BENCH_MODEL = the ONNX file; REDIS_URL set: the cached variant)

With ``REDIS_URL`` set it is the usual cached variant: the md5 of the parsed inputs as the key, a
Redis GET before the model and a SET after it, both awaited in the request.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, Response
from pydantic import BaseModel

options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
session = ort.InferenceSession(os.environ["BENCH_MODEL"], options, providers=["CPUExecutionProvider"])
app = FastAPI()
redis_url = os.environ.get("REDIS_URL")
cache = None
if redis_url:
    import redis.asyncio as aioredis

    cache = aioredis.Redis.from_url(redis_url)


class Request(BaseModel):
    inputs: list[list[float]]


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/models/mlp/predict")
async def predict(request: Request) -> Response:
    key = None
    if cache is not None:
        key = "mlp:" + hashlib.md5(json.dumps(request.inputs).encode()).hexdigest()
        found = await cache.get(key)
        if found is not None:
            return Response(found, media_type="application/json", headers={"X-Cache": "hit"})
    outputs = session.run(None, {"x": np.asarray(request.inputs, dtype=np.float32)})[0]
    body = json.dumps({"outputs": outputs.tolist()}).encode()
    if cache is not None:
        await cache.set(key, body, ex=3600)
    return Response(body, media_type="application/json", headers={"X-Cache": "miss" if cache else "bypass"})
