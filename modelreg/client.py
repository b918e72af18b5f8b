"""``modelreg.Client``: the admin, predict and V2 APIs of a running modelreg server, from Python.

    with modelreg.Client("http://127.0.0.1:8000", token="...") as client:
        client.create_model("iris", runtime="onnx")
        version = client.upload("iris", "iris.onnx")["version"]
        client.promote("iris", version)
        print(client.predict("iris", [[5.1, 3.5, 1.4, 0.2]]).outputs)

Every method is one HTTP request; a refused one raises a ``ModelregError`` subclass carrying the
server's ``detail`` (see ``modelreg.client_errors``). Admin answers are the server's JSON as dicts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Unpack
from urllib.parse import quote

import httpx

from modelreg.client_errors import error_for, transport_error
from modelreg.client_types import GuardLimits, Inference, Policy, Prediction, Progress

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=5.0)
# Upload validation loads the model and runs it once: a large model may take minutes to answer.
UPLOAD_TIMEOUT = httpx.Timeout(None, connect=5.0)
Timeout = float | httpx.Timeout | None
# uvicorn closes a connection idle for 5 s, and httpx kept one for 5 s too: a call made just then went
# out on a connection the server was closing, and failed as ConnectionFailed though the server was up.
# Letting idle connections go at 2 s costs a reconnect after a pause and leaves no such window.
POOL_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=2.0)
# Beyond a promotion's wait_seconds: the load before the commit and the answer itself.
WAIT_MARGIN_SECONDS = 60.0


def _jsonable(value: Any) -> Any:
    # numpy arrays and scalars know how to become lists; importing numpy here would cost every user.
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _segment(part: str | int) -> str:
    return quote(str(part), safe="")


class _CountingReader:
    """A binary file that reports the bytes read from it, so an upload streams with progress."""

    def __init__(self, file: IO[bytes], total: int | None, progress: Progress) -> None:
        self._file, self._total, self._progress = file, total, progress
        self._sent = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._file.read(size)
        if chunk:
            self._sent += len(chunk)
            self._progress(self._sent, self._total)
        return chunk

    # httpx seeks to the start before sending (and to the end to learn the size): count from there.
    # No fileno(), so httpx asks seek/tell for the size: fstat would call a pipe's size 0.
    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._sent = self._file.seek(offset, whence)
        return self._sent

    def tell(self) -> int:
        return self._file.tell()


def _size(file: IO[bytes]) -> int | None:
    try:
        return os.fstat(file.fileno()).st_size if file.seekable() else None
    except (AttributeError, OSError, ValueError):  # BytesIO has no fileno; a socket has no size
        try:
            here = file.tell()
            end = file.seek(0, os.SEEK_END)
            file.seek(here)
            return end
        except (AttributeError, OSError, ValueError):
            return None


class Client:
    """A synchronous client for one modelreg server; use it as a context manager, or call ``close()``."""

    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, timeout: Timeout = DEFAULT_TIMEOUT) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, limits=POOL_LIMITS)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send one request; raise the matching ModelregError on no answer or a 4xx/5xx one."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise transport_error(self.url, exc) from exc
        if response.is_error:
            raise error_for(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        return None if response.status_code == 204 or not response.content else response.json()

    def _object(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._json(method, path, **kwargs)
        return result

    def _list(self, method: str, path: str, **kwargs: Any) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json(method, path, **kwargs)
        return result

    @staticmethod
    def _model(name: str, *rest: str | int) -> str:
        # Every part escaped, so a name holding '/' or '..' cannot reach another route.
        return "/admin/models/" + "/".join(_segment(part) for part in (name, *rest))

    # models -------------------------------------------------------------------------------------

    def create_model(self, name: str, runtime: str, **policy: Unpack[Policy]) -> dict[str, Any]:
        """Register a model served by the runtime plugin ``runtime`` (see ``plugins()``)."""
        body = {"name": name, "runtime": runtime, **{k: v for k, v in policy.items() if v is not None}}
        return self._object("POST", "/admin/models", json=body)

    def list_models(self) -> list[dict[str, Any]]:
        """Every model with its production version."""
        return self._list("GET", "/admin/models")

    def get_model(self, name: str) -> dict[str, Any]:
        """One model: runtime, policy, aliases, production version and cache generation."""
        return self._object("GET", self._model(name))

    def update_model(self, name: str, **policy: Unpack[Policy]) -> dict[str, Any]:
        """Change a model's policy; only the fields given are sent."""
        return self._object("PATCH", self._model(name), json=dict(policy))

    def delete_model(self, name: str) -> None:
        """Delete a model with its versions and aliases (its history is kept)."""
        self._json("DELETE", self._model(name))

    def plugins(self) -> list[dict[str, Any]]:
        """The server's runtime plugins, each with its status, formats and devices."""
        return self._list("GET", "/admin/plugins")

    # versions -----------------------------------------------------------------------------------

    def upload(self, name: str, artifact: str | os.PathLike[str] | IO[bytes], *,
               metadata: Mapping[str, Any] | None = None, filename: str | None = None,
               progress: Progress | None = None, timeout: Timeout = UPLOAD_TIMEOUT) -> dict[str, Any]:
        """Upload a new version from a path or a binary file, streamed (never read whole into memory).

        ``metadata`` (signature, format, free keys) travels as the JSON field ``metadata``. The answer's
        ``status`` is ``ready``, or ``failed`` with ``error`` saying why the plugin could not serve it.
        The default timeout waits as long as validation takes (it loads and runs the model once).
        """
        if isinstance(artifact, (str, os.PathLike)):
            path = Path(artifact)
            with path.open("rb") as file:
                return self.upload(name, file, metadata=metadata, filename=filename or path.name,
                                   progress=progress, timeout=timeout)
        given = getattr(artifact, "name", None)
        filename = filename or (Path(given).name if isinstance(given, str) else "artifact")
        stream: Any = artifact
        if progress is not None:
            total = _size(artifact)
            progress(0, total)
            stream = _CountingReader(artifact, total, progress)
        data = {"metadata": json.dumps(dict(metadata), default=_jsonable)} if metadata is not None else None
        return self._object(
            "POST", self._model(name, "versions"), data=data,
            files={"artifact": (filename, stream, "application/octet-stream")}, timeout=timeout)

    def list_versions(self, name: str) -> list[dict[str, Any]]:
        """A model's versions, oldest first, with status, format, sha256 and aliases."""
        return self._list("GET", self._model(name, "versions"))

    def get_version(self, name: str, version: int) -> dict[str, Any]:
        """One version of a model."""
        return self._object("GET", self._model(name, "versions", version))

    # production, aliases, history ---------------------------------------------------------------

    def promote(self, name: str, version: int, *, wait_seconds: float | None = None,
                guard: GuardLimits | None = None) -> dict[str, Any]:
        """Make ``version`` the production version: ``{"model", "previous", "production", "generation"}``.

        The server loads it first and refuses (``Conflict``, nothing changed) when it cannot. With
        ``wait_seconds`` the answer comes once every live replica serves it, or after that long, and
        adds ``complete`` and ``replicas: {"served": [ids], "not_serving": [{"id", "reason"}]}``.
        With ``guard`` (e.g. ``{"window_seconds": 300, "max_error_rate": 0.01}``) the replicas watch the
        new version for the window and roll back to the one it replaced on a breach; the answer adds
        ``guard`` (``version``, ``replaced``, ``spec``, ``started_at``, ``ends_at``).
        """
        body: dict[str, Any] = {"version": version}
        if guard is not None:
            body["guard"] = dict(guard)
        return self._change(name, "promote", body, wait_seconds)

    def rollback(self, name: str, version: int | None = None, *, wait_seconds: float | None = None) -> dict[str, Any]:
        """Return production to the previous version, or to ``version``; ``wait_seconds`` as for ``promote``."""
        return self._change(name, "rollback", {} if version is None else {"version": version}, wait_seconds)

    def _change(self, name: str, action: str, body: dict[str, Any], wait_seconds: float | None) -> dict[str, Any]:
        if wait_seconds is None:
            return self._object("POST", self._model(name, action), json=body)
        # The server holds the answer up to wait_seconds: the read timeout must outlast it.
        timeout = httpx.Timeout(wait_seconds + WAIT_MARGIN_SECONDS, connect=5.0)
        return self._object("POST", self._model(name, action), json={**body, "wait_seconds": wait_seconds},
                            timeout=timeout)

    def replicas(self) -> list[dict[str, Any]]:
        """Every live replica: ``id``, ``host``, ``started_at``, ``last_seen`` and, per model in ``models``,
        ``serving`` (alias -> version), ``loaded`` (version, device, memory_bytes) and ``failed`` (version, reason)."""
        return self._list("GET", "/admin/replicas")

    def set_alias(self, name: str, alias: str, version: int) -> dict[str, Any]:
        """Point ``alias`` (``staging``, ``canary`` …) at ``version``."""
        return self._object("PUT", self._model(name, "aliases", alias), json={"version": version})

    def delete_alias(self, name: str, alias: str) -> None:
        """Remove an alias."""
        self._json("DELETE", self._model(name, "aliases", alias))

    def history(self, name: str) -> list[dict[str, Any]]:
        """Every change to a model, oldest first: action, from/to version, actor, time, and ``reason`` when set."""
        return self._list("GET", self._model(name, "history"))

    # releases: traffic split and shadow ---------------------------------------------------------

    def set_traffic(self, name: str, weights: Mapping[str, int]) -> dict[str, Any]:
        """Share the production route among aliases, e.g. ``{"production": 90, "canary": 10}`` (whole numbers
        summing to 100): ``{"model", "weights"}``. A request sending ``X-Request-Key`` keeps its arm."""
        return self._object("PUT", self._model(name, "traffic"), json={"weights": dict(weights)})

    def traffic(self, name: str) -> dict[str, Any]:
        """The split: ``{"model", "weights"}``, ``weights`` None when every request goes to production."""
        return self._object("GET", self._model(name, "traffic"))

    def clear_traffic(self, name: str) -> None:
        """Send every request of the production route to production again."""
        self._json("DELETE", self._model(name, "traffic"))

    def set_shadow(self, name: str, version: int, percent: float) -> dict[str, Any]:
        """Also run ``percent`` % of production requests on ``version`` in the background (answers unchanged)."""
        return self._object("PUT", self._model(name, "shadow"), json={"version": version, "percent": percent})

    def shadow(self, name: str) -> dict[str, Any]:
        """The shadow (``version`` None when none) with ``compared``, ``agreed``, ``dropped``, ``max_abs_diff``."""
        return self._object("GET", self._model(name, "shadow"))

    def clear_shadow(self, name: str) -> None:
        """Stop shadowing."""
        self._json("DELETE", self._model(name, "shadow"))

    def purge(self, name: str) -> dict[str, Any]:
        """Drop every cached answer of a model at once (a new cache generation)."""
        return self._object("DELETE", self._model(name, "cache"))

    # tokens -------------------------------------------------------------------------------------

    def create_token(self, name: str, role: str = "reader") -> dict[str, Any]:
        """A new API token (``admin`` or ``reader``); ``token`` in the answer is its secret, shown once."""
        return self._object("POST", "/admin/tokens", json={"name": name, "role": role})

    def list_tokens(self) -> list[dict[str, Any]]:
        """Every token with its role and state (never a secret)."""
        return self._list("GET", "/admin/tokens")

    def revoke_token(self, name: str) -> dict[str, Any]:
        """Revoke a token: it stops working at once."""
        return self._object("DELETE", f"/admin/tokens/{_segment(name)}")

    # inference ----------------------------------------------------------------------------------

    def predict(self, name: str, inputs: Any, version: int | None = None, alias: str | None = None, *,
                cache_control: str | None = None) -> Prediction:
        """Predict with production, a numbered ``version`` or an ``alias``.

        ``inputs`` is a nested list (or numpy array) for a one-input model, or ``{input name: ...}``.
        ``cache_control="no-cache"`` computes afresh; ``"no-store"`` keeps the answer out of the cache.
        """
        return self.predict_body(name, {"inputs": inputs}, version, alias, cache_control=cache_control)

    def predict_body(self, name: str, body: Any, version: int | None = None, alias: str | None = None, *,
                     cache_control: str | None = None) -> Prediction:
        """``predict`` with a whole JSON request body, for plugins that read more than ``inputs``."""
        if version is not None and alias is not None:
            raise ValueError("give a version or an alias, not both")
        path = f"/models/{_segment(name)}"
        if version is not None:
            path += f"/versions/{version}"
        elif alias is not None:
            path += f"/aliases/{_segment(alias)}"
        headers = {"Content-Type": "application/json", **({"Cache-Control": cache_control} if cache_control else {})}
        response = self.request("POST", path + "/predict", content=json.dumps(body, default=_jsonable),
                                headers=headers)
        try:
            data = response.json()
        except ValueError:  # a plugin's own encoding need not be JSON; ``body`` has it as sent
            data = None
        answer = data if isinstance(data, dict) else {}
        return Prediction(model=str(answer.get("model", name)), version=self._answered_by(response, answer),
                          outputs=answer.get("outputs"), cache=response.headers.get("x-cache", ""),
                          body=response.content)

    def infer(self, name: str, inputs: Sequence[Mapping[str, Any]], version: int | None = None, *,
              outputs: Sequence[str] | None = None, request_id: str | None = None,
              cache_control: str | None = None) -> Inference:
        """Open Inference Protocol (V2) infer: ``inputs`` are ``{"name", "datatype", "shape", "data"}`` tensors."""
        path = f"/v2/models/{_segment(name)}" + (f"/versions/{version}" if version is not None else "") + "/infer"
        body: dict[str, Any] = {"inputs": [dict(tensor) for tensor in inputs]}
        if outputs is not None:
            body["outputs"] = [{"name": output} for output in outputs]
        if request_id is not None:
            body["id"] = request_id
        headers = {"Content-Type": "application/json", **({"Cache-Control": cache_control} if cache_control else {})}
        response = self.request("POST", path, content=json.dumps(body, default=_jsonable), headers=headers)
        data: dict[str, Any] = response.json()
        return Inference(model=str(data.get("model_name", name)), version=self._answered_by(response, data),
                         outputs=list(data.get("outputs", [])), cache=response.headers.get("x-cache", ""),
                         id=data.get("id"))

    @staticmethod
    def _answered_by(response: httpx.Response, answer: Mapping[str, Any]) -> int:
        # The header is the contract (X-Model-Version); the body's copy covers a proxy that drops headers.
        raw = response.headers.get("x-model-version") or answer.get("version") or answer.get("model_version") or 0
        return int(raw)
