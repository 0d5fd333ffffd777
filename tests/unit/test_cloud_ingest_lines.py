"""Line protocol and packing: types coerced, strings escaped, arrays round-trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud import codec, schema
from tests.unit.test_cloud_ingest_parse import T, health_dict, make_event


def fields_of(line: str) -> str:
    return line.split(" ")[1]


def test_event_line_tags_fields_and_time() -> None:
    e = make_event(peak_score=3, mean_score=2)  # ints where the schema says float
    line = codec.event_line(e, received_ns=T + 9)
    head, fields, ts = line.split(" ")
    assert head == ("event,class_hint=leak,gateway=g1,id=" + e.id +
                    ",model_version=1.0.0,severity=high,site=s1,stream=das")
    assert ts == str(T)
    assert "peak_score=3.0" in fields and "mean_score=2.0" in fields
    assert f"start_ns={T}i" in fields and f"received_ns={T + 9}i" in fields
    assert 'model_hash="abc"' in fields and "ch_end=20i" in fields and "schema=1i" in fields


def test_strings_are_escaped_by_the_serializer() -> None:
    line = codec.label_line("e1", label="note", note='a=b x', user='al "ice", b\\c',
                            created_ns=5)
    assert line == ('label,event_id=e1,label=note created_ns=5i,'
                    'note="\\"a=b x\\"",user="al \\"ice\\", b\\\\c" 5')


@pytest.mark.parametrize("note", ["", "a\nb", "a\\nb", "two\r\nlines", 'q"uote', "Δ°C"])
def test_notes_round_trip_through_json(note: str) -> None:
    assert codec.note_text(json.dumps(note)) == note
    assert codec.note_text("legacy plain text") == "legacy plain text"
    assert codec.note_text(None) == ""


@given(st.lists(st.floats(-1e4, 1e4, width=16), min_size=1, max_size=300))
def test_pack_unpack_float16(values: list[float]) -> None:
    packed = codec.pack(values, "<f2")
    assert "=" not in packed  # padded to whole quads: rows concatenate
    out = codec.unpack([packed, packed], len(values), "<f2")
    assert out.shape == (2, len(values))
    np.testing.assert_array_equal(out[1], np.asarray(values, dtype=np.float32))


@given(st.lists(st.floats(-1e6, 1e6, width=32), min_size=1, max_size=100))
def test_pack_unpack_float32(values: list[float]) -> None:
    out = codec.unpack([codec.pack(values, "<f4")], len(values), "<f4")
    np.testing.assert_array_equal(out[0], np.asarray(values, dtype=np.float32))


def test_float16_clips_instead_of_overflowing() -> None:
    out = codec.unpack([codec.pack([1e9, -1e9, 1.0], "<f2")], 3, "<f2")
    np.testing.assert_array_equal(out[0], [65504.0, -65504.0, 1.0])


def test_unpack_rejects_wrong_lengths() -> None:
    with pytest.raises(ValueError):
        codec.unpack([codec.pack([1.0, 2.0], "<f2")], 5, "<f2")


def test_features_line() -> None:
    score = np.array([0.5, 2.0, 1.0])
    line = codec.features_line(schema.FEATURES, site="s1", gateway="g1", stream="das", t_ns=T,
                               ch_start=8, group_size=4, score=score, energy=score,
                               threshold=score, model_version="1.0.0", flagged=1)
    head, fields, ts = line.split(" ")
    assert head == "features,gateway=g1,site=s1,stream=das" and ts == str(T)
    assert "n=3i" in fields and "ch_start=8i" in fields and "fmt=1i" in fields
    assert "score_max=2.0" in fields and "count=" not in fields


def test_health_and_fleet_lines() -> None:
    health, fleet = codec.health_lines(health_dict(uptime_s=5, queue_depth=2.0), T + 1)
    assert health.startswith("health,gateway=g1,site=s1 ") and health.endswith(f" {T}")
    assert fleet.startswith("fleet,gateway=g1,site=s1 ") and fleet.endswith(" 0")
    f = fields_of(health)
    assert "uptime_s=5.0" in f and "queue_depth=2i" in f and "drops_total=2i" in f
    assert "latency_p99_ms=3.0" in f and f"received_ns={T + 1}i" in f
    assert codec.health_lines(health_dict(), T, fleet=False)[0] == codec.health_lines(
        health_dict(), T)[0]


def test_health_latency_per_stream_fields() -> None:
    by = {"das": {"p50": 120, "p99": 481.0}, "dts": {"p50": 2512.0, "p99": 4030.0}}
    health, fleet = codec.health_lines(health_dict(latency_ms_by_stream=by), T + 1)
    for line in (health, fleet):
        f = fields_of(line)
        assert "latency_p50_ms_das=120.0" in f and "latency_p99_ms_das=481.0" in f
        assert "latency_p50_ms_dts=2512.0" in f and "latency_p99_ms_dts=4030.0" in f
        assert "latency_p99_ms=3.0" in f  # the all-frames figure stays
    old = fields_of(codec.health_lines(health_dict(), T)[0])  # an agent without per stream
    assert "latency_p99_ms=3.0" in old and "_ms_das" not in old and "_ms_dts" not in old
    assert codec.latency_field("p99", "dts") == "latency_p99_ms_dts"


def test_health_false_alarm_mute_fields() -> None:
    mutes = {"fa_mutes_active": 2, "fa_muted_windows": 37, "fa_muted_groups": 52}
    for line in codec.health_lines(health_dict(**mutes), T + 1):
        f = fields_of(line)
        assert "fa_mutes_active=2i" in f and "fa_muted_windows=37i" in f
        assert "fa_muted_groups=52i" in f
    assert "fa_mute" not in fields_of(codec.health_lines(health_dict(), T)[0])  # older agents


def test_model_state_lines() -> None:
    d = {"model_version": "2", "model_hash": "h", "status": "canary", "t_ns": T}
    state, fleet = codec.model_state_lines("s1", "g1", d, received_ns=T + 3)
    assert state.endswith(f" {T}") and 'status="canary"' in state
    assert json.dumps(d, sort_keys=True, separators=(",", ":")).replace('"', '\\"') in state
    assert fleet.startswith("fleet,gateway=g1,site=s1 ") and 'model_status="canary"' in fleet
    untimed = codec.model_state_lines("s1", "g1", {**d, "t_ns": None}, received_ns=T + 3)
    assert untimed[0].endswith(f" {T + 3}")


def reference_features_line(measurement: str, *, site: str, gateway: str, stream: str,
                            t_ns: int, ch_start: int, group_size: int, score: np.ndarray,
                            energy: np.ndarray, threshold: np.ndarray, model_version: str,
                            flagged: int, count: int | None = None) -> str:
    """The line as `make_line` writes it (how `codec.features_line` was first written)."""
    fields = {
        "score": codec.pack(score, "<f2"), "energy": codec.pack(energy, "<f4"),
        "threshold": codec.pack(threshold, "<f2"), "n": len(score), "ch_start": int(ch_start),
        "group_size": int(group_size), "fmt": codec.FORMAT, "model_version": model_version,
        "flagged": int(flagged), "score_max": float(np.max(score)), "count": count,
    }
    return codec.line(measurement, {"site": site, "gateway": gateway, "stream": stream},
                      fields, t_ns)


names = st.text(st.characters(min_codepoint=32, max_codepoint=0x3A9), min_size=1, max_size=8)
floats = st.floats(-1e5, 1e5, allow_nan=False, allow_infinity=False)


@given(site=names, gateway=names, model_version=names,
       values=st.lists(st.tuples(floats, floats, floats), min_size=1, max_size=40),
       count=st.one_of(st.none(), st.integers(1, 100)), flagged=st.integers(0, 40),
       measurement=st.sampled_from([schema.FEATURES, schema.FEATURES_HISTORY]))
def test_features_line_is_what_make_line_writes(site: str, gateway: str, model_version: str,
                                               values: list[tuple[float, float, float]],
                                               count: int | None, flagged: int,
                                               measurement: str) -> None:
    score, energy, threshold = (np.array(v) for v in zip(*values, strict=True))
    kw = dict(site=site, gateway=gateway, stream="das", t_ns=T, ch_start=3, group_size=2,
              score=score, energy=energy, threshold=threshold, model_version=model_version,
              flagged=flagged, count=count)
    assert codec.features_line(measurement, **kw) == reference_features_line(measurement, **kw)


def test_features_line_escapes_tags_and_strings() -> None:
    score = np.array([1.0, 2.5])
    line = codec.features_line(schema.FEATURES, site="a b,c=d", gateway="g\\", stream="das",
                               t_ns=T, ch_start=0, group_size=1, score=score, energy=score,
                               threshold=score, model_version='v "1"\\x', flagged=0, count=2)
    assert line.startswith("features,gateway=g\\\\,site=a\\ b\\,c\\=d,stream=das ch_start=0i,"
                           "count=2i,energy=")
    assert 'model_version="v \\"1\\"\\\\x",n=2i,' in line and ",score_max=2.5," in line


def test_features_line_round_trips_within_the_stored_precision() -> None:
    rng = np.random.default_rng(0)
    score, energy = rng.gamma(2.0, 0.3, 1024), rng.normal(-2.0, 0.3, 1024)
    threshold = np.full(1024, 1.5)
    line = codec.features_line(schema.FEATURES, site="s", gateway="g", stream="das", t_ns=T,
                               ch_start=0, group_size=1, score=score, energy=energy,
                               threshold=threshold, model_version="1", flagged=0)
    fields = dict(f.split("=", 1) for f in line.split(" ")[1].split(","))
    for key, want, rtol in (("score", score, 2**-11), ("energy", energy, 2**-24),
                            ("threshold", threshold, 0)):
        got = codec.unpack([fields[key].strip('"')], 1024, codec.DTYPES[key])[0]
        np.testing.assert_allclose(got, want, rtol=rtol)
    assert float(fields["score_max"]) == score.max()


def test_pack_non_finite_values() -> None:
    """NaN stays NaN; float16 clips (inf included) to +-65504; float32 overflows to inf."""
    values = [np.nan, np.inf, -np.inf, 65510.0, 65520.0, 1e39, -1e39, 1.0]
    f2 = codec.unpack([codec.pack(values, "<f2")], len(values), "<f2")[0]
    np.testing.assert_array_equal(f2, [np.nan, 65504, -65504, 65504, 65504, 65504, -65504, 1])
    f4 = codec.unpack([codec.pack(values, "<f4")], len(values), "<f4")[0]
    np.testing.assert_array_equal(f4, [np.nan, np.inf, -np.inf, 65510, 65520, np.inf,
                                       -np.inf, 1])


def test_pack_of_float32_equals_pack_of_its_float64_copy() -> None:
    """Packed summaries are packed from their float32 arrays (no copy): the same text as
    through float64, for any finite float32 (random bit patterns: tiny, huge, halfway)."""
    bits = np.random.default_rng(0).integers(0, 2**32, 200_000, dtype=np.uint64)
    a = bits.astype(np.uint32).view(np.float32)
    a = a[np.isfinite(a)]
    for dtype in ("<f2", "<f4"):
        assert codec.pack(a, dtype) == codec.pack(a.astype(np.float64), dtype)


def test_last_packed_reuses_only_an_unchanged_array() -> None:
    memo = codec.LastPacked(max_keys=2)
    a = np.full(64, 1.5, dtype=np.float32)
    assert memo.pack("g1", a, "<f2") == codec.pack(a, "<f2")
    b = a.copy()
    b[63] = 2.0  # one value changed: packed anew, not the remembered text
    assert memo.pack("g1", b, "<f2") == codec.pack(b, "<f2") != codec.pack(a, "<f2")
    assert memo.pack("g1", b.astype(np.float64), "<f2") == codec.pack(b, "<f2")
    for k in ("g2", "g3", "g1"):  # bounded: the oldest key goes
        assert memo.pack(k, a, "<f4") == codec.pack(a, "<f4")
    assert len(memo._last) == 2  # noqa: SLF001
