"""Built-in "pipeline": a model made of registered models, run one after the other by the server.

The artifact is data, a small JSON document (format ``pipeline``)::

    {"stages": [{"model": "minilm"}, {"model": "sentiment-head", "alias": "production"}]}

Each stage names a model and, optionally, an alias (default ``production``) or a pinned
``version``. The runtime only reads and checks that list; the serving engine runs the stages
(``plugins.base.Composite``), each through its own cache and batcher.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from modelreg.names import ALIAS_MAX, MODEL_NAME_MAX, is_alias, is_model_name
from modelreg.plugins.base import LoadOptions, PluginError, Signature, StageRef

FORMAT = "pipeline"
MAX_STAGES = 16
MAX_BYTES = 64 * 1024  # a list of names: anything bigger is not a pipeline
_STAGE_KEYS = frozenset({"model", "alias", "version"})
_EXAMPLE = '{"stages": [{"model": "embedder"}, {"model": "classifier", "alias": "production"}]}'


class PipelineRuntime:
    """Loads pipeline documents: an ordered list of registered models."""

    name: ClassVar[str] = "pipeline"
    formats: ClassVar[frozenset[str]] = frozenset({FORMAT})

    def devices(self) -> list[str]:
        """None: a pipeline runs nothing itself, each stage runs on its own model's device."""
        return []

    def load(self, artifact: Path, device: str, options: LoadOptions) -> PipelineModel:
        """Read and check the stage list; the signature is the one recorded at upload (if any)."""
        if options.format not in self.formats:
            raise PluginError(f"the pipeline runtime loads {FORMAT} documents, not {options.format!r}")
        if artifact.stat().st_size > MAX_BYTES:
            raise PluginError(f"a pipeline document is at most {MAX_BYTES} bytes; "
                              f"this one is {artifact.stat().st_size}")
        try:
            document = json.loads(artifact.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise PluginError.caused_by(f"a pipeline is a JSON document like {_EXAMPLE}", exc) from exc
        signature = options.signature or Signature(inputs=(), outputs=())
        return PipelineModel(parse_stages(document), signature, device)


class PipelineModel:
    """The stage list; ``predict`` is never called, since the server runs the stages."""

    def __init__(self, stages: tuple[StageRef, ...], signature: Signature, device: str) -> None:
        self.pipeline_stages = stages
        self.signature = signature
        self.device = device

    def predict(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Refuse: only the serving engine, which can reach the stages, runs a pipeline."""
        raise PluginError("a pipeline runs nothing itself; the server runs its stages "
                          f"({', '.join(s.describe() for s in self.pipeline_stages)})")

    def unload(self) -> None:
        """Nothing to free: the stages are models of their own."""


def parse_stages(document: Any) -> tuple[StageRef, ...]:
    """The stages of a pipeline document; PluginError says what is wrong, with an example."""
    if not isinstance(document, dict) or set(document) != {"stages"}:
        raise PluginError(f'a pipeline is a JSON object with one key, "stages": {_EXAMPLE}')
    raw = document["stages"]
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_STAGES:
        raise PluginError(f'"stages" must be a list of 1 to {MAX_STAGES} stages: {_EXAMPLE}')
    return tuple(_stage(index, item) for index, item in enumerate(raw, 1))


def _stage(index: int, item: Any) -> StageRef:
    where = f"stage {index}"
    if not isinstance(item, dict) or "model" not in item or set(item) - _STAGE_KEYS:
        raise PluginError(f'{where} must be an object with "model" and optionally "alias" or "version", '
                          f"not {json.dumps(item)[:80]}")
    model, alias, version = item["model"], item.get("alias"), item.get("version")
    if not is_model_name(model):
        raise PluginError(f"{where}: model {model!r} is not a model name "
                          f"(1-{MODEL_NAME_MAX} letters, digits, '-', '_', '.')")
    if alias is not None and version is not None:
        raise PluginError(f'{where} ({model}): give "alias" or "version", not both')
    if alias is not None and not is_alias(alias):
        raise PluginError(f"{where} ({model}): alias {alias!r} is not an alias name "
                          f"(1-{ALIAS_MAX} letters, digits, '-', '_', '.')")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
        raise PluginError(f"{where} ({model}): version must be a positive integer, not {version!r}")
    return StageRef(model=model, alias=alias, version=version)
