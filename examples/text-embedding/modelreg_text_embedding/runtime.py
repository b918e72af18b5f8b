"""The "sentence-embedding" runtime: text in, one L2-normalised vector per text out."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from modelreg.plugins import LoadOptions, PluginError, Signature, TensorSpec
from modelreg_text_embedding.pack import FORMAT, PackConfig, read_pack
from modelreg_text_embedding.payload import decode_texts, encode_embeddings

# Texts per onnxruntime call: sorted by length first, so short texts are not padded to a long one's length.
CHUNK = 32
_TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_INT_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}


class SentenceEmbeddingRuntime:
    """Loads text-embedding packs: an ONNX transformer, its tokenizer and a pooling config."""

    name: ClassVar[str] = "sentence-embedding"
    formats: ClassVar[frozenset[str]] = frozenset({FORMAT})

    def __init__(self) -> None:
        for module in ("onnxruntime", "tokenizers"):
            if importlib.util.find_spec(module) is None:
                raise PluginError(f"{module} is not installed")

    def devices(self) -> list[str]:
        """``cpu``, and the CUDA devices where onnxruntime's CUDA provider really starts."""
        return ["cpu", *_cuda_devices()]

    def load(self, artifact: Path, device: str, options: LoadOptions) -> SentenceEmbeddingModel:
        """Read the pack, open its model in onnxruntime on ``device`` and its tokenizer."""
        import onnxruntime as ort
        from tokenizers import Tokenizer

        if options.format not in self.formats:
            raise PluginError(f"the {self.name} runtime loads {FORMAT} packs, not {options.format!r}")
        pack = read_pack(artifact)
        try:
            tokenizer = Tokenizer.from_str(pack.tokenizer_json)
        except Exception as exc:
            raise PluginError.caused_by("tokenizer.json is not a tokenizers file", exc) from exc
        providers: list[Any] = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": int(device.partition(":")[2] or 0)}))
        try:
            # From bytes, onnxruntime has no folder to resolve external weights against, so a model
            # naming side files fails here rather than reading files beside the store.
            session = ort.InferenceSession(pack.model, _session_options(ort, options), providers=providers)
        except Exception as exc:
            raise PluginError.caused_by("onnxruntime could not load model.onnx from this pack", exc) from exc
        if device.startswith("cuda") and "CUDAExecutionProvider" not in session.get_providers():
            raise PluginError(f"onnxruntime could not start its CUDA provider on {device}; use device 'cpu'")
        return SentenceEmbeddingModel(session, _configure(tokenizer, pack.config), pack.config, device)


class SentenceEmbeddingModel:
    """Tokenize, run the transformer, mean-pool over real tokens, L2-normalise."""

    def __init__(self, session: Any, tokenizer: Any, config: PackConfig, device: str) -> None:
        self.device = device
        self.config = config
        self.signature = Signature(inputs=(TensorSpec("text", "str", (None,)),),
                                   outputs=(TensorSpec("embedding", "float32", (None, config.dim)),))
        self._feeds = _feed_types(session, config)
        self._session: Any = session
        self._tokenizer: Any = tokenizer

    def decode(self, inputs: Any) -> dict[str, np.ndarray]:
        """A string or a list of strings -> ``{"text": ...}``; ValueError for anything else."""
        return decode_texts(inputs)

    def encode(self, outputs: Mapping[str, np.ndarray]) -> list[list[float]]:
        """The embeddings as nested lists, one per text."""
        return encode_embeddings(outputs)

    def predict(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``{"text": [n]}`` -> ``{"embedding": float32 [n, dim]}``."""
        session, tokenizer = self._session, self._tokenizer
        if session is None:
            raise PluginError("this model was unloaded")
        texts = [_text(item) for item in self.signature.conform(batch)["text"]]
        embeddings = np.zeros((len(texts), self.config.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), CHUNK):
            rows = order[start:start + CHUNK]
            embeddings[rows] = self._embed(session, tokenizer, [texts[i] for i in rows])
        return {"embedding": embeddings}

    def unload(self) -> None:
        """Drop the session and tokenizer; onnxruntime frees its memory when the last run returns."""
        self._session = self._tokenizer = None

    def _embed(self, session: Any, tokenizer: Any, texts: list[str]) -> np.ndarray:
        encodings = tokenizer.encode_batch(texts)
        columns = {"input_ids": [e.ids for e in encodings], "attention_mask": [e.attention_mask for e in encodings],
                   "token_type_ids": [e.type_ids for e in encodings]}
        feeds = {name: np.array(columns[name], dtype=dtype) for name, dtype in self._feeds.items()}
        try:
            (hidden,) = session.run([self.config.output], feeds)
        except Exception as exc:
            raise PluginError.caused_by("onnxruntime could not run the model", exc) from exc
        mask = np.array(columns["attention_mask"], dtype=np.float32)[:, :, None]
        # Padding positions carry vectors too; only real tokens may count in the mean.
        pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        if self.config.normalize:
            pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        return pooled.astype(np.float32, copy=False)


def _configure(tokenizer: Any, config: PackConfig) -> Any:
    # tokenizer.json files from the Hub often carry their own fixed padding and truncation
    # (all-MiniLM-L6-v2's: pad and cut to 128); the pack's max_seq_length is what the model was used with.
    padding = tokenizer.padding or {}
    tokenizer.enable_padding(pad_id=padding.get("pad_id", 0), pad_token=padding.get("pad_token", "[PAD]"),
                             pad_type_id=padding.get("pad_type_id", 0), direction="right")
    tokenizer.enable_truncation(max_length=config.max_seq_length)
    return tokenizer


def _feed_types(session: Any, config: PackConfig) -> dict[str, Any]:
    """The integer dtype of each token input the model takes; PluginError for what we cannot feed."""
    feeds: dict[str, Any] = {}
    for arg in session.get_inputs():
        if arg.name not in _TOKEN_INPUTS or arg.type not in _INT_TYPES:
            raise PluginError(f"model.onnx takes {arg.name!r} ({arg.type}); this runtime feeds "
                              f"{', '.join(_TOKEN_INPUTS)} as int64 or int32")
        feeds[arg.name] = _INT_TYPES[arg.type]
    outputs = {arg.name: arg for arg in session.get_outputs()}
    if config.output not in outputs:
        raise PluginError(f"config.json names output {config.output!r}; model.onnx has {', '.join(outputs)}")
    shape = outputs[config.output].shape or []
    if len(shape) != 3 or (isinstance(shape[-1], int) and shape[-1] != config.dim):
        raise PluginError(f"output {config.output!r} has shape {shape}; config.json expects "
                          f"[batch, sequence, {config.dim}]")
    return feeds


def _text(item: Any) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, bytes):  # V2 BYTES tensors
        try:
            return item.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PluginError(f"input 'text' holds bytes that are not UTF-8: {exc}") from exc
    raise PluginError(f"input 'text' holds {type(item).__name__}; it takes strings")


def _session_options(ort: Any, options: LoadOptions) -> Any:
    session_options = ort.SessionOptions()
    session_options.log_severity_level = 3  # errors only
    session_options.add_session_config_entry("session.load_model_format", "ONNX")
    if options.intra_op_threads is not None:
        session_options.intra_op_num_threads = options.intra_op_threads
    if options.inter_op_threads is not None:
        session_options.inter_op_num_threads = options.inter_op_threads
    return session_options


def _cuda_devices() -> list[str]:
    # The built-in onnx runtime already asks once per process whether CUDA really starts (a GPU
    # present, then one real session: onnxruntime-gpu lists CUDA even without cuDNN); reuse it.
    try:
        from modelreg.plugins.onnx_runtime import OnnxRuntime

        return [d for d in OnnxRuntime().devices() if d.startswith("cuda")]
    except Exception:  # modelreg without its onnx extra: CPU only
        return []
