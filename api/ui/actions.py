"""The console's changes: each one names its confirmation question and calls the admin route's own function.

Run in a worker thread (the admin functions are synchronous and tell the other replicas through
``Services.changed``). Form values are strings; they are turned into the admin API's own request
bodies (api/schemas.py), so the same limits apply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import ValidationError

from modelreg.api.auth import Principal
from modelreg.api.routes import admin
from modelreg.api.schemas import AliasSet, Guard, Promote, Rollback, ShadowSet, TrafficSet
from modelreg.api.services import Services
from modelreg.registry.errors import Invalid

Fields = dict[str, str]
WEIGHT_FIELD = "weight:"  # traffic form: one number field per alias, "weight:<alias>"


def _optional_int(fields: Fields, key: str, what: str) -> int | None:
    raw = fields.get(key, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or len(raw) > 10:
        raise Invalid(f"{what} must be a whole number, got {raw[:40]!r}")
    return int(raw)


def _int(fields: Fields, key: str, what: str) -> int:
    value = _optional_int(fields, key, what)
    if value is None:
        raise Invalid(f"choose {what}")
    return value


def _number(fields: Fields, key: str, what: str) -> float:
    raw = fields.get(key, "").strip()
    try:
        return float(raw)
    except ValueError:
        raise Invalid(f"{what} must be a number, got {raw[:40]!r}") from None


def weights_of(fields: Fields) -> dict[str, int]:
    """The split the traffic form asks for: alias -> weight, empty fields left out."""
    weights: dict[str, int] = {}
    for key in fields:  # in the form's order
        if key.startswith(WEIGHT_FIELD) and fields[key].strip():
            alias = key[len(WEIGHT_FIELD):]
            weights[alias] = _int(fields, key, f"the weight of {alias!r}")
    if not weights:
        raise Invalid("give at least one alias a weight")
    return weights


def _guard_of(fields: Fields) -> Guard | None:
    """The promote form's optional guard: none unless a limit (error rate or p99) is given."""
    error_rate = fields.get("guard_error_rate", "").strip()
    p99 = fields.get("guard_p99_ms", "").strip()
    if not error_rate and not p99:
        return None
    try:
        return Guard(window_seconds=_optional_int(fields, "guard_window", "the guard's window") or 300,
                     min_requests=_optional_int(fields, "guard_min_requests", "the guard's minimum requests"),
                     max_error_rate=_number(fields, "guard_error_rate", "the error rate") if error_rate else None,
                     max_p99_ms=_number(fields, "guard_p99_ms", "the p99 limit") if p99 else None)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise Invalid(f"guard: {problems}") from None


def _promote(services: Services, name: str, fields: Fields, who: Principal) -> str:
    version = _int(fields, "version", "a version to promote")
    guard = _guard_of(fields)
    answer = admin.promote(name=name, body=Promote(version=version, guard=guard), registry=services.registry,
                           services=services, admin=who)
    watched = "" if guard is None else f" Guarded for {guard.window_seconds}s: a breach rolls it back."
    return f"{name} v{answer['production']} is production (was {_v(answer.get('previous'))}); " \
           f"cache generation {answer['generation']}.{watched}"


def _rollback(services: Services, name: str, fields: Fields, who: Principal) -> str:
    version = _optional_int(fields, "version", "a version")
    answer = admin.rollback(name=name, registry=services.registry, services=services, admin=who,
                            body=Rollback(version=version))
    return f"Rolled back {name} to v{answer['production']} (was {_v(answer.get('previous'))}); " \
           f"cache generation {answer['generation']}."


def _set_alias(services: Services, name: str, fields: Fields, who: Principal) -> str:
    alias = fields.get("alias", "").strip()
    version = _int(fields, "version", "a version for the alias")
    admin.set_alias(name=name, alias=alias, body=AliasSet(version=version), registry=services.registry,
                    services=services, admin=who)
    return f"Alias {alias} of {name} points at v{version}."


def _delete_alias(services: Services, name: str, fields: Fields, who: Principal) -> str:
    alias = fields.get("alias", "").strip()
    admin.delete_alias(name=name, alias=alias, registry=services.registry, services=services, admin=who)
    return f"Alias {alias} of {name} removed."


def _purge(services: Services, name: str, fields: Fields, who: Principal) -> str:
    answer = admin.purge_cache(name=name, registry=services.registry, services=services, admin=who)
    return f"Every cached answer of {name} dropped: cache generation {answer['generation']}."


def _set_traffic(services: Services, name: str, fields: Fields, who: Principal) -> str:
    weights = weights_of(fields)
    admin.set_traffic(name=name, body=TrafficSet(weights=weights), registry=services.registry, services=services,
                      admin=who)
    return f"Traffic of {name}: " + ", ".join(f"{a} {w}%" for a, w in weights.items()) + "."


def _clear_traffic(services: Services, name: str, fields: Fields, who: Principal) -> str:
    admin.clear_traffic(name=name, registry=services.registry, services=services, admin=who)
    return f"Traffic split of {name} cleared: every request goes to production."


def _set_shadow(services: Services, name: str, fields: Fields, who: Principal) -> str:
    version = _int(fields, "version", "a version to shadow")
    percent = _number(fields, "percent", "the share of requests")
    admin.set_shadow(name=name, body=ShadowSet(version=version, percent=percent), registry=services.registry,
                     services=services, admin=who)
    return f"v{version} shadows {percent:g}% of {name}'s production requests."


def _clear_shadow(services: Services, name: str, fields: Fields, who: Principal) -> str:
    admin.clear_shadow(name=name, registry=services.registry, services=services, admin=who)
    return f"Shadow of {name} stopped."


def _v(version: object) -> str:
    return f"v{version}" if version is not None else "none"


@dataclass(frozen=True)
class Action:
    title: str
    call: Callable[[Services, str, Fields, Principal], str]
    ask: Callable[[str, Fields], str]
    danger: bool = False

    def question(self, name: str, fields: Fields) -> str:
        return self.ask(name, fields)


def _split_question(name: str, fields: Fields) -> str:
    weights = weights_of(fields)
    return f"Send {name}'s requests " + ", ".join(f"{w}% to {a}" for a, w in weights.items()) + "?"


ACTIONS: dict[str, Action] = {
    "promote": Action("Promote", _promote,
                      lambda n, f: f"Make {n} v{f.get('version', '?')} production? Answers it computed as a shadow or "
                                   "canary are served at once, others are computed on first use; the current "
                                   "version stays loaded for a quick rollback."),
    "rollback": Action("Roll back", _rollback,
                       lambda n, f: f"Roll {n} back to v{f['version']}?" if f.get("version")
                       else f"Roll {n} back to the version production had before?", danger=True),
    "alias": Action("Set alias", _set_alias,
                    lambda n, f: f"Point alias {f.get('alias', '?')!r} of {n} at v{f.get('version', '?')}?"),
    "unalias": Action("Remove alias", _delete_alias,
                      lambda n, f: f"Remove alias {f.get('alias', '?')!r} of {n}?", danger=True),
    "purge": Action("Purge cache", _purge,
                    lambda n, f: f"Drop every cached answer of {n}? The next requests are computed again.",
                    danger=True),
    "traffic": Action("Set traffic split", _set_traffic, _split_question),
    "traffic-clear": Action("Clear traffic split", _clear_traffic,
                            lambda n, f: f"Send all of {n}'s requests to production again?", danger=True),
    "shadow": Action("Set shadow", _set_shadow,
                     lambda n, f: f"Also run v{f.get('version', '?')} on {f.get('percent', '?')}% of {n}'s "
                                  "production requests (its answers are compared, never returned)?"),
    "shadow-clear": Action("Stop shadow", _clear_shadow, lambda n, f: f"Stop shadowing {n}?", danger=True),
}
