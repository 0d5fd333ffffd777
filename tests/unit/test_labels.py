"""Operator labels: the message contract, the gateway's label book, the ACL, the cloud side,
and what a gateway's labels do to its federated training data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cloud.api.memory import MemoryStore
from cloud.labels import messages, to_message
from edge_agent import topics
from edge_agent.events import Event
from edge_agent.labels import Label, LabelBook, LabelError, parse_label
from federation.model import labelled
from fiberwatch.deploy import acl
from fiberwatch.deploy.spec import parse_spec

SITE, GW = "s1", "a"


def _label(**kw: object) -> Label:
    base = {"id": "e1:5", "event_id": "e1", "site": SITE, "gateway": GW, "stream": "das",
            "start_ns": 100, "end_ns": 200, "ch_start": 8, "ch_end": 15,
            "label": "false_alarm", "kind": "", "created_ns": 5, "user": "al"}
    return Label(**{**base, **kw})  # type: ignore[arg-type]


def test_a_label_round_trips_and_its_topic_is_the_gateways_own() -> None:
    lb = _label()
    assert parse_label(lb.to_json(), site=SITE, gateway=GW) == lb
    t = topics.label(SITE, GW, lb.key)
    assert t.startswith(topics.labels(SITE, GW)[:-1]) and topics.parse(t)[:2] == (SITE, GW)


@pytest.mark.parametrize(("payload", "reason"), [
    (b"x" * 5000, "too_large"), (b"\xff\xfe", "not_json"), (b"[1]", "not_json"),
    (b"[" * 3000, "not_json"), (b'{"v": 1}', "bad_field"),
    (_label(label="oops").to_json(), "bad_field"),
    (_label(start_ns=300).to_json(), "bad_range"), (_label(ch_end=1).to_json(), "bad_range"),
    (_label(gateway="b").to_json(), "wrong_gateway"), (_label(v=2).to_json(), "version"),
    (json.dumps({**json.loads(_label().to_json()), "ch_start": True}).encode(), "bad_field"),
    (json.dumps({**json.loads(_label().to_json()), "end_ns": 2**64}).encode(), "bad_field"),
    (json.dumps({**json.loads(_label().to_json()), "user": "u" * 500}).encode(), "bad_field"),
])
def test_hostile_label_messages_get_a_typed_error(payload: bytes, reason: str) -> None:
    with pytest.raises(LabelError) as err:
        parse_label(payload, site=SITE, gateway=GW)
    assert err.value.reason == reason


def test_the_book_counts_refused_labels_and_keeps_good_ones(tmp_path: Path) -> None:
    book = LabelBook(tmp_path / "labels.db")
    assert book.handle(b"[", site=SITE, gateway=GW) is None
    assert book.handle(_label(gateway="b").to_json(), site=SITE, gateway=GW) is None
    assert book.handle(_label().to_json(), site=SITE, gateway=GW) == _label()
    assert book.handle(_label().to_json(), site=SITE, gateway=GW) == _label()  # retained again
    assert book.refused == {"not_json": 1, "wrong_gateway": 1}
    book.close()
    with LabelBook(tmp_path / "labels.db") as again:
        assert again.labels() == [_label()]


def test_journaled_rows_inside_a_label_are_its_rows(tmp_path: Path) -> None:
    rows = np.arange(4 * 3, dtype=np.float32).reshape(4, 3)
    with LabelBook(tmp_path / "labels.db", max_flagged=8) as book:
        book.record_flagged("das", 150, 160, np.array([8, 9, 30, 31]), rows)  # 30, 31 outside
        book.record_flagged("das", 500, 510, np.array([8, 9]), rows[:2])  # after the label
        assert len(book.labelled_rows("das", 3)[0]) == 0  # no label yet
        book.add(_label())
        fa, t, kinds, which = book.labelled_rows("das", 3)
        np.testing.assert_array_equal(fa, rows[:2])
        assert t.tolist() == [150, 150] and kinds == ["", ""] and which.tolist() == [0, 0]
        assert len(book.labelled_rows("das", 3, "anomaly")[0]) == 0
        for i in range(10):  # the journal is bounded, labelled false-alarm rows stay
            book.record_flagged("das", 1000 + i, 1001 + i, np.array([40]), rows[:1])
        assert len(book.labelled_rows("das", 3)[0]) == 2
        n = book._db.execute("SELECT COUNT(*) FROM flagged").fetchone()[0]  # noqa: SLF001
        assert n <= 8 * 1.1 + 2


def test_excluded_channels_come_from_anomaly_and_maintenance_labels(tmp_path: Path) -> None:
    with LabelBook(tmp_path / "labels.db") as book:
        book.add(_label())  # a false alarm excludes nothing
        assert book.excluded_channels("das", 0, 10**9, 0, 32) is None
        book.add(_label(id="m", label="maintenance", ch_start=30, ch_end=40))
        ex = book.excluded_channels("das", 150, 160, 0, 32)
        assert ex is not None and np.flatnonzero(ex).tolist() == [30, 31]
        assert book.excluded_channels("das", 300, 400, 0, 32) is None  # after it
        assert book.excluded_channels("dts", 150, 160, 0, 32) is None


def test_only_the_cloud_writes_labels_and_each_gateway_reads_its_own() -> None:
    spec = parse_spec({"site": [{"name": "s1", "gateways": ["a", "b"]}]})
    site = acl.site_acl(spec.sites[0])
    block = site.split("user s1.a\n")[1].split("\n\n")[0]
    assert "topic read fiberwatch/v1/s1/a/labels/+" in block
    assert "labels" not in block.replace("topic read fiberwatch/v1/s1/a/labels/+", "")
    cloud = acl.cloud_acl(spec)
    writers = [u.split("\n")[0] for u in cloud.split("user ")[1:] if "write" in u
               and "/labels/" in u.split("write", 1)[1].split("\n")[0]]
    assert writers == ["labels"]
    assert "topic write fiberwatch/v1/+/+/labels/+" in cloud.split("user labels\n")[1]


def test_the_cloud_turns_stored_labels_into_gateway_messages() -> None:
    store = MemoryStore()
    store.add_event(Event(
        id="c1", site=SITE, gateway=GW, stream="das", start_ns=100, end_ns=200, ch_start=8,
        ch_end=15, dist_start_m=8.0, dist_end_m=15.0, peak_score=9.0, mean_score=5.0,
        threshold=2.0, severity="high", class_hint="sand", n_windows=4, model_version="m",
        model_hash="h", detected_ns=100))
    store.add_label("c1", label="note", note="hm", user="al")
    store.add_label("c1", label="confirmed", note="", user="al")
    store.add_label("c1", label="maintenance", note="", user="al")
    got = messages(store)
    assert [(m.label, m.kind) for m in got] == [("anomaly", "sand"), ("maintenance", "")]
    assert all(parse_label(m.to_json(), site=SITE, gateway=GW) == m for m in got)
    assert to_message({"event_id": "c1", "label": "note", "time_ns": 1}, {}) is None


def test_false_alarms_join_training_and_a_copy_is_held_back(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    normal, held = rng.normal(size=(400, 3)).astype(np.float32), np.zeros((100, 3), np.float32)
    with LabelBook(tmp_path / "labels.db") as book:
        for k in range(3):  # three labelled strokes, 4 windows each
            for w in range(4):
                t = 1000 * k + 10 * w
                book.record_flagged("das", t, t + 5, np.array([8, 9]),
                                    np.full((2, 3), 5.0 + k, np.float32))
            book.add(_label(id=f"e{k}", start_ns=1000 * k, end_ns=1000 * k + 100))
        book.add(_label(id="leak", label="anomaly", kind="leak", start_ns=990, end_ns=1100))
    data = labelled.local_data(normal, held, str(tmp_path / "labels.db"), stream="das",
                               label_share=0.5)
    assert len(data.fa_held) == 8 and set(data.fa_held[:, 0].tolist()) == {6.0}  # label 1
    assert len(data.fa_train) == 16
    extra = len(data.train) - len(normal)
    assert extra % 16 == 0 and 0.4 < extra / len(data.train) < 0.6
    assert len(data.calibration_rows()) == 400 + 100 + 16
    assert set(data.anomalies) == {"leak"}
    effect = labelled.label_effect(data, lambda r: r[:, 0], 5.5, "x_")
    assert (effect["x_fa_windows"], effect["x_fa_flagged"]) == (4, 4)
    assert labelled.local_data(normal, held, "", stream="das").train is normal


def test_a_label_round_starts_from_weights_or_a_checkpoint(tmp_path: Path) -> None:
    from federation.flower.label_round import effect_report, load_weights
    from federation.model import task
    from federation.model.datasets import DAS_SPEC
    from federation.model.train import save_checkpoint

    model = task.build_model(DAS_SPEC.dim, seed=3)
    np.savez(tmp_path / "w.npz", *task.get_weights(model))
    save_checkpoint(tmp_path / "m.ckpt", model, DAS_SPEC, rows=None, training={})
    for path in ("w.npz", "m.ckpt"):
        got = load_weights(str(tmp_path / path))
        assert all(np.array_equal(a, b) for a, b in zip(got, task.get_weights(model),
                                                         strict=True))
    rep = effect_report({"before_fa_windows": 4, "before_fa_flagged": 4, "after_fa_flagged": 0,
                         "before_recall_leak_windows": 9, "before_recall_leak_flagged": 9,
                         "after_recall_leak_flagged": 8}, (2.0, 3.0))
    assert (rep["fa_windows"], rep["fa_before"], rep["fa_after"]) == (4, 4, 0)
    assert (rep["recall_leak_windows"], rep["recall_leak_before"],
            rep["recall_leak_after"]) == (9, 9, 8)


def test_the_label_report_joins_the_last_rounds_point() -> None:
    from federation.flower.metrics_sink import MetricsSink

    sink = MetricsSink("http://127.0.0.1:9")
    lines: list[str] = []
    sink.write_lines = lines.extend  # type: ignore[method-assign]
    report = {"round": 1, "participants": 2, "failures": 0, "t_end_ns": 123}
    assert sink.write_labels(report, {"fa_before": 4, "fa_after": 0, "threshold_after": 2.5},
                             run_id="7", strategy="fedavg")
    assert lines == ["fl_round,run_id=7,strategy=fedavg label_fa_after=0i,label_fa_before=4i,"
                     "label_threshold_after=2.5 123"]  # same series and time: fields merge


def test_the_publisher_refuses_a_poll_interval_that_is_not_positive(
        capsys: pytest.CaptureFixture[str]) -> None:
    from cloud.labels import main

    for every in ("0", "-1", "nan", "inf"):
        with pytest.raises(SystemExit) as exc:
            main(["--every", every])  # before any connection is tried
        assert exc.value.code == 2
        assert "--every must be > 0 and <= 3600" in capsys.readouterr().err
