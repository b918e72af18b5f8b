"""The text-embedding pack: one zip of data (config.json, tokenizer.json, model.onnx), no code.

A registry version is one content-addressed file, so the model, its tokenizer and the way its
token vectors become a sentence vector travel together in a plain zip that ``export.py`` writes.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from modelreg.plugins import PluginError

FORMAT = "text-embedding"
FORMAT_VERSION = 1
CONFIG, TOKENIZER, MODEL = "config.json", "tokenizer.json", "model.onnx"
MEMBERS: tuple[str, ...] = (CONFIG, TOKENIZER, MODEL)  # the order export.py writes them in
POOLINGS: frozenset[str] = frozenset({"mean"})

# Read before decompressing anything, so a zip bomb is refused by its directory alone.
# model.onnx: protobuf cannot hold more than 2 GiB anyway.
_MAX_BYTES = {CONFIG: 1024**2, TOKENIZER: 64 * 1024**2, MODEL: 2 * 1024**3}
# Fixed metadata for every member, so the same inputs always give the same bytes (and sha256).
_EPOCH = (1980, 1, 1, 0, 0, 0)
_UNIX, _MODE = 3, 0o100644 << 16

_WHAT = (f"a {FORMAT} artifact is a zip holding exactly {', '.join(MEMBERS)} "
         "(write one with examples/text-embedding/export.py)")


@dataclass(frozen=True)
class PackConfig:
    """How token vectors become a sentence vector, and the sizes the runtime checks."""

    max_seq_length: int
    dim: int
    pooling: str = "mean"
    normalize: bool = True
    output: str = "last_hidden_state"
    source: str = ""

    def __post_init__(self) -> None:
        for name in ("max_seq_length", "dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling {self.pooling!r} is not supported; use one of {sorted(POOLINGS)}")
        if not isinstance(self.normalize, bool):
            raise ValueError(f"normalize must be true or false, not {self.normalize!r}")
        if not isinstance(self.output, str) or not self.output:
            raise ValueError("output must name the model's token-vector output, e.g. 'last_hidden_state'")
        if not isinstance(self.source, str):
            raise ValueError("source must be text")

    def to_json(self) -> str:
        """The config.json text: sorted keys, so it is byte-for-byte reproducible."""
        data = {"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(self)}
        return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> PackConfig:
        """Parse config.json; ValueError says which key is wrong."""
        data: Any = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("config.json must hold a JSON object")
        if data.pop("format", None) != FORMAT or data.pop("format_version", None) != FORMAT_VERSION:
            raise ValueError(f'config.json must say "format": "{FORMAT}", "format_version": {FORMAT_VERSION}')
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"config.json has unknown keys {unknown}; known: {sorted(cls.__dataclass_fields__)}")
        try:
            return cls(**data)
        except TypeError as exc:  # a required key is missing
            raise ValueError(f"config.json: {exc}") from exc


@dataclass(frozen=True)
class Pack:
    """The three members of a pack, read into memory."""

    config: PackConfig
    tokenizer_json: str
    model: bytes


def write_pack(path: Path, config: PackConfig, tokenizer_json: str, model: bytes) -> None:
    """Write a pack; the same arguments always give the same bytes."""
    contents = {CONFIG: config.to_json().encode(), TOKENIZER: tokenizer_json.encode(), MODEL: model}
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for name in MEMBERS:
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.create_system, info.external_attr = _UNIX, _MODE
            # ONNX weights are float data that deflate shrinks by ~9% at ~5 s per export and
            # ~0.5 s per load: stored as they are; the JSON members compress well.
            info.compress_type = zipfile.ZIP_STORED if name == MODEL else zipfile.ZIP_DEFLATED
            archive.writestr(info, contents[name])


def read_pack(path: Path) -> Pack:
    """Read and check a pack; PluginError says what is wrong with it."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            _check_members([info.filename for info in infos])
            for info in infos:
                if info.file_size > _MAX_BYTES[info.filename]:
                    raise PluginError(f"{info.filename} in this pack is {info.file_size} bytes; "
                                      f"at most {_MAX_BYTES[info.filename]} are accepted")
            raw = {name: archive.read(name) for name in MEMBERS}
    except zipfile.BadZipFile as exc:
        raise PluginError.caused_by(f"{_WHAT}; this file is not a readable zip", exc) from exc
    except (RuntimeError, NotImplementedError) as exc:  # encrypted members, unknown compression
        raise PluginError.caused_by(f"{_WHAT}; its members must be plain (stored or deflated)", exc) from exc
    try:
        config = PackConfig.from_json(raw[CONFIG].decode("utf-8"))
        tokenizer_json = raw[TOKENIZER].decode("utf-8")
    except (UnicodeDecodeError, ValueError) as exc:
        raise PluginError.caused_by(f"this {FORMAT} pack's JSON is not usable", exc) from exc
    return Pack(config=config, tokenizer_json=tokenizer_json, model=raw[MODEL])


def _check_members(names: list[str]) -> None:
    missing = sorted(set(MEMBERS) - set(names))
    unexpected = sorted(set(names) - set(MEMBERS))
    problems = [f"missing {', '.join(missing)}" if missing else "",
                f"unexpected {', '.join(unexpected)}" if unexpected else "",
                "a member appears twice" if len(names) != len(set(names)) else ""]
    if any(problems):
        raise PluginError(f"{_WHAT}; this one has " + "; ".join(p for p in problems if p))
