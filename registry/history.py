"""The one way a change is written into the append-only history."""

from __future__ import annotations

from sqlalchemy.orm import Session

from modelreg.registry.tables import HistoryEvent, Model

MAX_REASON_CHARS = 500


def record(session: Session, model: Model, action: str, actor: str, *, alias: str | None = None,
           from_version: int | None = None, to_version: int | None = None, reason: str | None = None) -> None:
    """Add a history row for ``model`` (at its current generation) to the transaction."""
    if reason is not None:
        # Bounded, and storable: a lone surrogate cannot be encoded by either database.
        reason = reason[:MAX_REASON_CHARS].encode("utf-8", "replace").decode("utf-8")
    session.add(HistoryEvent(model_id=model.id, model_name=model.name, action=action, alias=alias,
                             from_version=from_version, to_version=to_version, generation=model.generation,
                             actor=actor, reason=reason))
