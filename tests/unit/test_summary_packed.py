"""Packed feature summaries (schema 2): the encoding, its hostile inputs, and the cloud's reader
(the same line protocol as for the JSON summary of the same values)."""

from __future__ import annotations

import json
import struct

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud.ingest.parse import FeaturesRecord, Malformed, parse
from edge_agent import topics
from edge_agent.summary import PACKED_MAGIC, FeatureSummary, SummaryError, split_packed

TOPIC = topics.features("s1", "g1", "das")


def make(n: int = 64, **over: object) -> FeatureSummary:
    rng = np.random.default_rng(n)
    # float32-exact values: the packed and the JSON encodings then carry the same numbers
    vals = lambda: rng.standard_normal(n).astype(np.float32).astype(float).tolist()  # noqa: E731
    d = dict(site="s1", gateway="g1", stream="das", t_ns=1_700_000_000_000_000_000, ch_start=8,
             group_size=16, score=vals(), energy=vals(), threshold=vals(), model_version="m-1",
             flagged=[0, 5, n - 1])
    d.update(over)
    return FeatureSummary(**d)  # type: ignore[arg-type]


def test_round_trip_and_decode_picks_the_encoding() -> None:
    s = make()
    packed = s.to_packed()
    assert packed[:4] == PACKED_MAGIC and len(packed) < len(s.to_json()) / 2
    assert FeatureSummary.from_packed(packed) == s
    assert FeatureSummary.decode(packed) == s == FeatureSummary.decode(s.to_json())


def test_arrays_are_views_of_the_payload() -> None:
    s = make(1024)
    h, score, energy, threshold, flagged = split_packed(s.to_packed(), orjson.loads)
    assert h["n"] == 1024 and score.dtype == np.dtype("<f4") and not score.flags.writeable
    np.testing.assert_array_equal(threshold, np.asarray(s.threshold, np.float32))
    assert flagged.tolist() == s.flagged


def test_cloud_reads_both_encodings_into_the_same_line() -> None:
    s = make(300)
    a, b = parse(TOPIC, s.to_packed()), parse(TOPIC, s.to_json())
    assert isinstance(a, FeaturesRecord) and isinstance(b, FeaturesRecord)
    assert a.raw_line() == b.raw_line() and a.flagged == b.flagged == 3
    np.testing.assert_array_equal(a.energy, b.energy)


def _frame(header: dict, body: bytes, hlen: int | None = None) -> bytes:
    h = json.dumps(header).encode()
    return PACKED_MAGIC + struct.pack("<I", len(h) if hlen is None else hlen) + h + body


def _good_header(n: int = 2, nf: int = 0) -> dict:
    return {"site": "s1", "gateway": "g1", "stream": "das", "t_ns": 5, "ch_start": 0,
            "group_size": 1, "model_version": "m", "n": n, "n_flagged": nf}


BODY = np.zeros(6, "<f4").tobytes()


@pytest.mark.parametrize("payload", [
    b"FWS2", b"FWS2\xff\xff\xff\xff{}", _frame(_good_header(), BODY, hlen=10**6),
    _frame(_good_header(), BODY[:-1]), _frame(_good_header(), BODY + b"\0"),
    _frame(_good_header(), np.array([0, np.nan, 0, 0, 0, 0], "<f4").tobytes()),
    _frame(_good_header(), np.array([0, 0, np.inf, 0, 0, 0], "<f4").tobytes()),
    _frame(_good_header(nf=1), BODY + np.array([2], "<u4").tobytes()),
    _frame(_good_header(nf=3), BODY + np.zeros(3, "<u4").tobytes()),
    _frame({**_good_header(), "extra": 1}, BODY), _frame({**_good_header(), "n": 2.0}, BODY),
    _frame({**_good_header(), "n": 0}, b""), _frame({**_good_header(), "n": True}, BODY),
    _frame({**_good_header(), "stream": "x"}, BODY),
    _frame({**_good_header(), "group_size": 0}, BODY),
    _frame({**_good_header(), "site": 3}, BODY),
    PACKED_MAGIC + struct.pack("<I", 4) + b"\xff\xfe{}" + BODY,
    PACKED_MAGIC + struct.pack("<I", 2) + b"[]" + BODY,
])
def test_malformed_packed_summaries_are_typed_errors(payload: bytes) -> None:
    with pytest.raises(SummaryError):
        split_packed(payload, orjson.loads)
    with pytest.raises(SummaryError):
        FeatureSummary.decode(payload)
    with pytest.raises(Malformed) as e:
        parse(TOPIC, payload)
    assert e.value.reason == "features:schema"


def test_a_packed_summary_on_another_gateways_topic_is_refused() -> None:
    with pytest.raises(Malformed) as e:
        parse(topics.features("s1", "g2", "das"), make().to_packed())
    assert e.value.reason == "features:topic_mismatch"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 120))
def test_any_bytes_after_the_magic_are_refused_or_read(tail: bytes, cut: int) -> None:
    good = make(8).to_packed()
    for payload in (PACKED_MAGIC + tail, good[:cut] + tail):
        try:
            parse(TOPIC, payload)
        except Malformed:
            pass
