"""`deepfakestream serve` (serve/app.py `run`) without starting Ray: it always starts a Ray instance of its
own, and on Ctrl-C/SIGTERM shuts down only what it started, never another Serve application."""

from __future__ import annotations

import signal

import pytest
import ray
from ray import serve as ray_serve

import serve.app as app
from pipeline.config import load_settings


@pytest.fixture
def calls(monkeypatch):
    made: list[tuple] = []
    monkeypatch.setattr(ray, "init", lambda **kwargs: made.append(("ray.init", kwargs)))
    monkeypatch.setattr(ray, "shutdown", lambda: made.append(("ray.shutdown",)))
    monkeypatch.setattr(ray_serve, "shutdown", lambda: made.append(("serve.shutdown",)))
    monkeypatch.setattr(ray_serve, "delete", lambda name, **kwargs: made.append(("serve.delete", name)))
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # keep pytest's own SIGTERM handling

    def deploy(settings):  # Ctrl-C while deploying
        made.append(("deploy",))
        raise KeyboardInterrupt

    monkeypatch.setattr(app, "deploy", deploy)
    return made


def test_serve_starts_its_own_ray_and_stops_serve_and_ray_on_ctrl_c(monkeypatch, calls):
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    app.run(load_settings(**{"serve.metrics_port": 18080}))
    (name, kwargs), *rest = calls
    assert name == "ray.init" and kwargs["address"] == "local"  # never joins a `ray start` cluster or RAY_ADDRESS
    assert kwargs["_metrics_export_port"] == 18080
    assert rest == [("deploy",), ("serve.shutdown",), ("ray.shutdown",)]


def test_serve_in_a_process_whose_ray_it_did_not_start_deletes_only_its_own_app(monkeypatch, calls):
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    app.run(load_settings(**{"serve.app_name": "mine"}))
    assert calls == [("deploy",), ("serve.delete", "mine")]  # no serve.shutdown: other apps keep running
