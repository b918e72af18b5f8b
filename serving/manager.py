"""ModelManager: which version of each model is live here, loaded before it is switched to."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from modelreg.plugins.base import LoadedModel, LoadOptions, PluginError, Signature, resolve_device
from modelreg.plugins.discovery import PluginSet
from modelreg.registry import (
    PRODUCTION,
    Conflict,
    LiveState,
    NoProductionVersion,
    NotFound,
    RegistryService,
    VersionRecord,
)
from modelreg.serving.errors import ServingError

log = logging.getLogger("modelreg.manager")
MISS_REFRESH_SECONDS = 1.0
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
    promotion's check) is unloaded ``grace_seconds`` after its last use.
    """

    def __init__(self, registry: RegistryService, plugins: PluginSet, *, default_device: str = "auto",
                 grace_seconds: float = 60.0, intra_op_threads: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._registry = registry
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
        self._last_miss_refresh: dict[str, float] = {}
        self._failures: dict[tuple[str, int], str] = {}  # (name, version) -> why it did not load here
        self._failed_at: dict[tuple[str, int], float] = {}
        self.loads = 0
        self.unloads = 0

    # learning what is live ---------------------------------------------------------------

    def refresh(self, name: str | None = None) -> None:
        """Re-read live states (all, or one model) and load new production versions before switching."""
        with self._refresh_lock:
            fresh = self._registry.live_states()
            self._view = fresh
            names = set(self._states) | set(fresh) if name is None else {name}
            for model in names:
                state = fresh.get(model)
                if state is None:
                    self._states.pop(model, None)
                    self._forget_failures(model)
                    continue
                old = self._states.get(model)
                if old == state:
                    continue
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
                        continue
                self._states[model] = state  # the switch: one assignment, the new version already loaded
                self._forget_failures(model, keep=set(state.aliases.values()))
            self._retire_unused()

    def live_generations(self) -> dict[str, int]:
        """Model name -> current cache generation, for the reaper."""
        return {name: state.generation for name, state in self._states.items()}

    def states(self) -> dict[str, LiveState]:
        """Model name -> the live state this replica serves."""
        return dict(self._states)

    def failures(self) -> dict[tuple[str, int], str]:
        """(name, version) -> why that version could not be loaded here (until it loads)."""
        return dict(self._failures)

    def registry_view(self) -> dict[str, LiveState]:
        """Model name -> the live state the registry gave at the last refresh (what should be served)."""
        return dict(self._view)

    def report(self) -> dict[str, dict[str, Any]]:
        """Per model: the generation and alias -> version served, the versions loaded and those that failed."""
        models: dict[str, dict[str, Any]] = {}

        def entry(name: str) -> dict[str, Any]:
            return models.setdefault(name, {"generation": None, "serving": {}, "loaded": [], "failed": []})

        for name, state in list(self._states.items()):
            entry(name).update(generation=state.generation, serving=dict(state.aliases))
        for (name, number, _, device), loaded in sorted(list(self._loaded.items())):
            memory = getattr(loaded.model, "memory_bytes", None)
            entry(name)["loaded"].append({"version": number, "device": device,
                                          "memory_bytes": memory if isinstance(memory, int) else None})
        for (name, number), reason in sorted(list(self._failures.items())):
            entry(name)["failed"].append({"version": number, "reason": reason})
        return models

    # serving ------------------------------------------------------------------------------

    def resolve_loaded(self, name: str, version: int | None = None, alias: str | None = None) -> Servable | None:
        """The servable when it is already loaded (no I/O: safe on the event loop), else None."""
        state = self._states.get(name)
        if state is None:
            return None
        number = self._number(state, version, alias)
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
        # load here) exists: its requests get VersionUnavailable, never "does not exist".
        state = self._states.get(name) or self._view.get(name)
        if state is None:
            now = self._clock()
            if now - self._last_miss_refresh.get(name, -1e9) >= MISS_REFRESH_SECONDS:
                self._last_miss_refresh[name] = now
                self.refresh(name)  # created on another replica a moment ago?
            state = self._states.get(name) or self._view.get(name)
            if state is None:
                raise NotFound("model", name)
        number = self._number(state, version, alias)
        loaded = self._ensure_loaded(state, number, retry_failed=False)
        return Servable(state=state, version=number, sha256=loaded.record.sha256, model=loaded.model)

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
                self._failures.pop(which, None)
                self._failed_at.pop(which, None)
                self.loads += 1
            # Requests use the copy on the state's current device (the old one retires after its grace).
            self._index[which] = key
            loaded.last_used = self._clock()
            return loaded

    def _device(self, state: LiveState) -> str:
        runtime = self._plugins.get(state.runtime)
        return resolve_device(state.device or self._default_device, runtime.devices())

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
        if not self._registry.artifacts.exists(record.sha256):  # a replica with its own, stale artifact folder
            raise PluginError(f"its artifact (sha256 {record.sha256[:12]}…) is not in this replica's artifact store; "
                              "give every replica the same store (MODELREG_ARTIFACT_DIR on a shared filesystem)")
        path = self._registry.artifacts.path(record.sha256)
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
            if state is not None and number in state.aliases.values() and self._index.get((name, number)) == key:
                loaded.live, loaded.replaced_at = True, None
                continue
            if loaded.live:
                loaded.live, loaded.replaced_at = False, now  # replaced just now: the grace starts here
            since = loaded.replaced_at if loaded.replaced_at is not None else loaded.last_used
            if now - since >= self._grace:
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
        self.unloads += 1

    def sweep(self) -> None:
        """Periodic: unload what the grace period has released."""
        with self._refresh_lock:
            self._retire_unused()

    def loaded_versions(self) -> list[tuple[str, int]]:
        """Every (name, version) loaded here, sorted."""
        return sorted((k[0], k[1]) for k in self._loaded)

    def close(self) -> None:
        """Unload everything (shutdown)."""
        for key in list(self._loaded):
            self._unload(key)
