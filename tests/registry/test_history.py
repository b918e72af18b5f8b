"""History: who changed what and when, oldest first, kept even after a deletion."""

from __future__ import annotations

from modelreg.registry import RegistryService
from tests.registry.conftest import Upload


def test_history_records_every_change_in_order_with_its_actor(registry: RegistryService, upload: Upload) -> None:
    registry.create_model("m", "onnx", actor="alice")
    upload("m"), upload("m")
    registry.promote("m", 1, actor="alice")
    registry.promote("m", 2, actor="bob")
    registry.rollback("m", actor="carol")
    registry.set_alias("m", "staging", 2, actor="dave")
    registry.purge_cache("m", actor="erin")
    rows = [(h.action, h.from_version, h.to_version, h.actor) for h in registry.history("m")]
    assert rows == [
        ("create", None, None, "alice"),
        ("promote", None, 1, "alice"),
        ("promote", 1, 2, "bob"),
        ("rollback", 2, 1, "carol"),
        ("alias", None, 2, "dave"),
        ("purge", 1, 1, "erin"),
    ]
    times = [h.at for h in registry.history("m")]
    assert times == sorted(times)
