"""The ceiling: a bare FastAPI POST endpoint that returns a constant (same uvicorn settings)."""

from fastapi import FastAPI, Response

BODY = b'{"model":"bare","version":1,"outputs":[[0.0]]}'


def create_app() -> FastAPI:
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/models/bare/predict")
    async def predict() -> Response:
        return Response(BODY, media_type="application/json")

    return app
