"""A sentiment pipeline: MiniLM embeddings -> a logistic-regression head trained on 40 sentences.

    python examples/text-embedding/sentiment.py --pack build/minilm.zip              # train, export, print commands
    python examples/text-embedding/sentiment.py --pack build/minilm.zip --register   # ... and register on a server

The head is trained on embeddings from the same pack the server serves, exported to ONNX with
onnx.helper (MatMul + Add + Softmax: float32 [batch, 384] -> [batch, 2], [negative, positive]) and
checked against scikit-learn. ``--register`` creates three models through the admin API:
``minilm`` (runtime sentence-embedding), ``sentiment-head`` (onnx) and ``sentiment`` (pipeline).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run from a checkout without installing the plugin
from modelreg_text_embedding.runtime import SentenceEmbeddingRuntime

from modelreg.plugins import LoadOptions

EMBEDDING, HEAD, PIPELINE = "minilm", "sentiment-head", "sentiment"
LABELS = ("negative", "positive")
DIM = 384
# (sentence, 1 = positive): reviews of films, food, products and service, half each way.
EXAMPLES: tuple[tuple[str, int], ...] = (
    ("I loved this film, the acting was superb.", 1),
    ("What a wonderful experience, I would do it again.", 1),
    ("The food was delicious and the staff were friendly.", 1),
    ("Absolutely fantastic product, it works perfectly.", 1),
    ("This is the best book I have read all year.", 1),
    ("The hotel room was clean, quiet and comfortable.", 1),
    ("Great value for money, highly recommended.", 1),
    ("The concert was amazing and the crowd was lovely.", 1),
    ("Customer support solved my problem in minutes.", 1),
    ("A charming, funny and heartwarming story.", 1),
    ("The new update made the app fast and pleasant to use.", 1),
    ("Our guide was knowledgeable and made the tour a joy.", 1),
    ("Delivery was quick and the package arrived in perfect shape.", 1),
    ("I am delighted with how well these headphones sound.", 1),
    ("The pasta was cooked to perfection, simply excellent.", 1),
    ("Such a beautiful garden, we enjoyed every minute.", 1),
    ("The teacher was patient and the course was brilliant.", 1),
    ("Everything went smoothly, thank you so much!", 1),
    ("This camera takes stunning photos even at night.", 1),
    ("A masterpiece: moving, clever and beautifully shot.", 1),
    ("I hated this film, the plot made no sense.", 0),
    ("What a terrible experience, never again.", 0),
    ("The food was cold and the waiter was rude.", 0),
    ("The product broke after two days, total waste of money.", 0),
    ("This is the most boring book I have ever read.", 0),
    ("The hotel room was dirty, noisy and cramped.", 0),
    ("Overpriced and disappointing, do not buy it.", 0),
    ("The concert was a mess and the sound was awful.", 0),
    ("Customer support ignored my emails for weeks.", 0),
    ("A dull, predictable and far too long story.", 0),
    ("The new update made the app slow and full of bugs.", 0),
    ("Our guide was late and clearly did not care.", 0),
    ("Delivery took a month and the box arrived crushed.", 0),
    ("I am furious, these headphones stopped working already.", 0),
    ("The pasta was soggy and tasted of nothing.", 0),
    ("The garden was neglected and full of rubbish.", 0),
    ("The teacher was condescending and the course was useless.", 0),
    ("Everything went wrong, what a horrible day.", 0),
    ("This camera takes blurry photos and the battery dies fast.", 0),
    ("A disaster: confusing, ugly and painfully acted.", 0),
)


def embed(pack: Path, texts: list[str]) -> np.ndarray:
    """float32 [n, 384]: the same vectors the server's sentence-embedding runtime computes."""
    model = SentenceEmbeddingRuntime().load(pack, "cpu", LoadOptions(format="text-embedding"))
    try:
        return model.predict({"text": np.array(texts, dtype=object)})["embedding"]
    finally:
        model.unload()


def train(embeddings: np.ndarray, labels: np.ndarray) -> Any:
    """A logistic regression over the embeddings (scikit-learn, deterministic lbfgs)."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=10.0, max_iter=1000).fit(embeddings, labels)


def head_onnx(weights: np.ndarray, bias: np.ndarray) -> bytes:
    """softmax(embedding @ weights + bias) as ONNX: float32 [batch, dim] -> "probabilities" [batch, classes]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    dim, classes = weights.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["embedding", "weights"], ["logits_raw"]),
         helper.make_node("Add", ["logits_raw", "bias"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1)],
        "sentiment_head",
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dim])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", classes])],
        [numpy_helper.from_array(weights.astype(np.float32), "weights"),
         numpy_helper.from_array(bias.astype(np.float32), "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="modelreg-example")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def export_head(classifier: Any) -> bytes:
    """The binary classifier as a two-class softmax: logits [0, w.x + b] give exactly predict_proba."""
    coef = np.asarray(classifier.coef_, dtype=np.float64).reshape(-1)
    weights = np.stack([np.zeros_like(coef), coef], axis=1)
    bias = np.array([0.0, float(classifier.intercept_[0])])
    return head_onnx(weights, bias)


def check_head(data: bytes, classifier: Any, embeddings: np.ndarray) -> None:
    """Refuse to write a head whose ONNX answers differ from scikit-learn's."""
    import onnxruntime as ort

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    (got,) = session.run(["probabilities"], {"embedding": embeddings.astype(np.float32)})
    error = float(np.abs(got - classifier.predict_proba(embeddings)).max())
    if error > 1e-4:
        sys.exit(f"the ONNX head differs from scikit-learn by {error:.2e}; not writing it")


def pipeline_document() -> dict[str, Any]:
    """The pipeline model's artifact: embed with minilm's production version, then classify."""
    return {"stages": [{"model": EMBEDDING}, {"model": HEAD}]}


def build(pack: Path, out: Path) -> tuple[Path, Path]:
    """Train, export, check; write the head and the pipeline document into ``out``."""
    from sklearn.model_selection import cross_val_score

    texts = [text for text, _ in EXAMPLES]
    labels = np.array([label for _, label in EXAMPLES])
    embeddings = embed(pack, texts)
    classifier = train(embeddings, labels)
    folds = cross_val_score(train(embeddings, labels), embeddings, labels, cv=5)
    data = export_head(classifier)
    check_head(data, classifier, embeddings)
    out.mkdir(parents=True, exist_ok=True)
    head, document = out / "sentiment-head.onnx", out / "sentiment-pipeline.json"
    head.write_bytes(data)
    document.write_text(json.dumps(pipeline_document(), indent=2) + "\n")
    print(f"trained on {len(texts)} sentences: training accuracy {classifier.score(embeddings, labels):.2f}, "
          f"5-fold cross-validated {folds.mean():.2f}")
    print(f"wrote {head} (sha256 {hashlib.sha256(data).hexdigest()[:12]}) and {document}")
    return head, document


def register(client: Any, pack: Path, head: Path, document: Path) -> dict[str, int]:
    """Create (if needed), upload (unless already there) and promote the three models; their live versions.

    ``client`` is an httpx.Client with the server's base URL and an admin bearer token.
    """
    tags = {"outputs": ", ".join(LABELS)}  # what the two probabilities are, for whoever reads the model
    plan: list[tuple[str, str, Path, str, dict[str, str]]] = [
        (EMBEDDING, "sentence-embedding", pack, "text-embedding", {}),
            (HEAD, "onnx", head, "onnx", tags),
            (PIPELINE, "pipeline", document, "pipeline", tags)]
    live: dict[str, int] = {}
    for name, runtime, path, fmt, model_tags in plan:  # in this order: a pipeline's stages must serve first
        created = client.post("/admin/models", json={"name": name, "runtime": runtime, "tags": model_tags})
        if created.status_code not in (201, 409):
            sys.exit(f"creating {name} failed: {created.status_code} {created.text}")
        version = _version_of(client, name, path, fmt)
        promoted = client.post(f"/admin/models/{name}/promote", json={"version": version})
        if promoted.status_code != 200:
            sys.exit(f"promoting {name} v{version} failed: {promoted.status_code} {promoted.text}")
        live[name] = version
    return live


def _version_of(client: Any, name: str, path: Path, fmt: str) -> int:
    """A ready version holding exactly this file (rerunning the script uploads nothing new)."""
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    listed = client.get(f"/admin/models/{name}/versions")
    listed.raise_for_status()
    for version in listed.json():
        if version["sha256"] == sha and version["status"] == "ready":
            return int(version["version"])
    with path.open("rb") as f:
        uploaded = client.post(f"/admin/models/{name}/versions", files={"artifact": (path.name, f)},
                               data={"metadata": json.dumps({"format": fmt})})
    if uploaded.status_code != 201 or uploaded.json()["status"] != "ready":
        sys.exit(f"uploading {path} to {name} failed: {uploaded.status_code} {uploaded.text}")
    return int(uploaded.json()["version"])


def _token(explicit: str | None) -> str:
    token = explicit or os.environ.get("MODELREG_TOKEN") or os.environ.get("MODELREG_ADMIN_TOKEN")
    if not token:
        path = Path(os.environ.get("MODELREG_DATA_DIR") or "data") / "admin-token"
        token = path.read_text().strip() if path.is_file() else ""
    if not token:
        sys.exit("no admin token: pass --token, set MODELREG_ADMIN_TOKEN, or run where data/admin-token is")
    return token


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pack", type=Path, default=Path("build/minilm.zip"), help="the pack export.py wrote")
    parser.add_argument("--out", type=Path, default=Path("build"), help="where to write the head and the pipeline")
    parser.add_argument("--register", action="store_true", help="register the three models on --url")
    parser.add_argument("--url", default=os.environ.get("MODELREG_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--token", default=None,
                        help="admin token (default: MODELREG_ADMIN_TOKEN, else data/admin-token)")
    args = parser.parse_args(argv)
    if not args.pack.is_file():
        parser.error(f"{args.pack} does not exist; write it with examples/text-embedding/export.py --out {args.pack}")
    head, document = build(args.pack, args.out)
    if not args.register:
        print("register them with:\n" + "\n".join(_commands(args.pack, head, document)))
        return
    import httpx

    # Uploading validates: the server loads the 90 MB pack and embeds a word before it answers.
    with httpx.Client(base_url=args.url, headers={"Authorization": f"Bearer {_token(args.token)}"},
                      timeout=600) as client:
        live = register(client, args.pack, head, document)
    print("registered: " + ", ".join(f"{name} v{version}" for name, version in live.items()))
    print(f"""try: curl -s -X POST {args.url}/models/{PIPELINE}/predict -H 'content-type: application/json' """
          """-d '{"inputs": ["What a lovely day!", "This was a waste of time."]}'""")


def _commands(pack: Path, head: Path, document: Path) -> list[str]:
    return [f"  modelreg models create {EMBEDDING} --runtime sentence-embedding",
            f"  modelreg upload {EMBEDDING} {pack} --format text-embedding && modelreg promote {EMBEDDING} 1",
            f"  modelreg models create {HEAD} --runtime onnx",
            f"  modelreg upload {HEAD} {head} && modelreg promote {HEAD} 1",
            f"  modelreg models create {PIPELINE} --runtime pipeline",
            f"  modelreg upload {PIPELINE} {document} --format pipeline && modelreg promote {PIPELINE} 1"]


if __name__ == "__main__":
    main()
