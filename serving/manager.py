"""ModelManager: which version of each model is live here, loaded before it is switched to."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

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

log = logging.getLogger("modelreg.manager")
MISS_REFRESH_SECONDS = 1.0


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
    last_used: float  # on the manager's clock


class ModelManager:
    """Keeps live versions loaded, swaps atomically, unloads replaced versions after a grace period."""

    def __init__(self, registry: RegistryService, plugins: PluginSet, *, default_device: str = "auto",
                 grace_seconds: float = 60.0, intra_op_threads: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._registry = registry
        self._plugins = plugins
        self._default_device = default_device
        self._grace = grace_seconds
        self._intra_op_threads = intra_op_threads
        self._clock = clock
        self._states: dict[str, LiveState] = {}
        self._loaded: dict[tuple[str, int, str], _Loaded] = {}
        self._index: dict[tuple[str, int], tuple[str, int, str]] = {}  # (name, version) -> loaded key
        self._load_locks: dict[tuple[str, int, str], threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._last_miss_refresh: dict[str, float] = {}
        self._failures: dict[tuple[str, int], str] = {}  # (name, version) -> why it did not load here
        self.loads = 0
        self.unloads = 0

    # learning what is live ---------------------------------------------------------------

    def refresh(self, name: str | None = None) -> None:
        """Re-read live states (all, or one model) and load new production versions before switching."""
        with self._refresh_lock:
            fresh = self._registry.live_states()
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
                        self._ensure_loaded(state, live)
                    except (PluginError, NotFound, Conflict) as exc:
                        # Keep serving what we had (with its own generation) rather than nothing.
                        log.error("cannot load %s v%s here, keeping the previous state: %s", model, live, exc)
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
        state = self._states.get(name)
        if state is None:
            now = self._clock()
            if now - self._last_miss_refresh.get(name, -1e9) >= MISS_REFRESH_SECONDS:
                self._last_miss_refresh[name] = now
                self.refresh(name)  # created on another replica a moment ago?
            state = self._states.get(name)
            if state is None:
                raise NotFound("model", name)
        number = self._number(state, version, alias)
        loaded = self._ensure_loaded(state, number)
        return Servable(state=state, version=number, sha256=loaded.record.sha256, model=loaded.model)

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

    def _ensure_loaded(self, state: LiveState, number: int) -> _Loaded:
        record = self._registry.get_version(state.name, number)
        if record.status != "ready":
            raise Conflict(f"version {number} of {state.name!r} failed validation and cannot serve: {record.error}")
        key = (state.name, number, record.sha256)
        with self._locks_guard:
            lock = self._load_locks.setdefault(key, threading.Lock())
        with lock:  # one load per version, however many requests ask at once
            loaded = self._loaded.get(key)
            if loaded is None:
                try:
                    model = self._load(state, record)
                except PluginError as exc:
                    self._failures[(state.name, number)] = str(exc)
                    raise
                loaded = _Loaded(model=model, record=record, last_used=self._clock())
                self._loaded[key] = loaded
                self._index[(state.name, number)] = key
                self._failures.pop((state.name, number), None)
                self.loads += 1
            loaded.last_used = self._clock()
            return loaded

    def _load(self, state: LiveState, record: VersionRecord) -> LoadedModel:
        runtime = self._plugins.get(state.runtime)
        device = resolve_device(state.device or self._default_device, runtime.devices())
        signature = Signature.from_dict(record.signature) if record.signature else None
        path = self._registry.artifacts.path(record.sha256)
        log.info("loading %s v%d (%s) on %s", state.name, record.version, record.format, device)
        options = LoadOptions(format=record.format, signature=signature, intra_op_threads=self._intra_op_threads)
        try:
            return runtime.load(path, device, options)
        except PluginError:
            raise
        except Exception as exc:  # a plugin's own bug is one version that cannot serve, not a stopped refresh
            raise PluginError.caused_by(f"runtime {state.runtime!r} could not load {state.name} v{record.version}",
                                        exc) from exc

    def _forget_failures(self, name: str, keep: Collection[int] = ()) -> None:
        """Drop the failures of ``name`` no alias points at any more (all of them when it is gone)."""
        for key in [k for k in list(self._failures) if k[0] == name and k[1] not in keep]:  # list(): requests add
            self._failures.pop(key, None)

    def _retire_unused(self) -> None:
        """Unload versions no alias points at and nobody used within the grace period."""
        now = self._clock()
        for key, loaded in list(self._loaded.items()):
            name, number, sha = key
            state = self._states.get(name)
            pinned = state is not None and number in state.aliases.values()
            if pinned or now - loaded.last_used < self._grace:
                continue
            self._unload(key)

    def _unload(self, key: tuple[str, int, str]) -> None:
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
