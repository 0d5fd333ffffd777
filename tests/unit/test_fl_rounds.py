"""The server's run against the real ClientApp, in process (no transport), and the sink's
line protocol."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord

from edge_agent.normal_buffer import NormalBuffer
from federation.flower import client_app, metrics_sink, rounds, server_app, strategies
from federation.model import task

DIM = 6
FAST = rounds.Timing(round_timeout_s=30, grace_s=0.0, poll_s=0.0, wait_nodes_s=1)
NO_QUORUM = rounds.Timing(round_timeout_s=0.2, grace_s=0.0, poll_s=0.01, wait_nodes_s=0)


def _buffers(tmp_path: Path, n: int, rows: int = 400) -> dict[int, dict]:
    rng = np.random.default_rng(0)
    cfgs = {}
    for i in range(n):
        p = tmp_path / f"gw{i}.fwnb"
        with NormalBuffer(p, dim=DIM, spec_hash="test", max_rows=1000) as b:
            b.append((rng.standard_normal((rows, DIM)) + i).astype(np.float32))
        cfgs[10 + i] = {"normal-buffer": str(p), "gateway-id": f"gw{i}"}
    return cfgs


def test_a_run_in_process_with_a_dropout_and_a_broken_gateway(tmp_path: Path) -> None:
    cfgs = _buffers(tmp_path, 4)
    cfgs[13]["normal-buffer"] = str(tmp_path / "missing.fwnb")  # a broken gateway
    grid = rounds.InProcessGrid(client_app.app, cfgs, {"arch": "ae-16-4"}, drop={12})
    nodes = rounds.wait_for_nodes(grid, 2, FAST)
    stats = rounds.federated_stats(grid, nodes, quorum=2, timing=FAST)
    assert stats["count"] == 2 * 320  # two good gateways, 4 of 5 rows each (1 held out)

    model = task.build_model(DIM, arch="ae-16-4")
    task.set_normalization(model, *task.stats_mean_std(stats))
    s = strategies.build("fedprox", proximal_mu=0.1, min_train_nodes=2, min_available_nodes=2,
                         train_config={"epochs": 1, "batch-size": 64})
    reports: list[rounds.RoundReport] = []
    arrays = rounds.train_rounds(s, grid, ArrayRecord(task.get_weights(model)), 2,
                                 timing=FAST, on_round=lambda r, a: reports.append(r))
    assert [r.participants for r in reports] == [2, 2]
    assert [r.failures for r in reports] == [2, 2] and all(r.applied for r in reports)
    assert "dropped out" in reports[0].failed_nodes["12"]
    assert "error reply" in reports[0].failed_nodes["13"]
    assert reports[0].bytes_up < 0.5 * reports[0].bytes_up_fp32  # tiny model: framing counts
    assert reports[0].bytes_up_fp32 < reports[0].bytes_up_flower_fp32
    assert all(math.isfinite(r.loss) and math.isfinite(r.train_loss) for r in reports)

    arrays, hists, loss = rounds.calibrate(grid, nodes, arrays, quorum=2, timing=FAST,
                                           set_error_scale=task.error_scale_setter(
                                               DIM, "ae-16-4"))
    assert len(hists) == 2 and sum(sum(h) for h in hists) == 800 and loss > 0
    final = task.build_model(DIM, arch="ae-16-4")
    task.set_weights(final, arrays.to_numpy_ndarrays())
    assert not np.allclose(final.err_scale.numpy(), 1.0)


def test_below_quorum_leaves_the_model_unchanged(tmp_path: Path) -> None:
    cfgs = _buffers(tmp_path, 3)
    grid = rounds.InProcessGrid(client_app.app, cfgs, {"arch": "ae-16-4"}, drop={11, 12})
    start = ArrayRecord(task.get_weights(task.build_model(DIM, arch="ae-16-4")))
    s = strategies.build("fedavg", min_train_nodes=2, min_available_nodes=2)
    reports: list[rounds.RoundReport] = []
    out = rounds.train_rounds(s, grid, start, 1, timing=NO_QUORUM,
                              on_round=lambda r, a: reports.append(r))
    assert not reports[0].applied and reports[0].participants == 1
    assert all(np.array_equal(a, b) for a, b in zip(out.to_numpy_ndarrays(),
                                                    start.to_numpy_ndarrays(), strict=True))
    with pytest.raises(rounds.QuorumError):
        rounds.federated_stats(grid, list(cfgs), quorum=2, timing=NO_QUORUM)
    with pytest.raises(rounds.QuorumError, match="connected"):
        rounds.wait_for_nodes(grid, 5, NO_QUORUM, sleep=lambda s: None)


def test_settings_from_run_config() -> None:
    s = server_app.Settings.from_run_config({"num-rounds": 7, "strategy": "krum",
                                             "byzantine": 1, "lr": 1, "unknown": 3})
    assert (s.num_rounds, s.strategy, s.lr) == (7, "krum", 1.0)
    assert s.strategy_kwargs()["byzantine"] == 1


def test_roc_auc() -> None:
    assert task.roc_auc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == 1.0
    assert task.roc_auc(np.array([1, 1, 1, 1.0]), np.array([0, 1, 0, 1])) == 0.5
    assert math.isnan(task.roc_auc(np.array([1.0]), np.array([1])))


def test_line_protocol() -> None:
    r = {"round": 3, "participants": 4, "failures": 1, "loss": 0.25, "auc": float("nan"),
         "bytes_up": 2800, "bytes_down": 9000, "duration_s": 1.5, "t_end_ns": 123,
         "model_version": 'das-fl-1-r3 "x"'}
    line = metrics_sink.line(r, run_id="run 1,a=b", strategy="trimmed-mean")
    assert line == ('fl_round,run_id=run\\ 1\\,a\\=b,strategy=trimmed-mean round=3i,'
                    'participants=4i,failures=1i,bytes_up=2800i,bytes_down=9000i,loss=0.25,'
                    'duration_s=1.5,model_version="das-fl-1-r3 \\"x\\"" 123')
    with pytest.raises(ValueError, match="http"):
        metrics_sink.MetricsSink("file:///etc/passwd")


def test_the_bench_attack_hook_changes_only_the_attackers_update(tmp_path: Path) -> None:
    """`fiberwatch.bench._fl_apps.app` is the real ClientApp plus hooks from node config: a
    node with ``attack = "flip:1"`` sends the honest update negated, the others the same."""
    from fiberwatch.bench import _fl_apps

    cfgs = _buffers(tmp_path, 2)
    model = task.build_model(DIM, arch="ae-16-4")
    task.set_normalization(model, np.zeros(DIM), np.ones(DIM))
    start = ArrayRecord(task.get_weights(model))
    s = strategies.build("fedavg", min_train_nodes=2, min_available_nodes=2,
                         train_config={"epochs": 1, "batch-size": 64}, codec="fp32")

    def one_round(app: object, nodes: dict[int, dict]) -> np.ndarray:
        grid = rounds.InProcessGrid(app, nodes, {"arch": "ae-16-4"})
        out = rounds.train_rounds(s, grid, start, 1, timing=FAST, on_round=lambda r, a: None)
        return np.concatenate([(b - a).ravel() for a, b in zip(
            start.to_numpy_ndarrays(), out.to_numpy_ndarrays(), strict=True)])

    honest = one_round(client_app.app, cfgs)
    attacked = one_round(_fl_apps.app, {10: {**cfgs[10], "attack": "flip:1"}, 11: cfgs[11]})
    assert np.abs(honest).max() > 1e-3  # training moved the model
    assert np.allclose(one_round(_fl_apps.app, cfgs), honest, atol=1e-6)
    assert not np.allclose(attacked, honest, atol=1e-4)
