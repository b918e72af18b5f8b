"""The part of kustomize that deploy/kubernetes uses, in Python, so CI can render it without the binary.

Users apply the overlays with the real thing (`kubectl apply -k`); `scripts/check_deploy` renders
them with this module, validates the result, and, where `kubectl` is installed, also renders them
with `kubectl kustomize` and fails unless both agree resource for resource. So what CI validates
is what users apply, and anything outside this subset is refused here instead of being
rendered differently.

Supported kustomization fields (everything else is an error): ``apiVersion``, ``kind``,
``resources`` (files and directories), ``namespace``, ``labels`` (``pairs`` on metadata only),
``images`` (``name``, ``newName``, ``newTag``), ``configMapGenerator`` and ``secretGenerator``
(``name`` with ``envs`` and/or ``literals``; names get kustomize's content hash and every
reference in a pod spec follows).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]
KNOWN_FIELDS = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "configMapGenerator",
                "secretGenerator"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "StorageClass",
                  "PersistentVolume", "PriorityClass", "MutatingWebhookConfiguration",
                  "ValidatingWebhookConfiguration"}
# kustomize's "legacy" output order: these kinds first, in this order; the rest after, by kind, then name.
ORDER_FIRST = ["Namespace", "ResourceQuota", "StorageClass", "CustomResourceDefinition", "ServiceAccount",
               "PodSecurityPolicy", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding", "ConfigMap", "Secret",
               "Endpoints", "Service", "LimitRange", "PriorityClass", "PersistentVolume", "PersistentVolumeClaim",
               "Deployment", "StatefulSet", "CronJob", "PodDisruptionBudget"]
ORDER_LAST = ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]
POD_OWNERS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


class KustomizeError(ValueError):
    """The kustomization uses something this subset does not implement, or is malformed."""


def build(folder: Path) -> list[Resource]:
    """The resources `kustomize build folder` emits, in its order."""
    resources, _ = _build(folder)
    return sorted(resources, key=_order)


def dump(resources: list[Resource]) -> str:
    return yaml.safe_dump_all(resources, sort_keys=True, default_flow_style=False)


def _build(folder: Path) -> tuple[list[Resource], dict[tuple[str, str], str]]:
    """(resources, {(kind, original name): generated name}) of one kustomization."""
    path = folder / "kustomization.yaml"
    if not path.is_file():
        raise KustomizeError(f"{folder}: no kustomization.yaml")
    spec = yaml.safe_load(path.read_text()) or {}
    unknown = set(spec) - KNOWN_FIELDS
    if unknown:
        raise KustomizeError(f"{path}: fields this renderer does not implement: {', '.join(sorted(unknown))}")
    resources: list[Resource] = []
    renamed: dict[tuple[str, str], str] = {}
    for entry in spec.get("resources", []):
        target = (folder / entry).resolve()
        if target.is_dir():
            inner, inner_renamed = _build(target)
            resources += inner
            renamed.update(inner_renamed)
        else:
            resources += [doc for doc in yaml.safe_load_all(target.read_text()) if doc]
    generated: list[Resource] = []
    for generator in spec.get("configMapGenerator", []):
        generated.append(_generate("ConfigMap", folder, generator))
    for generator in spec.get("secretGenerator", []):
        generated.append(_generate("Secret", folder, generator))
    for resource in generated:
        original = resource["metadata"]["name"]
        resource["metadata"]["name"] = f"{original}-{content_hash(resource)}"
        renamed[(resource["kind"], original)] = resource["metadata"]["name"]
    resources += generated
    for resource in resources:
        _apply_labels(resource, spec.get("labels", []))
        _apply_images(resource, spec.get("images", []))
        if "namespace" in spec:
            _apply_namespace(resource, spec["namespace"])
        _rename_references(resource, renamed)
    return resources, renamed


def _generate(kind: str, folder: Path, generator: dict[str, Any]) -> Resource:
    unknown = set(generator) - {"name", "envs", "literals"}
    if unknown:
        raise KustomizeError(f"{kind} generator {generator.get('name')}: unsupported {', '.join(sorted(unknown))}")
    data: dict[str, str] = {}
    for env in generator.get("envs", []):
        data.update(read_env_file(folder / env))
    for literal in generator.get("literals", []):
        key, sep, value = literal.partition("=")
        if not sep:
            raise KustomizeError(f"literal {literal!r} has no '='")
        data[key] = value
    resource: Resource = {"apiVersion": "v1", "kind": kind, "metadata": {"name": generator["name"]}}
    if kind == "Secret":
        resource["type"] = "Opaque"
        resource["data"] = {k: encode_base64(v) for k, v in data.items()}
    else:
        resource["data"] = data
    return resource


def encode_base64(value: str) -> str:
    """Base64 as kustomize's generators write it, and hash it: from 70 characters on, lines of 70, each
    ending in a newline (its encodeBase64; checked against kubectl)."""
    encoded = base64.b64encode(value.encode()).decode()
    if len(encoded) < 70:
        return encoded
    return "".join(encoded[i:i + 70] + "\n" for i in range(0, len(encoded), 70))


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines, as kustomize reads them: comments and blank lines skipped, values kept verbatim."""
    data: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.lstrip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, value = stripped.partition("=")
        if not sep:
            raise KustomizeError(f"{path}:{number}: {key!r} has no '=' (taking values from the environment "
                                 "is not supported)")
        data[key] = value
    return data


def content_hash(resource: Resource) -> str:
    """kustomize's name suffix: sha256 of the Go JSON encoding of kind, type and data; 10 characters."""
    # kustomize 5 hashes the generated object before it is named: the name is empty (checked against kubectl).
    encoded: dict[str, Any] = {"kind": resource["kind"], "name": "",
                               "data": resource.get("data", {})}
    if resource["kind"] == "Secret":
        encoded["type"] = resource.get("type", "Opaque")
    text = json.dumps(encoded, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # Go's encoding/json escapes these for HTML safety; the hash is of Go's bytes.
    for char, escape in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"), ("\u2028", "\\u2028"),
                         ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    return digest.translate(str.maketrans({"0": "g", "1": "h", "3": "k", "a": "m", "e": "t"}))


def _apply_labels(resource: Resource, labels: list[dict[str, Any]]) -> None:
    for entry in labels:
        unknown = set(entry) - {"pairs"}
        if unknown or entry.get("includeSelectors") or entry.get("includeTemplates"):
            raise KustomizeError(f"labels: only `pairs` on metadata are implemented, not {sorted(unknown)}")
        resource.setdefault("metadata", {}).setdefault("labels", {}).update(entry["pairs"])


def _apply_namespace(resource: Resource, namespace: str) -> None:
    if resource["kind"] == "Namespace":
        resource["metadata"]["name"] = namespace
    elif resource["kind"] not in CLUSTER_SCOPED:
        resource["metadata"]["namespace"] = namespace


def _apply_images(resource: Resource, images: list[dict[str, Any]]) -> None:
    for container in _containers(resource):
        name, tag = _split_image(container.get("image", ""))
        for image in images:
            if image["name"] == name:
                container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag or 'latest')}"
                if "newTag" not in image and not tag:
                    container["image"] = image.get("newName", name)
                break


def _split_image(image: str) -> tuple[str, str | None]:
    head, _, last = image.rpartition("/")
    name, sep, tag = last.partition(":")
    return (f"{head}/{name}" if head else name), (tag if sep else None)


def _pod_spec(resource: Resource) -> dict[str, Any] | None:
    if resource.get("kind") in POD_OWNERS:
        return dict(resource.get("spec", {}).get("template", {}).get("spec") or {}) or None
    return None


def _containers(resource: Resource) -> Iterator[dict[str, Any]]:
    spec = resource.get("spec", {}).get("template", {}).get("spec") if resource.get("kind") in POD_OWNERS else None
    if spec:
        yield from spec.get("initContainers", [])
        yield from spec.get("containers", [])


def _rename_references(resource: Resource, renamed: dict[tuple[str, str], str]) -> None:
    spec = resource.get("spec", {}).get("template", {}).get("spec") if resource.get("kind") in POD_OWNERS else None
    if not spec:
        return

    def follow(kind: str, holder: dict[str, Any], field: str) -> None:
        if holder.get(field) is not None and (kind, holder[field]) in renamed:
            holder[field] = renamed[(kind, holder[field])]

    for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                follow("ConfigMap", source["configMapRef"], "name")
            if "secretRef" in source:
                follow("Secret", source["secretRef"], "name")
        for variable in container.get("env", []):
            value_from = variable.get("valueFrom", {})
            if "configMapKeyRef" in value_from:
                follow("ConfigMap", value_from["configMapKeyRef"], "name")
            if "secretKeyRef" in value_from:
                follow("Secret", value_from["secretKeyRef"], "name")
    for volume in spec.get("volumes", []):
        if "configMap" in volume:
            follow("ConfigMap", volume["configMap"], "name")
        if "secret" in volume:
            follow("Secret", volume["secret"], "secretName")


def _order(resource: Resource) -> tuple[int, str, str]:
    kind = resource["kind"]
    if kind in ORDER_FIRST:
        rank = ORDER_FIRST.index(kind)
    elif kind in ORDER_LAST:
        rank = len(ORDER_FIRST) + 1 + ORDER_LAST.index(kind)
    else:
        rank = len(ORDER_FIRST)
    return rank, kind, resource["metadata"]["name"]


def normalized(resources: list[Resource]) -> list[Resource]:
    """Resources comparable across renderers: sorted by identity, base64 without its line breaks."""
    out = []
    for resource in copy.deepcopy(resources):
        if resource.get("kind") == "Secret":
            resource["data"] = {k: "".join(v.split()) for k, v in (resource.get("data") or {}).items()}
        out.append(resource)
    return sorted(out, key=lambda r: (r["kind"], r["metadata"].get("namespace", ""), r["metadata"]["name"]))
