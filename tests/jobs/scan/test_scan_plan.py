"""The scan's plan (jobs/scan/plan.py): actor pools for the cluster, how they map the graph, the work's order, Ray Data's settings."""

from __future__ import annotations

import pytest

from jobs.scan.config import ScanConfig
from jobs.scan.plan import plan_pools


def _cpus_asked(plan) -> float:
    return plan.cpus_per_actor * (plan.fused_actors + plan.decode_actors + plan.detect_actors + plan.classify_actors)


@pytest.mark.parametrize("kind", ["fused", "split"])
@pytest.mark.parametrize("cpus", [1, 2, 3, 4, 16, 64])
def test_actor_pools_leave_a_cpu_for_ray_data(cpus, kind):
    plan = plan_pools({"CPU": float(cpus)}, ScanConfig(source="x", plan=kind))
    assert plan.plan == kind and _cpus_asked(plan) <= max(cpus - 1, cpus / 2) + 1e-6
    assert plan.detect_gpus == plan.classify_gpus == 0
    forced = plan_pools({"CPU": float(cpus)}, ScanConfig(source="x", plan=kind, detect_actors=8, classify_actors=8,
                                                         fused_actors=16))
    assert _cpus_asked(forced) <= max(cpus - 1, cpus / 2) + 1e-3


def test_a_cpu_only_cluster_gets_the_fused_plan_one_actor_per_core():
    plan = plan_pools({"CPU": 2.0}, ScanConfig(source="x"))
    assert (plan.plan, plan.fused_actors, plan.torch_threads, plan.cpus_per_actor) == ("fused", 2, 1, 0.5)
    assert plan.decode_actors == plan.detect_actors == plan.classify_actors == 0
    assert plan.line() == "plan: fused (auto: no GPU): 2 actors decode→detect→score, 0.5 CPU and 1 torch thread(s) each"
    assert plan_pools({"CPU": 2.0}, ScanConfig(source="x", plan="split")).plan == "split"


def test_split_only_flags_under_the_fused_plan_are_said_to_be_ignored(caplog):
    import logging

    with caplog.at_level(logging.WARNING):
        plan_pools({"CPU": 8.0}, ScanConfig(source="x", detect_actors=3, classify_batch=8))
    assert "--detect-actors, --classify-batch: ignored by the fused plan" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        plan_pools({"CPU": 8.0}, ScanConfig(source="x", fused_actors=3))
        plan_pools({"CPU": 8.0}, ScanConfig(source="x", plan="split", detect_actors=3, classify_batch=8))
    assert "ignored" not in caplog.text


def test_no_pool_is_larger_than_the_objects_it_will_see():
    fused = plan_pools({"CPU": 4.0}, ScanConfig(source="x"))
    split = plan_pools({"CPU": 16.0, "GPU": 2.0}, ScanConfig(source="x"))
    assert fused.fused_actors > 1 and min(split.decode_actors, split.detect_actors, split.classify_actors) > 1
    one = fused.at_most(1), split.at_most(1)
    assert one[0].fused_actors == 1 and one[0].decode_actors == one[0].detect_actors == one[0].classify_actors == 0
    assert (one[1].fused_actors, one[1].decode_actors, one[1].detect_actors, one[1].classify_actors) == (0, 1, 1, 1)
    assert one[1].detect_gpus == split.detect_gpus and fused.at_most(0).fused_actors == 1  # shares unchanged; never 0
    assert fused.at_most(10_000) == fused and split.at_most(10_000) == split


def test_model_actors_share_gpus_when_the_cluster_has_them():
    plan = plan_pools({"CPU": 16.0, "GPU": 2.0}, ScanConfig(source="x"))
    assert (plan.plan, plan.why) == ("split", "auto: 2 GPU in the cluster")
    assert plan.detect_actors == plan.classify_actors == 2 and plan.fused_actors == 0
    assert plan.detect_gpus == plan.classify_gpus == 0.5
    assert plan.line() == ("plan: split (auto: 2 GPU in the cluster): 8 decode → 2 detect → 2 score actors, 1 CPU and "
                           "1 torch thread(s) each; 0.5 GPU per model actor")
    on_cpu = plan_pools({"CPU": 16.0, "GPU": 2.0}, ScanConfig(source="x"), device="cpu")
    assert (on_cpu.plan, on_cpu.detect_gpus) == ("fused", 0)
    fused = plan_pools({"CPU": 4.0, "GPU": 1.0}, ScanConfig(source="x", plan="fused"))
    assert (fused.plan, fused.why, fused.fused_actors, fused.detect_gpus) == ("fused", "chosen", 4, 0.25)
    few = plan_pools({"CPU": 16.0, "GPU": 3.0}, ScanConfig(source="x", detect_actors=1, classify_actors=1))
    assert few.detect_gpus == few.classify_gpus == 1.0  # more GPUs than model actors: one each, never 1.5


class _RecordingDataset:
    """Stands in for a Ray dataset: records what each map_batches call asks for."""

    def __init__(self):
        self.calls = []

    def map_batches(self, fn, **kwargs):
        self.calls.append((fn, kwargs))
        return self


@pytest.mark.parametrize("cluster, kind", [({"CPU": 2.0}, "fused"), ({"CPU": 2.0, "GPU": 1.0}, "split")])
def test_the_plan_maps_the_graph_and_model_actors_ask_for_gpus(cluster, kind):
    from jobs.scan.plan import map_plan
    from jobs.scan.rows import RowsStage
    from pipeline.graph import Graph, StageSpec

    options = ScanConfig(source="x", classify_batch=3)
    plan = plan_pools(cluster, options)
    specs = [StageSpec(name, object, {"stage": name}) for name in ("decode", "detect", "score")]
    calls = map_plan(_RecordingDataset(), specs, plan, options, "scan1", "key1").calls
    assert all(fn is Graph for fn, _ in calls)  # every pool: the graph over its stages
    pools = [(fn, [s.name for s in kw["fn_constructor_kwargs"]["specs"]],
              kw["compute"].min_size, kw["batch_size"], kw["num_gpus"], kw["num_cpus"]) for fn, kw in calls]
    if kind == "fused":  # one pool, one actor per core, the whole graph and the rows in each
        assert pools == [(Graph, ["decode", "detect", "score", "rows"], 2, 1, None, 0.5)]
    else:  # decode on CPU; the model actors ask for the GPU (shared by two pools)
        assert plan.plan == "split" and [p[4] for p in pools] == [None, 0.5, 0.5]
        assert pools[0][1] == ["decode"] and pools[1][1] == ["detect"]
        assert pools[2][:2] == (Graph, ["score", "rows"]) and pools[2][3] == 3
    last = calls[-1][1]["fn_constructor_kwargs"]["specs"][-1]
    assert (last.cls, last.kwargs) == (RowsStage, {"scan_id": "scan1", "scoring_key": "key1"})  # in every row
    assert options.tasks_per_actor == 2  # the first pass's default: the next batch waits on the actor
    assert all(kw["max_task_retries"] == options.max_task_retries and kw["compute"].max_tasks_in_flight_per_actor == 2
               for _, kw in calls)
    rescan = options.model_copy(update={"tasks_per_actor": 1})  # what the driver's rescan passes use
    assert all(kw["compute"].max_tasks_in_flight_per_actor == 1
               for _, kw in map_plan(_RecordingDataset(), specs, plan, rescan, "scan1").calls)


def test_work_goes_out_largest_first_and_small_scans_queue_one_batch_per_actor(monkeypatch):
    """Longest-processing-time-first: big objects start early, small ones fill the end. With fewer objects
    than two per actor, each actor holds one, so the first actor up cannot take them all."""
    import ray.data

    from jobs.scan.plan import build_dataset, work_order
    from pipeline.graph import StageSpec

    entries = [{"uri": u, "size": s} for u, s in [("a", 5), ("b", 90), ("c", 5), ("d", None), ("e", 40)]]
    assert [e["uri"] for e in work_order(entries)] == ["b", "e", "a", "c", "d"]  # stable for equal sizes
    seen = {}

    def from_items(items, **kwargs):
        seen["uris"] = [item["uri"] for item in items]
        return _RecordingDataset()

    monkeypatch.setattr(ray.data, "from_items", from_items)
    options = ScanConfig(source="x")
    plan = plan_pools({"CPU": 2.0}, options)  # fused, two actors
    specs = [StageSpec(name, object, {}) for name in ("decode", "detect", "score")]
    in_flight = {n: build_dataset(entries[:n], specs, plan, options, "s").calls[0][1]["compute"].max_tasks_in_flight_per_actor
                 for n in (2, 3, 4, 5)}
    assert in_flight == {2: 1, 3: 1, 4: 2, 5: 2} and seen["uris"] == ["b", "e", "a", "c", "d"]


def test_ray_data_advice_is_silenced_for_the_scan_and_restored_after():
    from ray.data import DataContext

    from jobs.scan.plan import data_context

    ctx = DataContext.get_current()
    before = list(ctx.issue_detectors_config.detectors)
    assert before  # Ray Data's default: detectors that print advice about its own API mid-scan
    with data_context(ScanConfig(source="x")):
        assert ctx.issue_detectors_config.detectors == []
    assert ctx.issue_detectors_config.detectors == before
    with data_context(ScanConfig(source="x", verbose=True)):  # --verbose keeps everything Ray says
        assert ctx.issue_detectors_config.detectors == before


def test_the_failed_batch_budget_counts_crashing_objects_whatever_the_batches_in_flight():
    from ray.data import DataContext

    from jobs.scan.plan import data_context

    ctx = DataContext.get_current()
    before = ctx.max_errored_blocks
    with data_context(ScanConfig(source="x", max_failed_batches=5, tasks_per_actor=2)):
        assert ctx.max_errored_blocks == 10  # each crash may fail the batch queued behind it too
    with data_context(ScanConfig(source="x", max_failed_batches=5, tasks_per_actor=1)):
        assert ctx.max_errored_blocks == 5
    with data_context(ScanConfig(source="x", max_failed_batches=0)):
        assert ctx.max_errored_blocks == 0  # 0 still stops at the first failure
    assert ctx.max_errored_blocks == before


def test_the_plan_is_a_setting_of_file_environment_and_flag(monkeypatch, tmp_path):
    from pydantic import ValidationError

    from pipeline.config import load_settings

    assert load_settings().scan.plan == "auto"
    (tmp_path / "c.yaml").write_text("scan:\n  plan: split\n")
    assert load_settings(tmp_path / "c.yaml").scan.plan == "split"
    monkeypatch.setenv("DFS_SCAN__PLAN", "fused")
    assert load_settings(tmp_path / "c.yaml").scan.plan == "fused"
    assert load_settings(tmp_path / "c.yaml", **{"scan.plan": "split"}).scan.plan == "split"
    with pytest.raises(ValidationError, match="plan"):
        load_settings(**{"scan.plan": "both"})


def test_the_plan_flag_reaches_the_scan(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    import jobs.scan.driver
    from jobs.cli import app

    seen = []

    def fake_run_scan(settings, options=None, on_commit=None, on_plan=None, on_end=None):
        seen.append(settings.scan.plan)
        raise jobs.scan.driver.ScanError("stop here")

    monkeypatch.setattr(jobs.scan.driver, "run_scan", fake_run_scan)
    for flag in ("fused", "split", "auto"):
        result = CliRunner().invoke(app, ["scan", str(tmp_path), "--plan", flag, "--no-progress"])
        assert result.exit_code == 2 and "stop here" in result.output
    assert seen == ["fused", "split", "auto"]
    assert CliRunner().invoke(app, ["scan", str(tmp_path), "--plan", "both"]).exit_code == 2 and len(seen) == 3


@pytest.mark.parametrize("cluster, share, device", [
    ({"CPU": 2.0}, 1.0, "auto"),            # a GPU share on a CPU-only cluster: Ray would keep the actors pending forever
    ({"CPU": 2.0}, 0.5, "cuda"),            # device cuda with a share: no longer slips past the device check
    ({"CPU": 8.0, "GPU": 1.0}, 2.0, "auto"),  # more than the cluster has
    ({"CPU": 2.0}, None, "cuda"),
])
def test_a_gpu_share_or_device_the_cluster_cannot_give_is_device_unavailable(cluster, share, device):
    from pipeline.errors import DeviceUnavailableError

    with pytest.raises(DeviceUnavailableError) as caught:
        plan_pools(cluster, ScanConfig(source="x", gpus_per_actor=share), device)
    assert caught.value.code == "device_unavailable"
    plan = plan_pools({"CPU": 4.0, "GPU": 1.0}, ScanConfig(source="x", gpus_per_actor=0.5), device)  # one it has
    assert plan.detect_gpus == plan.classify_gpus == 0.5



def test_pools_are_sized_from_the_free_cpus_and_a_cluster_without_room_for_one_actor_is_refused():
    """On a cluster that Serve shares (1.7 of 2 CPUs held) the pools were sized from the cluster's total: two actors
    of 0.5 CPU, pending forever. Now from what is free (at most the total); with no room for one actor, cluster_busy
    at once; a model actor's GPU share must be free too."""
    from jobs.scan.errors import ClusterBusyError

    options = ScanConfig(source="x")
    shared = plan_pools({"CPU": 2.0}, options, free={"CPU": 0.3})
    assert (shared.fused_actors, shared.cpus_per_actor) == (1, 0.15) and _cpus_asked(shared) <= 0.3 / 2
    assert plan_pools({"CPU": 2.0}, options, free={"CPU": 4.0}) == plan_pools({"CPU": 2.0}, options)  # capped
    for cluster, free, said in [({"CPU": 2.0}, {}, "0 of 2 CPU free"),
                                ({"CPU": 2.0}, {"CPU": 0.01}, "0.01 of 2 CPU free"),
                                ({"CPU": 8.0, "GPU": 1.0}, {"CPU": 8.0, "GPU": 0.2}, "8 of 8 CPU, 0.2 of 1 GPU free")]:
        with pytest.raises(ClusterBusyError) as caught:
            plan_pools(cluster, options, free=free)
        assert caught.value.code == "cluster_busy" and said in str(caught.value), str(caught.value)
    # the model actors' shares together, not one actor's: two of 0.5 GPU with 0.5 free would have waited
    # actor_start_timeout for the second
    with pytest.raises(ClusterBusyError, match=r"too little GPU free for the scan's 2 model actors \(0.5 GPU each\)"):
        plan_pools({"CPU": 8.0, "GPU": 1.0}, options, free={"CPU": 8.0, "GPU": 0.5})
    assert plan_pools({"CPU": 8.0, "GPU": 1.0}, options, free={"CPU": 8.0, "GPU": 1.0}).detect_gpus == 0.5


def test_the_wait_for_a_pools_actors_is_bounded_for_the_scan_and_restored_after():
    from ray.data import DataContext

    from jobs.scan.plan import data_context

    ctx = DataContext.get_current()
    before = ctx.wait_for_min_actors_s
    assert before <= 0  # Ray Data's default: wait forever for actors the cluster has no room for
    with data_context(ScanConfig(source="x")):
        assert ctx.wait_for_min_actors_s == ScanConfig.model_fields["actor_start_timeout"].default == 600
    with data_context(ScanConfig(source="x", actor_start_timeout=3)):
        assert ctx.wait_for_min_actors_s == 3
    assert ctx.wait_for_min_actors_s == before


# A mixed cluster as KubeRay's groups make it: a 0-CPU head, CPU-only workers, a GPU worker with few CPUs.
HEAD, CPU1, CPU2, GPU1 = "h" * 56, "c" * 56, "d" * 56, "e" * 56


def _mixed(gpu_cpus: float = 8.0, cpu_workers: tuple[float, ...] = (16.0, 16.0)):
    from jobs.scan.placement import Node

    nodes = [Node(HEAD, 0.0), *(Node(i, c) for i, c in zip((CPU1, CPU2), cpu_workers)), Node(GPU1, gpu_cpus, 1.0, True)]
    return {"CPU": sum(n.cpus for n in nodes), "GPU": 1.0}, nodes


def _fits(plan, nodes) -> None:
    """Every pool of ``plan`` has room on the nodes Ray may place it on (a GPU share: the GPU nodes only; decode
    actors kept off the GPU nodes: the others), the model actors' CPUs on the GPU nodes included."""
    gpu = [n for n in nodes if n.gpu_node]
    models = plan.fused_actors + plan.detect_actors + plan.classify_actors if plan.detect_gpus else 0
    on_gpu_nodes = models + (plan.decode_actors if not plan.decode_off else 0)
    assert models * plan.detect_gpus <= sum(n.gpus for n in gpu) + 1e-9
    assert models * plan.cpus_per_actor <= sum(n.cpus for n in gpu) + 1e-9, plan
    if plan.decode_off:
        assert set(plan.decode_off) == {n.id for n in gpu}
        assert plan.decode_actors * plan.cpus_per_actor <= sum(n.cpus for n in nodes if not n.gpu_node) + 1e-9
    assert on_gpu_nodes * plan.cpus_per_actor <= sum(n.cpus for n in gpu) + 1e-9 or not plan.detect_gpus


def test_the_fused_plan_with_gpus_is_sized_to_the_gpu_nodes_it_alone_can_use(caplog):
    """cluster/README.md's RayJob with its GPU group on (two 16-CPU workers, one 8-CPU worker with a GPU, a 0-CPU
    head) and --plan fused: 39 actors each asked 1/39 GPU, so only the GPU node could host them, 8 started and the
    rest waited actor_start_timeout (600 s) for cluster_busy. Now 8 actors, one per CPU of the GPU node, and a
    warning that the CPU-only nodes stay idle."""
    import logging

    cluster, nodes = _mixed()
    with caplog.at_level(logging.WARNING):
        plan = plan_pools(cluster, ScanConfig(source="x", plan="fused"), free=cluster, nodes=nodes)
    assert (plan.fused_actors, plan.cpus_per_actor, plan.detect_gpus, plan.decode_off) == (8, 1.0, 0.125, [])
    _fits(plan, nodes)
    assert "CPU-only nodes' 32 free CPUs stay idle; --plan split uses them" in caplog.text
    # --device cpu: no GPU share, every CPU of the cluster
    on_cpu = plan_pools(cluster, ScanConfig(source="x", plan="fused"), "cpu", free=cluster, nodes=nodes)
    assert (on_cpu.fused_actors, on_cpu.detect_gpus) == (40, 0.0)
    # a GPU node without a free CPU: refused at once, naming where
    cluster, nodes = _mixed(gpu_cpus=0.0)
    with pytest.raises(Exception, match=r"too little CPU free for the scan's 1 fused actors on the 1 node\(s\) that can "
                                        r"host them \(0 CPU free there\)") as caught:
        plan_pools(cluster, ScanConfig(source="x", plan="fused"), free=cluster, nodes=nodes)
    assert caught.value.code == "cluster_busy"


def test_the_split_plan_keeps_decode_off_the_gpu_nodes_where_cpu_nodes_can_take_it():
    """A 0-CPU head, a 2-CPU worker, a 1-CPU worker with a GPU (the reviewer's local cluster): the decode actors,
    spread by Ray Data, took the GPU node's CPU and a model actor never started. Now they keep off it (by its
    node-id label) and the model actors' CPU share fits the GPU node's one CPU."""
    from jobs.scan.plan import map_plan
    from pipeline.graph import StageSpec

    cluster, nodes = _mixed(gpu_cpus=1.0, cpu_workers=(2.0,))
    plan = plan_pools(cluster, ScanConfig(source="x"), free=cluster, nodes=nodes)
    assert (plan.plan, plan.decode_actors, plan.detect_actors, plan.classify_actors) == ("split", 2, 1, 1)
    assert (plan.cpus_per_actor, plan.detect_gpus, plan.decode_off) == (0.5, 0.5, [GPU1])
    _fits(plan, nodes)
    assert "2 decode (off the GPU nodes) → 1 detect → 1 score actors" in plan.line()
    specs = [StageSpec(name, object, {}) for name in ("decode", "detect", "score")]
    calls = map_plan(_RecordingDataset(), specs, plan, ScanConfig(source="x"), "s").calls
    assert [kw["label_selector"] for _, kw in calls] == [{"ray.io/node-id": f"!in({GPU1})"}, None, None]
    # the README's cluster: 4 decode actors on the CPU workers, a whole CPU for each model actor on the GPU node
    cluster, nodes = _mixed()
    plan = plan_pools(cluster, ScanConfig(source="x"), free=cluster, nodes=nodes)
    assert (plan.decode_actors, plan.detect_actors, plan.classify_actors, plan.cpus_per_actor, plan.decode_off) == (
        4, 1, 1, 1.0, [GPU1])
    _fits(plan, nodes)


def test_decode_goes_anywhere_when_no_cpu_node_has_room_for_it():
    """One GPU box (nothing else), or CPU-only nodes too small for the decode actors asked for: decode shares the
    GPU nodes, as before, rather than every actor's CPU share shrinking to squeeze it onto them."""
    from jobs.scan.placement import Node

    box = [Node(GPU1, 16.0, 1.0, True)]
    alone = plan_pools({"CPU": 16.0, "GPU": 1.0}, ScanConfig(source="x"), free={"CPU": 16.0, "GPU": 1.0}, nodes=box)
    assert alone == plan_pools({"CPU": 16.0, "GPU": 1.0}, ScanConfig(source="x")) and alone.decode_off == []
    small = [Node(HEAD, 1.0), *box]
    plan = plan_pools({"CPU": 17.0, "GPU": 1.0}, ScanConfig(source="x", decode_actors=8), nodes=small)
    assert (plan.decode_actors, plan.cpus_per_actor, plan.decode_off) == (8, 1.0, [])


def test_gpu_shares_fit_each_gpu_node_and_never_add_up_to_more_than_a_gpu():
    """Shares that only fit the GPUs' sum left actors pending: 3 model actors of 2/3 GPU on two 1-GPU nodes (one
    each), or 7 fused actors of round(1/7, 4) = 0.1429 GPU on one GPU (7 x 0.1429 > 1, so Ray places 6)."""
    from jobs.scan.placement import Node

    two = [Node(CPU1, 8.0, 1.0, True), Node(CPU2, 8.0, 1.0, True)]
    plan = plan_pools({"CPU": 16.0, "GPU": 2.0}, ScanConfig(source="x", detect_actors=2, classify_actors=1), nodes=two)
    assert plan.detect_gpus == 0.5
    _fits(plan, two)
    seven = plan_pools({"CPU": 8.0, "GPU": 1.0}, ScanConfig(source="x", plan="fused", fused_actors=7))
    assert seven.fused_actors * seven.detect_gpus <= 1.0 and seven.detect_gpus == 0.1428
    with pytest.raises(Exception, match="too little GPU free") as caught:  # a share given is kept, or refused
        plan_pools({"CPU": 16.0, "GPU": 2.0}, ScanConfig(source="x", detect_actors=2, classify_actors=1,
                                                          gpus_per_actor=0.6), nodes=two)
    assert caught.value.code == "cluster_busy"


def test_a_busy_message_after_the_pools_started_does_not_blame_others_for_the_scans_own_actors():
    """Once the pools have started, what is held may be the scan's own actors (8 of 39 fused actors placed, the
    rest pending): the message said "others' actors and tasks hold the rest". Now only what exceeds the pools'
    whole ask is others'."""
    from jobs.scan.plan import PoolPlan, _room

    plan = PoolPlan("fused", "chosen", 3, 0, 0, 0, 0.6666, 0.3333, 0.3333, 1)
    assert plan.asks() == {"CPU": pytest.approx(1.9998), "GPU": pytest.approx(0.9999)}
    assert "(1.9998 CPU, 0.9999 GPU in all)" in plan.demand()
    own = _room({"CPU": 3.0, "GPU": 1.0}, {"CPU": 2.3333, "GPU": 0.6667}, plan.asks())
    assert "others'" not in own and "what is taken may all be the scan's own started actors" in own, own
    theirs = _room({"CPU": 2.0}, {"CPU": 0.0}, {"CPU": 0.5})
    assert "0 of 2 CPU free, others' actors and tasks hold at least 1.5 CPU of it" in theirs, theirs
    before = _room({"CPU": 2.0}, {"CPU": 0.5})  # at the plan, nothing of the scan's holds anything
    assert "others' actors and tasks hold the rest" in before

