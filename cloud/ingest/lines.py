"""The raw-tier ``features`` lines of a whole batch of summaries, built at once.

`codec.features_line` per summary spends most of its time in a dozen small numpy calls
(range checks, float16 conversion, copies, base64) on 1,024-value arrays. The writer
instead stacks the batch's arrays and converts, checks and base64-encodes each of score
and energy in one call for all of them (`codec.pack_rows`); only the formatting of each
line stays per summary. The lines are the same, character for character, as
`FeaturesRecord.raw_line` builds one by one (the tests compare both).

A gateway's thresholds change only with its model, so their text is reused while their
bytes are unchanged (`codec.LastPacked`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cloud import codec, schema
from cloud.ingest.parse import FeaturesRecord

_THRESHOLDS = codec.LastPacked()
_SCORE, _ENERGY, _THRESHOLD = (codec.DTYPES[k] for k in ("score", "energy", "threshold"))


def raw_lines(records: Sequence[FeaturesRecord]) -> list[str]:
    """The ``features`` line of each record, in order."""
    groups: dict[tuple[int, str, str], list[int]] = {}
    for i, r in enumerate(records):  # summaries stack when their arrays are alike
        groups.setdefault((len(r.score), r.score.dtype.str, r.energy.dtype.str), []).append(i)
    out = [""] * len(records)
    for idx in groups.values():
        group = [records[i] for i in idx]
        for i, line in zip(idx, _group_lines(group), strict=True):
            out[i] = line
    return out


def _group_lines(records: list[FeaturesRecord]) -> list[str]:
    score = np.stack([r.score for r in records])
    scores = codec.pack_rows(score, _SCORE)
    energies = codec.pack_rows(np.stack([r.energy for r in records]), _ENERGY)
    maxima = score.max(axis=1).tolist()
    return [codec.features_line(
        schema.FEATURES, site=r.site, gateway=r.gateway, stream=r.stream, t_ns=r.t_ns,
        ch_start=r.ch_start, group_size=r.group_size, score=r.score, energy=r.energy,
        threshold=r.threshold, model_version=r.model_version, flagged=r.flagged,
        threshold_text=_THRESHOLDS.pack((r.site, r.gateway, r.stream), r.threshold,
                                        _THRESHOLD),
        packed=(s, e, m)) for r, s, e, m in zip(records, scores, energies, maxima, strict=True)]
