"""Every Kubernetes manifest under cluster/ is valid: KubeRay resources against KubeRay v1.7.0's CRD
schemas (../shared/schemas, strict: an unknown field fails), plain ones against Kubernetes' own schemas
(the kubernetes-validate package, strict), and the nightly schedule cannot overlap itself; the Ray cluster
launcher's config against Ray's own schema."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = Path(os.environ.get("DFS_KUBERAY_SCHEMAS", ROOT.parent / "shared" / "schemas" / "kuberay-v1.7.0"))


def _manifests() -> list[tuple[str, dict]]:
    """(file, document) for every YAML document under cluster/ that is a Kubernetes object."""
    found = []
    for path in sorted((ROOT / "cluster").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc:
                found.append((path.relative_to(ROOT).as_posix(), doc))
    return found


MANIFESTS = _manifests()


def _strict(schema):
    """A CRD's openAPIV3Schema as the API server reads it with field validation Strict: objects that
    list their properties accept no others (unless x-kubernetes-preserve-unknown-fields)."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def _crd_validators() -> dict[tuple[str, str], object]:
    if not SCHEMAS.is_dir():
        pytest.skip(f"KubeRay CRD schemas not present ({SCHEMAS}): they live in ../shared (schemas/kuberay-v1.7.0), "
                    "which a plain clone lacks; DFS_KUBERAY_SCHEMAS points at another copy")
    return _load_crds()


@functools.lru_cache(maxsize=1)
def _load_crds() -> dict[tuple[str, str], object]:
    import jsonschema

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are 75k lines: libyaml, once
    validators = {}
    for path in SCHEMAS.glob("ray.io_*.yaml"):
        crd = yaml.load(path.read_text(), Loader=loader)
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                schema = _strict(version["schema"]["openAPIV3Schema"])
                validators[(f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])] = \
                    jsonschema.Draft7Validator(schema)
    return validators


def test_without_the_crd_schemas_the_checks_skip_saying_where_they_live(monkeypatch, tmp_path):
    monkeypatch.setattr(sys.modules[__name__], "SCHEMAS", tmp_path / "no-schemas")
    with pytest.raises(pytest.skip.Exception, match=r"they live in \.\./shared .*DFS_KUBERAY_SCHEMAS"):
        _crd_validators()


def test_the_cluster_folder_has_the_nightly_schedule():
    kinds = {(doc["kind"], file) for file, doc in MANIFESTS}
    assert ("CronJob", "cluster/kuberay/cronjob-scan.yaml") in kinds
    assert ("RayCluster", "cluster/kuberay/raycluster-scan.yaml") in kinds
    assert ("RayCronJob", "cluster/kuberay/raycronjob-scan.yaml") in kinds


@pytest.mark.parametrize("file,doc", [m for m in MANIFESTS if m[1]["apiVersion"].startswith("ray.io/")],
                         ids=lambda v: v if isinstance(v, str) else v.get("kind"))
def test_kuberay_manifests_match_the_crd_schemas(file, doc):
    validators = _crd_validators()
    key = (doc["apiVersion"], doc["kind"])
    assert key in validators, f"{file}: {key} is not a served KubeRay v1.7.0 resource"
    errors = sorted(validators[key].iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, f"{file}: " + "; ".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors[:5])
    assert doc["metadata"].get("name") or doc["metadata"].get("generateName")


def test_the_strict_check_rejects_an_unknown_field():
    validators = _crd_validators()
    file, doc = next(m for m in MANIFESTS if m[1]["kind"] == "RayCluster")
    bad = {**doc, "spec": {**doc["spec"], "headGroupSpec": {**doc["spec"]["headGroupSpec"], "replicaz": 1}}}
    assert list(validators[("ray.io/v1", "RayCluster")].iter_errors(bad)), "a misspelt field must fail"


# Prometheus Operator resources (cluster/monitoring/) have no schema here: tests/jobs/report/test_report_ops.py
# checks them against the pods they scrape.
@pytest.mark.parametrize("file,doc", [m for m in MANIFESTS
                                      if not m[1]["apiVersion"].startswith(("ray.io/", "monitoring.coreos.com/"))],
                         ids=lambda v: v if isinstance(v, str) else v.get("kind"))
def test_plain_kubernetes_manifests_match_kubernetes_schemas(file, doc):
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    from kubernetes_validate.utils import latest_version

    try:
        kubernetes_validate.validate(doc, latest_version(), strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{file}: {doc['kind']}: {'.'.join(map(str, exc.path))}: {exc.message}")


def test_the_nightly_schedule_cannot_overlap_itself():
    docs = {doc["kind"]: doc for _file, doc in MANIFESTS if _file.endswith(("cronjob-scan.yaml", "raycluster-scan.yaml"))}
    cron, cluster = docs["CronJob"], docs["RayCluster"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    script = " ".join(pod["containers"][0]["command"] + pod["containers"][0].get("args", []))
    # a unique Ray submission id per run, aimed at the long-lived cluster's head service
    assert "--submission-id" in script and "$(date" in script
    assert f"{cluster['metadata']['name']}-head-svc:8265" in script
    # the pod is killed after its deadline: it must stop the Ray job too, then the scan has time to commit
    assert "trap" in script and "ray job stop" in script
    head_env = {e["name"]: e.get("value") for e in cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]}
    assert int(head_env["RAY_JOB_STOP_WAIT_TIME_S"]) > 25  # > the scan's default --stop-timeout
    rayjob = next(doc for file, doc in MANIFESTS if file.endswith("rayjob-scan.yaml"))
    assert "generateName" in rayjob["metadata"] and "name" not in rayjob["metadata"]  # a new RayJob per run


def test_every_scan_head_gives_a_stopped_scan_time_to_commit():
    """`ray job stop` (the CronJob's trap) and deleting a RayJob both SIGTERM the scan, then SIGKILL after
    RAY_JOB_STOP_WAIT_TIME_S (Ray's default 3 s): it must outlast the scan's default --stop-timeout (25 s)."""
    from jobs.scan.config import ScanConfig

    stop_timeout = ScanConfig.model_fields["stop_timeout"].default
    heads = {}
    for file, doc in MANIFESTS:
        spec = doc["spec"].get("rayClusterSpec", doc["spec"]) if doc["kind"] in ("RayJob", "RayCluster") else None
        if spec and "scan" in file:
            heads[file] = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert set(heads) == {"cluster/kuberay/rayjob-scan.yaml", "cluster/kuberay/raycluster-scan.yaml"}
    for file, head in heads.items():
        env = {e["name"]: e.get("value") for e in head.get("env", [])}
        assert float(env.get("RAY_JOB_STOP_WAIT_TIME_S", 3)) > stop_timeout, file


def _ray_clusters() -> dict[str, dict]:
    """The Ray cluster spec of every KubeRay manifest that starts one, by file."""
    where = {"RayJob": "rayClusterSpec", "RayService": "rayClusterConfig", "RayCluster": None}
    return {file: doc["spec"][where[doc["kind"]]] if where[doc["kind"]] else doc["spec"]
            for file, doc in MANIFESTS if doc["kind"] in where}


def test_every_ray_cluster_asks_for_ray_token_authentication():
    """Without it any pod that reaches a head's 8265 could `ray job submit` code that reads the AWS keys from the
    pods' environment. KubeRay (authOptions, validated above against v1.7.0's CRD) gives every Ray container the
    token; the long-lived scan cluster names its Secret, so the nightly CronJob can send it."""
    clusters = _ray_clusters()
    assert set(clusters) == {"cluster/kuberay/rayjob-scan.yaml", "cluster/kuberay/raycluster-scan.yaml",
                             "cluster/kuberay/rayservice.yaml"}
    for file, spec in clusters.items():
        assert spec.get("authOptions", {}).get("mode") == "token", file
    secret = clusters["cluster/kuberay/raycluster-scan.yaml"]["authOptions"]["secretName"]
    cron = next(doc for _file, doc in MANIFESTS if doc["kind"] == "CronJob")
    (submit,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in submit["env"]}
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": "auth_token"}  # KubeRay's key
    readme = (ROOT / "cluster" / "README.md").read_text()
    assert f"kubectl create secret generic {secret}" in readme and "do not turn token authentication on" not in readme


def test_only_the_scan_clusters_own_pods_and_the_nightly_submitter_reach_it():
    """The NetworkPolicy selects every pod of the long-lived scan cluster (KubeRay's ray.io/cluster label), lets
    them reach each other, and the CronJob's pods only the head's job API."""
    policy = next(doc for _file, doc in MANIFESTS if doc["kind"] == "NetworkPolicy")
    cluster = next(doc for file, doc in MANIFESTS if file.endswith("raycluster-scan.yaml"))
    cron = next(doc for _file, doc in MANIFESTS if doc["kind"] == "CronJob")
    ours = {"ray.io/cluster": cluster["metadata"]["name"]}
    assert policy["spec"]["podSelector"]["matchLabels"] == ours and policy["spec"]["policyTypes"] == ["Ingress"]
    rules = {tuple(sorted(r["from"][0]["podSelector"]["matchLabels"].items())): r.get("ports") for r in policy["spec"]["ingress"]}
    assert rules.pop(tuple(ours.items())) is None  # the nodes to each other, on every port
    submitter = cron["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    (ports,) = [ports for labels, ports in rules.items() if set(labels) <= set(submitter.items())]
    assert ports == [{"protocol": "TCP", "port": 8265}] and len(rules) == 1


def test_the_kubernetes_strict_check_rejects_an_unknown_field():
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    from kubernetes_validate.utils import latest_version

    _file, cron = next(m for m in MANIFESTS if m[1]["kind"] == "CronJob")
    bad = {**cron, "spec": {**cron["spec"], "concurrencyPolicyy": "Forbid"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, latest_version(), strict=True)


def test_the_ray_launcher_config_passes_rays_schema_and_installs_the_locked_versions():
    """cluster/ray-cluster-aws.yaml (not launched from here: no AWS) against the installed Ray's own cluster
    schema; every node installs the project under requirements.lock, as the Makefile and the Dockerfile do."""
    import jsonschema
    import ray.autoscaler

    config = yaml.safe_load((ROOT / "cluster" / "ray-cluster-aws.yaml").read_text())
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    project = [c for c in config["setup_commands"] if "pip install" in c and "~/deepfakestream" in c.split()[-1]]
    assert project and all("-c ~/deepfakestream/requirements.lock" in c for c in project)
    # any other package a node adds comes at the lock's version too (an unpinned boto3 pulled a botocore s3fs rejects)
    extra = [c for c in config["setup_commands"] + config["head_setup_commands"] + config["worker_setup_commands"]
             if "pip install" in c and "torch==" not in c]
    assert all("-c ~/deepfakestream/requirements.lock" in c for c in extra), extra


def test_the_rayservice_serves_serve_config_yaml_but_for_torch_threads():
    """cluster/README.md promises it: the RayService's serveConfigV2 is serve/config.yaml (a Serve deploy config
    whose args build our Settings) with only torch_threads changed, so tuning one cannot miss the other."""
    from ray.serve.schema import ServeDeploySchema

    from pipeline.config import load_settings

    service = next(d for d in yaml.safe_load_all((ROOT / "cluster" / "kuberay" / "rayservice.yaml").read_text())
                   if d and d.get("kind") == "RayService")
    cluster = yaml.safe_load(service["spec"]["serveConfigV2"])
    local = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())
    ServeDeploySchema.model_validate(cluster)
    settings = cluster["applications"][0]["args"]["settings"]
    assert load_settings(tree=settings).serve.torch_threads == 2
    settings["serve"].pop("torch_threads")
    local["applications"][0]["args"]["settings"]["serve"].pop("torch_threads")
    assert cluster == local


def _pod_specs(node, where=""):
    """(where, pod spec) for every pod template under a manifest: any object with `containers` is one (each Ray
    group, KubeRay's submitter, the CronJob's pod), so a new group or manifest cannot slip past the checks."""
    if isinstance(node, dict):
        if isinstance(node.get("containers"), list):
            yield where, node
        for key, value in node.items():
            yield from _pod_specs(value, f"{where}.{key}" if where else key)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _pod_specs(value, f"{where}[{i}]")


PODS = [(f"{file}:{where}", spec) for file, doc in MANIFESTS for where, spec in _pod_specs(doc)]


def test_every_workload_and_every_submitter_has_a_pod_template_here():
    """KubeRay makes a submitter pod for a RayJob (and each RayCronJob tick) from the RayJob's submitterPodTemplate,
    else from a default with no securityContext: so each names one."""
    where = {w for w, _spec in PODS}
    assert any(w.endswith("cronjob-scan.yaml:spec.jobTemplate.spec.template.spec") for w in where)
    assert any(w.endswith("rayjob-scan.yaml:spec.submitterPodTemplate.spec") for w in where)
    assert any(w.endswith("raycronjob-scan.yaml:spec.jobTemplate.submitterPodTemplate.spec") for w in where)
    ray_groups = sum(1 + len(spec["workerGroupSpecs"]) for spec in _ray_clusters().values())
    assert len(PODS) == ray_groups + 3  # + the CronJob's and the two submitters: the walk found every pod


@pytest.mark.parametrize("where,spec", PODS, ids=[w for w, _s in PODS])
def test_every_pod_meets_the_restricted_pod_security_standard(where, spec):
    """Kubernetes' Pod Security Standards "restricted" (a namespace labelled pod-security.kubernetes.io/enforce:
    restricted admits nothing less), plus a read-only root filesystem with /tmp an emptyDir: the image runs as the
    numeric USER 1000, so the kubelet can check runAsNonRoot."""
    pod = spec.get("securityContext", {})
    assert pod.get("runAsNonRoot") is True, where
    assert pod.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
    assert not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")), where
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    assert not any("hostPath" in v for v in volumes.values()), where
    for container in spec["containers"] + spec.get("initContainers", []):
        name = f"{where}: {container['name']}"
        ctx = container.get("securityContext", {})
        assert ctx.get("allowPrivilegeEscalation") is False, name
        assert ctx.get("capabilities", {}).get("drop") == ["ALL"] and not ctx["capabilities"].get("add"), name
        assert not ctx.get("privileged") and ctx.get("runAsNonRoot", True) is True and ctx.get("runAsUser", 1) != 0, name
        assert ctx.get("readOnlyRootFilesystem") is True, name
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        assert "emptyDir" in volumes[mounts["/tmp"]], f"{name}: /tmp must be a writable emptyDir"


def test_the_image_user_is_numeric_so_run_as_non_root_can_be_checked():
    """The kubelet refuses runAsNonRoot for a named USER it cannot resolve to a uid without /etc/passwd."""
    users = [line.split()[1] for line in (ROOT / "cluster" / "Dockerfile").read_text().splitlines()
             if line.startswith("USER ")]
    assert users and users[-1].isdigit() and int(users[-1]) != 0


def test_every_ray_container_has_a_writable_onnx_cache_under_the_images_home():
    """With the root read-only, ~/.cache (classify.onnx_cache's default) is an emptyDir in each Ray pod, so its
    actors and replicas export the ONNX graph once, not each (cluster/README.md, "Pod security")."""
    dockerfile = (ROOT / "cluster" / "Dockerfile").read_text()
    assert "useradd --create-home --uid 1000 ray" in dockerfile  # HOME is /home/ray
    for file, spec in _ray_clusters().items():
        for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
            pod = group["template"]["spec"]
            volumes = {v["name"]: v for v in pod["volumes"]}
            mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/home/ray/.cache"]], file
