"""Admin API: models, versions, promotion, aliases, releases (traffic, shadow, guard), history, cache purge,
plugins (and tokens)."""

from __future__ import annotations

from typing import Any

import anyio.from_thread
import orjson
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from modelreg.api.deps import AdminDep, RegistryDep, ServicesDep, authorize
from modelreg.api.routes import tokens
from modelreg.api.schemas import AliasSet, ModelCreate, ModelPolicy, Promote, Rollback, ShadowSet, TrafficSet
from modelreg.api.services import Services
from modelreg.registry import PRODUCTION, ProductionChange, RegistryService
from modelreg.registry.errors import Conflict, Invalid
from modelreg.serving.manager import VersionUnavailable
from modelreg.serving.replicas import model_summary

# Every route below, and the token routes included at the end, pass `authorize`: no token is 401, a reader
# token on anything but GET is 403.
router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(authorize)])

UPLOAD_FORM = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["artifact"],
            "properties": {
                "artifact": {"type": "string", "format": "binary",
                             "description": "the model file: ONNX, TorchScript, .pt2, or a plugin's format"},
                "metadata": {"type": "string",
                             "description": 'JSON: {"signature": {...}, "format": "...", any free keys}'},
            },
        }}},
    }
}


@router.post("/models", status_code=201)
def create_model(body: ModelCreate, registry: RegistryDep, services: ServicesDep, admin: AdminDep) -> dict[str, Any]:
    """Register a model under a unique name, served by the named runtime plugin."""
    services.plugins.get(body.runtime)  # 422 naming the available runtimes when it is unknown
    policy = body.model_dump(exclude={"name", "runtime"}, exclude_none=True)
    created = registry.create_model(body.name, body.runtime, actor=admin.name, **policy).to_dict()
    services.changed(body.name)  # every replica knows the name at once, not after its negative cache expires
    return created


@router.get("/models")
def list_models(registry: RegistryDep) -> list[dict[str, Any]]:
    return [m.to_dict() for m in registry.list_models()]


@router.get("/models/{name}")
async def get_model(name: str, registry: RegistryDep, services: ServicesDep) -> dict[str, Any]:
    """The model, its traffic split, shadow and guard in progress (each null when none), and per live
    replica what it serves of it, has loaded and could not load."""
    data = (await run_in_threadpool(registry.get_model, name)).to_dict()
    data.update((await run_in_threadpool(registry.release_state, name)).to_dict())
    data["replicas"] = model_summary(await services.replicas.replicas(), name)
    return data


@router.patch("/models/{name}")
def update_model(name: str, body: ModelPolicy, registry: RegistryDep, services: ServicesDep,
                 admin: AdminDep) -> dict[str, Any]:
    """Change description, tags, cache or batching policy, or device; only the fields sent."""
    record = registry.update_model(name, body.model_dump(exclude_unset=True), actor=admin.name)
    services.changed(name)
    return record.to_dict()


@router.delete("/models/{name}", status_code=204)
def delete_model(name: str, registry: RegistryDep, services: ServicesDep, admin: AdminDep) -> Response:
    registry.delete_model(name, actor=admin.name)
    services.changed(name)
    return Response(status_code=204)


@router.post("/models/{name}/versions", status_code=201, openapi_extra=UPLOAD_FORM)
async def upload_version(name: str, request: Request, registry: RegistryDep, admin: AdminDep) -> JSONResponse:
    """Upload an artifact (multipart field ``artifact``, optional JSON field ``metadata``)."""
    await run_in_threadpool(registry.get_model, name)  # 404 before the body is read
    form = await request.form(max_files=1, max_fields=4)
    try:
        artifact = form.get("artifact")
        if not isinstance(artifact, UploadFile):
            raise Invalid("send the model file in a multipart/form-data field named 'artifact'")
        metadata = _metadata(form.get("metadata"))
        record = await run_in_threadpool(registry.upload_version, name, artifact.file, filename=artifact.filename,
                                         metadata=metadata, actor=admin.name)
    finally:
        await form.close()
    return JSONResponse(record.to_dict(), status_code=201)


def _metadata(raw: object) -> dict[str, Any]:
    if raw is None or raw == "":
        return {}
    if not isinstance(raw, str):
        raise Invalid("the 'metadata' field must be a JSON string, not a file")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Invalid(f"the 'metadata' field is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise Invalid('the \'metadata\' field must be a JSON object, e.g. {"signature": {...}}')
    return value


@router.get("/models/{name}/versions")
def list_versions(name: str, registry: RegistryDep) -> list[dict[str, Any]]:
    return [v.to_dict() for v in registry.list_versions(name)]


@router.get("/models/{name}/versions/{version}")
def get_version(name: str, version: int, registry: RegistryDep) -> dict[str, Any]:
    return registry.get_version(name, version).to_dict()


@router.post("/models/{name}/promote")
def promote(name: str, body: Promote, registry: RegistryDep, services: ServicesDep, admin: AdminDep) -> dict[str, Any]:
    """Make ``version`` the production version; cached answers of the old one stop being served.

    The version is loaded on this replica first: when it cannot load, 409 and nothing changes. With
    ``guard``, the replicas watch it for ``window_seconds`` and roll back to the version it replaced
    when a limit breaks (history actor ``guard``); the answer then shows the guard.
    """
    _load_first(services, registry, name, body.version, "promote")
    change = registry.promote(name, body.version, actor=admin.name, guard=body.guard.spec() if body.guard else None)
    services.changed(name)
    data = _answer(services, change, body.wait_seconds)
    if body.guard is not None:
        guard = registry.active_guard(name)
        data["guard"] = guard.to_dict() if guard else None
    return data


@router.post("/models/{name}/rollback")
def rollback(name: str, registry: RegistryDep, services: ServicesDep, admin: AdminDep,
             body: Rollback | None = None) -> dict[str, Any]:
    """Return production to the previous version (or to ``version``), loaded on this replica first."""
    target = body.version if body and body.version is not None else registry.rollback_target(name)
    if target is not None:  # None: nothing to roll back to, which the registry says in its own words
        _load_first(services, registry, name, target, "roll back to")
    change = registry.rollback(name, body.version if body else None, actor=admin.name)
    services.changed(name)
    return _answer(services, change, body.wait_seconds if body else None)


def _load_first(services: Services, registry: RegistryService, name: str, version: int, action: str) -> None:
    """Load ``version`` here before committing; a version that cannot load is refused with the reason."""
    try:
        services.manager.preload(name, version)
    except VersionUnavailable as exc:
        live = registry.get_model(name).aliases.get(PRODUCTION)
        stays = f"production stays v{live}" if live is not None else "there is still no production version"
        raise Conflict(f"cannot {action} {name} v{version}: it cannot be loaded on this replica "
                       f"({services.replicas.id}): {exc.reason}; nothing changed, {stays}") from exc


def _answer(services: Services, change: ProductionChange, wait_seconds: float | None) -> dict[str, Any]:
    """The change; with ``wait_seconds``, also which live replicas serve it (the change is committed either way)."""
    data = change.to_dict()
    if wait_seconds is None or change.production is None:
        return data
    rollout = anyio.from_thread.run(services.replicas.wait_for, change.model, change.production, wait_seconds)
    data.update(replicas=rollout.to_dict(), complete=rollout.complete, committed=True)
    if not rollout.complete:
        data["message"] = (f"{change.model} v{change.production} is production in the registry (committed), but "
                           f"{len(rollout.not_serving)} of {len(rollout.served) + len(rollout.not_serving)} live "
                           f"replicas do not serve it after {wait_seconds:g}s: see replicas.not_serving")
    return data


@router.get("/models/{name}/aliases")
def list_aliases(name: str, registry: RegistryDep) -> dict[str, int]:
    return registry.get_model(name).aliases


@router.put("/models/{name}/aliases/{alias}")
def set_alias(name: str, alias: str, body: AliasSet, registry: RegistryDep, services: ServicesDep,
              admin: AdminDep) -> dict[str, Any]:
    record = registry.set_alias(name, alias, body.version, actor=admin.name)
    services.changed(name)
    return {"model": name, "alias": alias, "version": record.aliases[alias]}


@router.delete("/models/{name}/aliases/{alias}", status_code=204)
def delete_alias(name: str, alias: str, registry: RegistryDep, services: ServicesDep, admin: AdminDep) -> Response:
    registry.delete_alias(name, alias, actor=admin.name)
    services.changed(name)
    return Response(status_code=204)


# releases: traffic split and shadow ----------------------------------------------------------

@router.put("/models/{name}/traffic")
def set_traffic(name: str, body: TrafficSet, registry: RegistryDep, services: ServicesDep,
                admin: AdminDep) -> dict[str, Any]:
    """Share the production route's requests among aliases (whole-number weights summing to 100); a
    client sending ``X-Request-Key`` keeps its arm while the split holds. Each arm is loaded here first."""
    aliases = registry.get_model(name).aliases
    for alias, weight in body.weights.items():
        if weight > 0 and alias in aliases:  # an unknown alias is the registry's to refuse, in its words
            _load_first(services, registry, name, aliases[alias], "send traffic to")
    split = registry.set_traffic(name, body.weights, actor=admin.name)
    services.changed(name)
    return split.to_dict()


@router.get("/models/{name}/traffic")
def get_traffic(name: str, registry: RegistryDep) -> dict[str, Any]:
    """The split, or ``"weights": null`` when every request goes to production."""
    split = registry.get_traffic(name)
    return split.to_dict() if split else {"model": name, "weights": None}


@router.delete("/models/{name}/traffic", status_code=204)
def clear_traffic(name: str, registry: RegistryDep, services: ServicesDep, admin: AdminDep) -> Response:
    """Send every request of the production route to production again."""
    registry.clear_traffic(name, actor=admin.name)
    services.changed(name)
    return Response(status_code=204)


@router.put("/models/{name}/shadow")
def set_shadow(name: str, body: ShadowSet, registry: RegistryDep, services: ServicesDep,
               admin: AdminDep) -> dict[str, Any]:
    """Also run ``percent`` % of production requests on ``version`` in the background: never delaying or
    changing an answer, its own answers cached in its namespace (warm when it is promoted)."""
    _load_first(services, registry, name, body.version, "shadow")
    setting = registry.set_shadow(name, body.version, body.percent, actor=admin.name)
    services.changed(name)
    return setting.to_dict()


NO_FIGURES = {"compared": 0, "agreed": 0, "dropped": 0, "max_abs_diff": None}


@router.get("/models/{name}/shadow")
async def get_shadow(name: str, registry: RegistryDep, services: ServicesDep) -> dict[str, Any]:
    """The shadow setting (``version`` null when none) and what was compared, pooled over the replicas."""
    setting = await run_in_threadpool(registry.get_shadow, name)
    if setting is None:
        return {"model": name, "version": None, "percent": None, **NO_FIGURES}
    figures = await services.serving.shadow_figures(name)
    # This replica may not have switched to the new setting yet: then it has no figures of its own.
    if not figures or figures.get("version") != setting.version:
        figures = NO_FIGURES
    return {**figures, **setting.to_dict()}


@router.delete("/models/{name}/shadow", status_code=204)
def clear_shadow(name: str, registry: RegistryDep, services: ServicesDep, admin: AdminDep) -> Response:
    """Stop shadowing."""
    registry.clear_shadow(name, actor=admin.name)
    services.changed(name)
    return Response(status_code=204)


@router.get("/models/{name}/history")
def history(name: str, registry: RegistryDep) -> list[dict[str, Any]]:
    """Every change to the model, oldest first: action, versions, actor, time, and ``reason`` when one was
    recorded (a traffic or shadow change, a guard's rollback)."""
    return [h.to_dict() for h in registry.history(name)]


@router.delete("/models/{name}/cache")
def purge_cache(name: str, registry: RegistryDep, services: ServicesDep, admin: AdminDep) -> dict[str, Any]:
    """Drop every cached answer of the model at once (a new cache generation; O(1))."""
    change = registry.purge_cache(name, actor=admin.name)
    services.changed(name)
    return change.to_dict()


@router.get("/replicas")
async def replicas(services: ServicesDep) -> list[dict[str, Any]]:
    """Every live replica: id, host, started and last seen, and per model what it serves on each alias,
    the versions it has loaded (device, memory where known) and those that failed to load, with why."""
    return await services.replicas.replicas()


@router.get("/plugins")
def plugins(services: ServicesDep) -> list[dict[str, Any]]:
    """Every installed runtime plugin with its status, version, formats and devices."""
    return [status.to_dict() for status in services.plugins.statuses()]


router.include_router(tokens.router)
