"""Where the scan's actors fit (jobs/scan/placement.py): the live nodes as Ray reports them, and the shares with
which like actors fit them (their use in the plan: test_scan_plan.py)."""

from __future__ import annotations

from jobs.scan.placement import NODE_ID_LABEL, Node, Pool, cpu_share, fit, gpu_share, nodes_now


def test_nodes_now_reads_each_live_node_and_its_id_is_the_label_decode_is_kept_off_by(ray_session):
    (node,) = nodes_now()
    (info,) = [n for n in ray_session.nodes() if n["Alive"]]
    assert (node.id, node.gpu_node) == (info["NodeID"], False) and node.cpus == ray_session.available_resources()["CPU"]
    assert info["Labels"][NODE_ID_LABEL] == node.id


def test_shares_fit_each_node_not_only_the_sum():
    """Actors are placed whole, on one node each: 2 actors of 0.75 CPU do not fit two nodes of 0.9 and 0.6 CPU
    though 1.5 <= 1.5; the largest share that does is 0.6 (one on each)."""
    nodes = [Node("a", 0.9), Node("b", 0.6)]
    assert fit(nodes, 0.75) == 1 and fit(nodes, 0.6) == 2 and fit(nodes, 0.3, 0.5) == 0  # no GPU there
    assert cpu_share([Pool("actors", 2, 0.0, nodes)], 1.0) == 0.6
    assert cpu_share([Pool("actors", 2, 0.0, [Node("a", 0.0)])], 1.0) is None
    gpus = [Node("g", 8.0, 1.0, True), Node("h", 8.0, 1.0, True)]
    assert gpu_share(Pool("models", 3, 2 / 3, gpus), may_shrink=True) == 0.5
    assert gpu_share(Pool("models", 3, 2 / 3, gpus), may_shrink=False) is None  # a share given is kept or refused
    assert gpu_share(Pool("models", 3, 0.7, gpus), may_shrink=True) is None  # 2.1 GPU asked, 2 free
    # one node split `count` ways: 3 actors on 2 CPUs get 2/3 each (the plan rounds it down)
    assert cpu_share([Pool("fused", 3, 0.0, [Node("g", 2.0, 1.0, True)])], 1.0) == 2 / 3
    # free GPUs whose float sum falls just short of the ask (0.7 + 0.2 + 0.1 < 10 * 0.1): they fit all the same
    free = [Node("a", 4.0, 0.7, True), Node("b", 4.0, 0.2, True), Node("c", 4.0, 0.1, True)]
    assert gpu_share(Pool("models", 10, 0.1, free), may_shrink=False) == 0.1


def test_a_node_whose_gpus_others_hold_is_still_a_gpu_node(monkeypatch):
    """A GPU node by its total GPUs, not its free ones: one whose GPUs are all taken is no CPU-only node."""
    import ray._private.state

    monkeypatch.setattr(ray._private.state, "total_resources_per_node",
                        lambda: {"g": {"CPU": 8.0, "GPU": 1.0}, "c": {"CPU": 4.0}})
    monkeypatch.setattr(ray._private.state, "available_resources_per_node", lambda: {"g": {"CPU": 8.0}, "c": {"CPU": 4.0}})
    assert nodes_now() == [Node("c", 4.0, 0.0, False), Node("g", 8.0, 0.0, True)]


def test_a_ray_that_cannot_say_its_nodes_plans_on_its_totals(monkeypatch, caplog):
    """nodes_now reads a private Ray module: where an upgrade moved it, the scan plans as before, and says so."""
    import ray._private.state

    def moved():
        raise AttributeError("module 'ray._private.state' has no attribute 'available_resources_per_node'")

    monkeypatch.setattr(ray._private.state, "available_resources_per_node", moved)
    assert nodes_now() is None and "planned on its totals" in caplog.text
