"""ModelManager: which version of each model is live here, loaded before it is switched to."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from modelreg.names import is_model_name
from modelreg.plugins.base import LoadedModel, LoadOptions, PluginError, Signature, resolve_device
from modelreg.plugins.discovery import PluginSet
from modelreg.registry import (
    PRODUCTION,
    Conflict,
    LiveState,
    NoProductionVersion,
    NotFound,
    RegistryService,
    Unavailable,
    VersionRecord,
)
from modelreg.registry.artifacts import ArtifactUnavailable
from modelreg.serving.errors import ServingError
from modelreg.serving.gc_pauses import collect_unloaded, freeze_long_lived
from modelreg.serving.misses import UnknownNames

log = logging.getLogger("modelreg.manager")
# Versions loaded for the versioned route (or a promotion's check) that no alias points at, kept at
# once per replica: an explicit-version flood must not load every old version (MODELREG_MAX_ON_DEMAND_VERSIONS).
MAX_ON_DEMAND_VERSIONS = 8
# A request for a version that just failed to load answers from the recorded failure for this long
# instead of loading again: a broken artifact must not cost a load per request. Polls still retry.
FAILED_RETRY_SECONDS = 5.0
RETRY_AFTER_SECONDS = "5"
# An absolute POSIX path (two components or more), quoted or not: what a client message must not show.
_SERVER_PATH = re.compile(r"(?<![\w.])/(?:[^\s/'\"():,;]+/)+[^\s/'\"():,;]*")


def public_reason(text: str) -> str:
    """``text`` with server file paths replaced by ``<path>``: the log keeps the full text, clients get this."""
    return _SERVER_PATH.sub("<path>", text).strip() or "the runtime gave no reason"


class VersionUnavailable(ServingError):
    """A version that exists cannot be loaded on this replica (a server fault: 503, retry later)."""

    headers = {"Retry-After": RETRY_AFTER_SECONDS}

    def __init__(self, model: str, version: int, reason: str) -> None:
        self.model, self.version, self.reason = model, version, reason
        super().__init__(f"{model} v{version} cannot be loaded on this replica: {reason}")


@dataclass(frozen=True)
class Servable:
    """Everything one request needs, resolved once: the version it runs and the namespace it caches in."""

    state: LiveState
    version: int
    sha256: str
    model: LoadedModel

    @property
    def name(self) -> str:
        return self.state.name

    @property
    def signature(self) -> Signature:
        return self.model.signature

    @property
    def key_generation(self) -> int:
        """The generation this version's cache keys carry: its pin (a shadow or canary kept warm), else the model's."""
        return self.state.key_generations.get(self.version, self.state.generation)


@dataclass
class _Loaded:
    model: LoadedModel
    record: VersionRecord
    device: str
    last_used: float  # on the manager's clock
    live: bool = False  # an alias of the served state pointed at this copy at the last look
    replaced_at: float | None = None  # when it stopped being live: its grace period counts from here


LoadedKey = tuple[str, int, str, str]  # (name, version, sha256, device)


class ModelManager:
    """Keeps live versions loaded, swaps atomically, unloads replaced versions after a grace period.

    A replaced version (production moved on, or the model moved to another device) is unloaded
    ``grace_seconds`` after the replacement, however much it is still used: GPU memory comes back
    on a known schedule. A version loaded on demand that was never live (the versioned route, a
    promotion's check) is unloaded ``grace_seconds`` after its last use, or sooner when more than
    ``max_on_demand`` such versions are loaded (the least recently used goes first).

    Anything a plugin raises is contained to its model: a refresh goes on with the other models,
    and only a registry outage (``Unavailable``) stops it.
    """

    def __init__(self, registry: RegistryService, plugins: PluginSet, *, default_device: str = "auto",
                 grace_seconds: float = 60.0, intra_op_threads: int | None = None,
                 max_on_demand: int = MAX_ON_DEMAND_VERSIONS, clock: Callable[[], float] = time.monotonic,
                 gc_freeze: bool = False) -> None:
        self._registry = registry
        # A server keeps loaded models out of the collector's passes (serving/gc_pauses.py).
        self._gc_freeze = gc_freeze
        self._plugins = plugins
        self._default_device = default_device
        self._grace = grace_seconds
        self._intra_op_threads = intra_op_threads
        self._clock = clock
        self._states: dict[str, LiveState] = {}  # what this replica serves (switched to)
        self._view: dict[str, LiveState] = {}  # what the registry said at the last refresh
        self._loaded: dict[LoadedKey, _Loaded] = {}
        self._index: dict[tuple[str, int], LoadedKey] = {}  # (name, version) -> the copy requests use
        self._load_locks: dict[LoadedKey, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._unknown = UnknownNames(clock=clock)
        self._max_on_demand = max(1, max_on_demand)
        self._failures: dict[tuple[str, int], str] = {}  # (name, version) -> why it did not load here
        self._failed_at: dict[tuple[str, int], float] = {}
        self._refresh_errors: dict[str, str] = {}  # model -> the unexpected error its last refresh raised
        self.loads = 0
        self.unloads = 0
        self.started = False  # the first full refresh (the start's load pass) has finished
        self.registry_error: str | None = None  # why the last registry read failed; None when it answered

    # learning what is live ---------------------------------------------------------------

    def refresh(self, name: str | None = None) -> None:
        """Re-read live states (all, or one model) and load new production versions before switching."""
        with self._refresh_lock:
            fresh = self._read_registry()
            self._view = fresh
            names = set(self._states) | set(fresh) if name is None else {name}
            for model in names:
                try:
                    self._switch(model, fresh.get(model))
                except Unavailable:
                    raise
                except Exception as exc:  # a bug with one model (ours or a plugin's) must not stop the others' polls
                    self._refresh_failed(model, exc)
                else:
                    self._refresh_errors.pop(model, None)
            self._retire_unused()
            if name is None:
                self.started = True

    def _refresh_failed(self, model: str, exc: Exception) -> None:
        # With its traceback once per new error, not on every poll tick while it lasts.
        text = f"{type(exc).__name__}: {exc}"
        first = self._refresh_errors.get(model) != text
        self._refresh_errors[model] = text
        log.log(logging.ERROR if first else logging.DEBUG, "refreshing %s failed; the other models were refreshed, "
                "the next poll retries it", model, exc_info=first)

    def _read_registry(self) -> dict[str, LiveState]:
        """Every model's live state; an outage is remembered for the readiness probe, which must not ask SQL."""
        try:
            fresh = self._registry.live_states()
        except Unavailable as exc:
            self.registry_error = exc.cause
            raise
        self.registry_error = None
        return fresh

    def _switch(self, model: str, state: LiveState | None) -> None:
        """Serve ``state`` for ``model`` once its production version is loaded here (or drop a deleted model)."""
        if state is None:
            self._states.pop(model, None)
            self._forget_failures(model)
            return
        if self._states.get(model) == state:
            return
        live = state.aliases.get(PRODUCTION)
        if live is not None:
            try:
                self._ensure_loaded(state, live, retry_failed=True)
            except (VersionUnavailable, NotFound, Conflict) as exc:
                # Keep serving what we had (with its own generation) rather than nothing: the
                # answers say which version computed them and the replica status shows the lag.
                # A load failure was logged once by _failed; each poll retries it quietly.
                level = logging.DEBUG if isinstance(exc, VersionUnavailable) else logging.ERROR
                log.log(level, "cannot switch %s to v%s here, keeping the previous state: %s", model, live, exc)
                return
        self._preload_roles(state, live)
        self._states[model] = state  # the switch: one assignment, the new version already loaded
        self._forget_failures(model, keep=serving_roles(state))

    def _preload_roles(self, state: LiveState, live: int | None) -> None:
        """Load the canary arms', the shadow's and a guard's fallback version before the switch (best effort).

        Their failure does not hold the switch up: production is what must serve. A canary arm that
        cannot load here answers 503 naming the reason (recorded by ``_failed``), and polls retry it.
        """
        for number in sorted(serving_roles(state) - set(state.aliases.values()) | _arm_versions(state)):
            if number == live:
                continue
            try:
                self._ensure_loaded(state, number, retry_failed=True)
            except (VersionUnavailable, NotFound, Conflict) as exc:
                log.debug("cannot preload %s v%d here: %s", state.name, number, exc)

    def states(self) -> dict[str, LiveState]:
        """Model name -> the live state this replica serves."""
        return dict(self._states)

    def failures(self) -> dict[tuple[str, int], str]:
        """(name, version) -> why that version could not be loaded here (until it loads)."""
        return dict(self._failures)

    def registry_view(self) -> dict[str, LiveState]:
        """Model name -> the live state the registry gave at the last refresh (what should be served)."""
        return dict(self._view)

    def knows(self, name: str) -> bool:
        """Whether ``name`` is a model of the registry as this replica last read it (no I/O: metrics labels)."""
        return name in self._states or name in self._view

    def unserved(self) -> dict[str, str]:
        """Model name -> why the production version the registry names failed to load here (no I/O: probes).

        A version still loading, or one the next poll switches to, is not a fault and is not listed.
        """
        gaps: dict[str, str] = {}
        for name, wanted in list(self._view.items()):
            live = wanted.aliases.get(PRODUCTION)
            reason = self._failures.get((name, live)) if live is not None else None
            if reason is None:
                continue
            served = self._states.get(name)
            serving = served.aliases.get(PRODUCTION) if served is not None else None
            instead = f"serving v{serving}" if serving is not None else "serving nothing"
            gaps[name] = f"v{live} cannot be loaded here ({instead}): {reason}"
        return gaps

    def report(self) -> dict[str, dict[str, Any]]:
        """Per model: the generation and alias -> version served, the versions loaded and those that failed."""
        models: dict[str, dict[str, Any]] = {}

        def entry(name: str) -> dict[str, Any]:
            return models.setdefault(name, {"generation": None, "serving": {}, "loaded": [], "failed": []})

        for name, state in list(self._states.items()):
            entry(name).update(generation=state.generation, serving=dict(state.aliases))
        for (name, number, _, device), loaded in sorted(list(self._loaded.items())):
            entry(name)["loaded"].append({"version": number, "device": device,
                                          "memory_bytes": _memory_bytes(loaded.model)})
        for (name, number), reason in sorted(list(self._failures.items())):
            entry(name)["failed"].append({"version": number, "reason": reason})
        return models

    # serving ------------------------------------------------------------------------------

    def resolve_loaded(self, name: str, version: int | None = None, alias: str | None = None) -> Servable | None:
        """The servable when it is already loaded (no I/O: safe on the event loop), else None."""
        state = self._states.get(name)
        if state is None:
            return None
        if version is None:
            number = state.aliases.get(alias or PRODUCTION)
            if number is None:  # resolve() decides: the registry's latest view, or no such alias
                return None
        else:
            number = version
        key = self._index.get((name, number))
        loaded = self._loaded.get(key) if key else None
        if loaded is None:
            return None
        loaded.last_used = self._clock()
        return Servable(state=state, version=number, sha256=loaded.record.sha256, model=loaded.model)

    def resolve(self, name: str, version: int | None = None, alias: str | None = None) -> Servable:
        """Like resolve_loaded, loading the version first when needed (blocking: run it in a thread)."""
        found = self.resolve_loaded(name, version, alias)
        if found is not None:
            return found
        # A model the registry has but this replica never switched to (its production version cannot
        # load here) exists: its requests get VersionUnavailable, never "does not exist". So does one
        # whose live state here predates the alias (created, then promoted to a version that cannot
        # load here): the registry's latest view says which version is meant.
        state = self._states.get(name)
        if state is None or (version is None and (alias or PRODUCTION) not in state.aliases):
            state = self._view.get(name) or state or self._look_up_unknown(name)
        number = self._number(state, version, alias)
        loaded = self._ensure_loaded(state, number, retry_failed=False)
        return Servable(state=state, version=number, sha256=loaded.record.sha256, model=loaded.model)

    def _look_up_unknown(self, name: str) -> LiveState:
        """A name this replica does not know: O(1) memory, and one registry read per interval for all such names."""
        if is_model_name(name) and not self._unknown.recently_missing(name) and self._unknown.may_read():
            if name in self._read_registry():  # created on another replica a moment ago: switch to it
                self.refresh(name)
            else:
                self._unknown.missing(name)
        state = self._states.get(name) or self._view.get(name)
        if state is not None:
            return state
        if self.registry_error is not None:  # "does not exist" would be a guess while the registry is down
            raise Unavailable(self.registry_error)
        raise NotFound("model", name)

    def preload(self, name: str, version: int) -> None:
        """Load ``version`` here before a promotion commits it; VersionUnavailable says why it cannot."""
        state = self._states.get(name) or self._view.get(name)
        if state is None:
            self.refresh(name)
            state = self._states.get(name) or self._view.get(name)
            if state is None:
                raise NotFound("model", name)
        self._ensure_loaded(state, version, retry_failed=True)

    @staticmethod
    def _number(state: LiveState, version: int | None, alias: str | None) -> int:
        if version is not None:
            return version
        alias = alias or PRODUCTION
        number = state.aliases.get(alias)
        if number is None:
            if alias == PRODUCTION:
                raise NoProductionVersion(state.name)
            raise NotFound("alias", state.name, alias)
        return number

    # loading and unloading ----------------------------------------------------------------

    def _ensure_loaded(self, state: LiveState, number: int, *, retry_failed: bool) -> _Loaded:
        """The version loaded on the state's device; VersionUnavailable (recorded) when it cannot load.

        ``retry_failed=False`` (a request) answers a failure younger than FAILED_RETRY_SECONDS
        from the record instead of loading again.
        """
        which = (state.name, number)
        failed_at = self._failed_at.get(which)
        if (not retry_failed and failed_at is not None and which in self._failures
                and self._clock() - failed_at < FAILED_RETRY_SECONDS):  # before any SQL: a flood stays cheap
            raise VersionUnavailable(state.name, number, self._failures[which])
        record = self._registry.get_version(state.name, number)
        if record.status != "ready":
            raise Conflict(f"version {number} of {state.name!r} failed validation and cannot serve: {record.error}")
        try:
            device = self._device(state)
        except PluginError as exc:  # the runtime is not allowed here, or the device does not exist here
            raise self._failed(state, number, exc) from exc
        key = (state.name, number, record.sha256, device)
        with self._locks_guard:
            lock = self._load_locks.setdefault(key, threading.Lock())
        with lock:  # one load per version, however many requests ask at once
            loaded = self._loaded.get(key)
            if loaded is None:
                try:
                    model = self._load(state, record, device)
                except PluginError as exc:
                    raise self._failed(state, number, exc) from exc
                loaded = _Loaded(model=model, record=record, device=device, last_used=self._clock())
                self._loaded[key] = loaded
                if self._gc_freeze:  # the model's objects live as long as it does: out of the GC's passes
                    freeze_long_lived()
                self._failures.pop(which, None)
                self._failed_at.pop(which, None)
                self.loads += 1
                new_copy = True
            else:
                new_copy = False
            # Requests use the copy on the state's current device (the old one retires after its grace).
            self._index[which] = key
            loaded.last_used = self._clock()
        if new_copy:
            self._limit_on_demand(keep=key)
        return loaded

    def _device(self, state: LiveState) -> str:
        runtime = self._plugins.get(state.runtime)
        try:
            offered = runtime.devices()
        except Exception as exc:  # a plugin's own bug: this model cannot load here, the others still do
            raise PluginError.caused_by(f"runtime {state.runtime!r} raised {type(exc).__name__} listing its devices",
                                        exc) from exc
        return resolve_device(state.device or self._default_device, offered)

    def _failed(self, state: LiveState, number: int, exc: PluginError) -> VersionUnavailable:
        """Record why ``number`` cannot load here (without server paths) and the error to raise."""
        reason = public_reason(str(exc))
        # Once per new reason (polls retry a broken version every few seconds), with the full text.
        level = logging.DEBUG if self._failures.get((state.name, number)) == reason else logging.ERROR
        log.log(level, "%s v%d cannot be loaded on this replica: %s", state.name, number, exc)
        self._failures[(state.name, number)] = reason
        self._failed_at[(state.name, number)] = self._clock()
        return VersionUnavailable(state.name, number, reason)

    def _load(self, state: LiveState, record: VersionRecord, device: str) -> LoadedModel:
        runtime = self._plugins.get(state.runtime)
        signature = Signature.from_dict(record.signature) if record.signature else None
        try:  # a local file with verified bytes (an object store's go through this replica's bounded cache)
            path = self._registry.artifacts.fetch(record.sha256)
        except ArtifactUnavailable as exc:  # missing, corrupt or unreachable: this version's 503, with why
            raise PluginError(str(exc)) from exc
        log.info("loading %s v%d (%s) on %s", state.name, record.version, record.format, device)
        options = LoadOptions(format=record.format, signature=signature, intra_op_threads=self._intra_op_threads)
        try:
            return runtime.load(path, device, options)
        except PluginError:
            raise
        except Exception as exc:  # a plugin's own bug is one version that cannot serve, not a stopped refresh
            raise PluginError.caused_by(f"runtime {state.runtime!r} raised {type(exc).__name__}", exc) from exc

    def _forget_failures(self, name: str, keep: Collection[int] = ()) -> None:
        """Drop the failures of ``name`` no alias points at any more (all of them when it is gone)."""
        for key in [k for k in list(self._failures) if k[0] == name and k[1] not in keep]:  # list(): requests add
            self._failures.pop(key, None)
            self._failed_at.pop(key, None)

    def _retire_unused(self) -> None:
        """Note which copies stopped being live, and unload those whose grace period is over."""
        now = self._clock()
        for key, loaded in list(self._loaded.items()):
            name, number = key[0], key[1]
            state = self._states.get(name)
            if state is not None and number in serving_roles(state) and self._index.get((name, number)) == key:
                loaded.live, loaded.replaced_at = True, None
                continue
            if loaded.live:
                loaded.live, loaded.replaced_at = False, now  # replaced just now: the grace starts here
            since = loaded.replaced_at if loaded.replaced_at is not None else loaded.last_used
            if now - since >= self._grace:
                self._unload(key)

    def _aliased(self, name: str, number: int) -> bool:
        """Whether an alias points at the version, as served here or as the registry last said (about to be)."""
        return any(state is not None and number in serving_roles(state)
                   for state in (self._states.get(name), self._view.get(name)))

    def _limit_on_demand(self, keep: LoadedKey) -> None:
        """Past ``max_on_demand`` copies that no alias points at and that were never replaced, unload the LRU."""
        with self._locks_guard:  # one eviction at a time: two loads finishing together must not pick alike
            on_demand = [(loaded.last_used, key) for key, loaded in list(self._loaded.items())
                         if loaded.replaced_at is None and not loaded.live and not self._aliased(key[0], key[1])]
            excess = len(on_demand) - self._max_on_demand
            victims = [key for _, key in sorted(on_demand) if key != keep][:max(0, excess)]
        for key in victims:
            log.info("unloading %s v%d: more than %d versions loaded on demand (MODELREG_MAX_ON_DEMAND_VERSIONS)",
                     key[0], key[1], self._max_on_demand)
            self._unload(key)

    def _unload(self, key: LoadedKey) -> None:
        loaded = self._loaded.pop(key, None)
        if loaded is None:
            return
        if self._index.get(key[:2]) == key:
            del self._index[key[:2]]
        log.info("unloading %s v%d", key[0], key[1])
        try:
            loaded.model.unload()
        except Exception:  # a plugin failing to unload must not stop the sweep
            log.exception("unloading %s v%d failed", key[0], key[1])
        del loaded
        if self._gc_freeze:
            collect_unloaded()
        self.unloads += 1

    def sweep(self) -> None:
        """Periodic: unload what the grace period has released."""
        with self._refresh_lock:
            self._retire_unused()

    def loaded_versions(self) -> list[tuple[str, int]]:
        """Every (name, version) loaded here, sorted."""
        return sorted((k[0], k[1]) for k in list(self._loaded))  # a load may add one meanwhile

    def close(self) -> None:
        """Unload everything (shutdown)."""
        for key in list(self._loaded):
            self._unload(key)


def serving_roles(state: LiveState) -> set[int]:
    """The versions a model's state has a use for: every alias's (canary arms are aliases), the shadow's,
    and while a guard runs the version it would roll back to (so the rollback is instant)."""
    roles = set(state.aliases.values())
    if state.shadow is not None:
        roles.add(state.shadow.version)
    if state.guard is not None and state.guard.replaced is not None:
        roles.add(state.guard.replaced)
    return roles


def _arm_versions(state: LiveState) -> set[int]:
    """The versions a traffic split sends requests to."""
    if not state.traffic:
        return set()
    return {state.aliases[alias] for alias in state.traffic if alias in state.aliases}


def _memory_bytes(model: LoadedModel) -> int | None:
    """What the model says it holds, when it says: a plugin's failing property must not break the report."""
    try:
        memory = getattr(model, "memory_bytes", None)
    except Exception:
        return None
    return memory if isinstance(memory, int) else None
