"""Feature datasets for training and evaluation: simulator runs, recordings, CSV.

Every row comes from the gateway's own pipeline (`edge_agent.offline.OfflineScorer`: frame
validation, `StreamBuffer` windows, `FeatureExtractor`), fed wire frames, so training sees
exactly the numbers the gateway computes. A `FeatureSet`
is window-major: row ``w * n_channels + c`` is channel ``first_channel + c`` of window ``w``.

CSV input: a header row, one time column (``time``/``timestamp``/``t``/``ts``, or the first
column; ISO-8601 or seconds) and numeric sensor columns; each sensor column is a "channel"
of a ``raw`` profile stream (or of any spec whose sample rate matches the CSV's).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_agent import wire
from edge_agent.config import StreamConfig
from edge_agent.features import FeatureSpec
from edge_agent.offline import (
    InputError,
    OfflineScorer,
    csv_frames,
    csv_rate,
    read_csv,
    stream_config_for,
)
from edge_agent.types import Scored

if TYPE_CHECKING:
    from sensors_sim.config import SimConfig

log = logging.getLogger(__name__)

#: the gateway configs' specs (firmware_configs/gateways/well-*.toml)
DAS_SPEC = FeatureSpec(profile="das", sample_rate_hz=2000.0, window_s=1.0, hop_s=0.5)
DTS_SPEC = FeatureSpec(profile="dts", sample_rate_hz=1.0, window_s=10.0, hop_s=5.0, bands_hz=())


class DatasetError(InputError):
    """Input that cannot be turned into feature rows."""


@dataclass
class FeatureSet:
    """Feature rows of one stream with their windows and ground truth."""

    spec: FeatureSpec
    stream: str
    rows: np.ndarray  # (W * C, D) float32
    t_start_ns: np.ndarray  # (W,) int64
    t_end_ns: np.ndarray  # (W,)
    first_channel: int
    n_channels: int
    labels: list = field(default_factory=list)  # sensors_sim Labels touching this stream
    channel_names: list[str] = field(default_factory=list)
    valid: np.ndarray | None = None  # (W * C,) bool: False where the window had NaN/inf
    why: str = ""  # how the spec was chosen (CSV input)

    def normal_rows(self) -> np.ndarray:
        """Valid rows outside every label (training rows)."""
        ok = ~self.truth().ravel()
        if self.valid is not None:
            ok &= self.valid
        return self.rows[ok]

    @property
    def n_windows(self) -> int:
        return int(self.t_start_ns.shape[0])

    def grid(self, values: np.ndarray) -> np.ndarray:
        """Per-row values as a ``(windows, channels)`` grid."""
        return np.asarray(values).reshape(self.n_windows, self.n_channels)

    def truth(self, kinds: Iterable[str] | None = None) -> np.ndarray:
        """bool ``(W, C)``: cells that overlap a label (of ``kinds``) in time and channel."""
        out = np.zeros((self.n_windows, self.n_channels), bool)
        for lb in self.labels:
            if (kinds is not None and lb.kind not in kinds) or self.stream not in lb.streams:
                continue
            w = (self.t_start_ns < lb.end_ns) & (self.t_end_ns > lb.start_ns)
            c0 = max(lb.ch_start - self.first_channel, 0)
            c1 = min(lb.ch_end - self.first_channel, self.n_channels - 1)
            if c1 >= c0:
                out[w, c0:c1 + 1] = True
        return out


class _NoModel:
    """A detector that scores 0: the pipeline only cuts windows and computes features."""

    version, package_hash, feature_spec_hash = "features-only", "", ""

    def score(self, rows: np.ndarray) -> np.ndarray:
        return np.zeros(len(rows), np.float32)


def from_frames(
    frames: Iterable[bytes], spec: FeatureSpec, *, labels: list | None = None,
    stream: StreamConfig | None = None,
) -> FeatureSet:
    """Feature rows of wire frames, computed by the gateway's own pipeline (validation,
    windowing, `edge_agent.pipeline.extract`). Frames of other streams are skipped. Rows of
    channels that carried non-finite samples are marked invalid."""
    it = iter(frames)
    kind = spec.profile if spec.profile in ("das", "dts") else "dts"
    sk = wire.StreamKind.from_label(kind)
    first = next((f for f in it if wire.decode(f).kind == sk), None)
    if first is None:
        raise DatasetError(f"no {kind} frames in the input")
    head = wire.decode(first)
    stream = stream or stream_config_for(spec, channels=head.n_channels,
                                         first_channel=head.first_channel)
    rows: list[np.ndarray] = []
    valid: list[np.ndarray] = []
    t0s: list[int] = []
    t1s: list[int] = []

    mv = spec.profile == "mv"  # one row per window over all columns

    def keep(s: Scored) -> None:
        rows.append(s.rows[:1].copy() if mv else s.rows.copy())
        nf = s.window.nonfinite
        if mv:
            valid.append(np.array([nf is None or not nf.any()]))
        else:
            valid.append(np.ones(len(s.rows), bool) if nf is None else ~nf)
        t0s.append(s.window.t_start_ns)
        t1s.append(s.window.t_end_ns)

    scorer = OfflineScorer(_NoModel(), stream, spec=spec, on_window=keep)
    # byte 5 of a wire frame is its stream kind (`edge_agent.wire`)
    scorer.run(f for f in itertools.chain([first], it) if f[5] == int(sk))
    if not rows:
        raise DatasetError("the input is shorter than one window")
    return FeatureSet(spec, kind, np.concatenate(rows), np.asarray(t0s, np.int64),
                      np.asarray(t1s, np.int64), stream.first_channel,
                      1 if mv else stream.channels, list(labels or []),
                      valid=np.concatenate(valid))


def simulate(cfg: SimConfig, seed: int, stream: str = "das",
             spec: FeatureSpec | None = None) -> FeatureSet:
    """Run the simulator (``sensors_sim.SimConfig``) and extract one stream's features."""
    from sensors_sim import Simulator

    spec = spec or (DAS_SPEC if stream == "das" else DTS_SPEC)
    cfg = replace(cfg, streams=(stream,))
    sim = Simulator(cfg, seed=seed)
    labels = [lb for lb in sim.labels() if stream in lb.streams]
    fs = from_frames((f for _, f in sim.frames()), spec, labels=labels)
    log.info("simulated stream=%s seed=%d windows=%d channels=%d", stream, seed,
             fs.n_windows, fs.n_channels)
    return fs


def read_recording(path: Path, stream: str = "das",
                   spec: FeatureSpec | None = None) -> FeatureSet:
    """Features of one stream of a ``.fwrec`` recording (`sensors_sim.read_frames`)."""
    from sensors_sim import read_frames

    return from_frames(read_frames(path), spec or (DAS_SPEC if stream == "das" else DTS_SPEC))


def interrogator_files(path: Path, stream: str = "das",
                       spec: FeatureSpec | None = None) -> FeatureSet:
    """Features of an interrogator's files (a DAS file or a directory of DAS or DTS CSV
    files), read as the bridge reads them (`edge_agent.bridge.files`, DASCore for DAS)."""
    from edge_agent.bridge.files import file_frames

    spec = spec or (DAS_SPEC if stream == "das" else DTS_SPEC)
    frames, _n, _first = file_frames(path, stream, frame_samples=spec.hop_samples)
    return from_frames(frames, spec)


def raw_spec_for_csv(t_ns: np.ndarray, *, window: int = 16, hop: int = 8) -> FeatureSpec:
    """A ``raw`` profile spec: ``window`` samples every ``hop`` samples at the CSV's rate."""
    rate = csv_rate(t_ns)
    return FeatureSpec(profile="raw", sample_rate_hz=rate, window_s=window / rate,
                       hop_s=hop / rate, bands_hz=(), context_radius=0)


#: the multivariate profile's most lags, and its fewest training / held-back windows
MV_MAX_LAGS, MV_MIN_TRAIN, MV_MIN_VALIDATION = 10, 60, 20
#: input rows per lag and per row of score smoothing span (`choose_window`, `choose_smoothing`)
MV_ROWS_PER_LAG, MV_ROWS_PER_SPAN, MV_MAX_SPAN = 150, 100, 10
#: an mv model's default threshold margin: the threshold calibrated on the held-back rows
#: (the end of the training file) times this, an allowance for the drift of the rows scored
#: later (`edge_agent.thresholds.GroupThreshold.for_detector`; chosen on the development
#: runs of `fiberwatch.bench.public`, never on its evaluation runs)
MV_THRESHOLD_MARGIN = 2.0
#: the mv profile is chosen for CSVs with at least this many columns at most this rate
MV_MIN_COLUMNS, MV_MAX_RATE_HZ = 2, 100.0


def choose_profile(n_columns: int, rate: float) -> str:
    """``mv`` for multi-column process data (a few columns at <= 100 Hz), else ``raw``."""
    return "mv" if n_columns >= MV_MIN_COLUMNS and rate <= MV_MAX_RATE_HZ else "raw"


def choose_window(profile: str, n_rows: int, n_columns: int) -> tuple[int, int, str]:
    """``(window, hop, why)`` in samples from the data's length and width.

    ``mv``: one row per input row (hop 1); lags ``n_rows // 150`` within [1, 10], at most a
    quarter of the training windows over the columns (features stay few for few rows: on
    a few hundred rows more lags fit the training stretch and generalise worse, see
    `fiberwatch.bench.public`).
    ``raw``: windows of ``n_rows // 25`` within [4, 16] samples, half-overlapping.
    """
    if profile == "mv":
        lags = max(1, min(MV_MAX_LAGS, n_rows // MV_ROWS_PER_LAG,
                          int(0.8 * n_rows) // (4 * n_columns)))
        return lags, 1, (f"mv: {lags} lags x {n_columns} columns = {lags * n_columns} "
                         f"features, one row per input row ({n_rows} rows)")
    window = max(4, min(16, n_rows // 25))
    hop = max(1, window // 2)
    return window, hop, f"raw: window {window}, hop {hop} samples ({n_rows} rows)"


#: the mv profile's default model (`choose_arch`)
MV_ARCH = "pca"


def choose_arch(profile: str) -> tuple[str, str]:
    """``(arch, why)``: ``mv`` models default to the linear ``pca`` arch (Hotelling T^2 +
    SPE as a linear autoencoder, `federation.model.task.fit_linear`): on a few hundred rows of
    drifting process data it kept fewer false alarms than the autoencoder in the development
    runs of `fiberwatch.bench.public` (docs/model/README.md); other profiles the default
    autoencoder. ``--arch`` overrides."""
    if profile == "mv":
        return MV_ARCH, (f"{MV_ARCH}: linear autoencoder fitted in closed form (T^2 + SPE); "
                         "--arch ae-32-8 for the autoencoder")
    return "ae-32-8", "ae-32-8 autoencoder"


def choose_smoothing(n_rows: int) -> int:
    """The ``mv`` score's smoothing span in rows (a causal EWMA, `edge_agent.smoothing`):
    ``n_rows // 100`` within [1, 10]. Process faults persist for many rows; a short EWMA
    keeps them flagged through their noisy stretches and averages single-row noise away,
    and costs about ``span / 2`` rows of delay at a fault's onset."""
    return max(1, min(MV_MAX_SPAN, n_rows // MV_ROWS_PER_SPAN))


def csv_spec(t_ns: np.ndarray, n_columns: int, *, profile: str = "auto",
             window: int | None = None, hop: int | None = None) -> tuple[FeatureSpec, str]:
    """The feature spec for a CSV and why (window/hop chosen by `choose_window` unless
    given)."""
    rate = csv_rate(t_ns)
    profile = choose_profile(n_columns, rate) if profile == "auto" else profile
    w, h, why = choose_window(profile, len(t_ns), n_columns)
    if window is not None or hop is not None:
        w, h = window or w, hop or (1 if profile == "mv" else max(1, (window or w) // 2))
        why = f"{profile}: window {w}, hop {h} samples (given)"
    if profile == "mv":
        return FeatureSpec(profile="mv", sample_rate_hz=rate, window_s=w / rate,
                           hop_s=h / rate, bands_hz=(), context_radius=0,
                           channels=n_columns), why
    return raw_spec_for_csv(t_ns, window=w, hop=h), why


def csv_features(path: Path, spec: FeatureSpec | None = None, *, window: int | None = None,
                 hop: int | None = None, profile: str = "auto") -> FeatureSet:
    """Features of a CSV file: one ``mv`` row per window over all columns, or (``raw``)
    each sensor column as a channel; empty cells mark their windows invalid, as
    non-finite samples do on the gateway. Without ``spec`` the profile (``auto``: see
    `choose_profile`) and window (`choose_window`) come from the data; ``fs.why`` says."""
    t, x, names = read_csv(path)
    why = "the given feature spec"
    if spec is None:
        spec, why = csv_spec(t, x.shape[1], profile=profile, window=window, hop=hop)
    rate = csv_rate(t)
    if abs(rate - spec.sample_rate_hz) > 0.01 * spec.sample_rate_hz:
        raise DatasetError(f"{path}: {rate:g} Hz data, the model's feature spec expects "
                           f"{spec.sample_rate_hz:g} Hz")
    kind = spec.profile if spec.profile in ("das", "dts") else "dts"
    if spec.profile == "mv" and spec.channels != x.shape[1]:
        raise DatasetError(f"{path}: {x.shape[1]} columns, the model's feature spec has "
                           f"{spec.channels}")
    fs = from_frames(csv_frames(t, x, kind=kind, rate=spec.sample_rate_hz,
                                frame_samples=spec.hop_samples), spec)
    fs.channel_names = names
    fs.why = why
    return fs


#: scenario families of the evaluation (sensors_sim kinds)
FAMILIES: dict[str, tuple[str, ...]] = {
    "leak": ("leak",), "sand": ("sand",), "slug": ("slug",),
    "faults": ("dead", "stuck", "spikes", "fiber_break"), "normal": (),
}


@dataclass(frozen=True)
class EvalPlan:
    """Sizes of an evaluation: one normal warm-up run (thresholds learn, nothing counted),
    then per family a run of ``n_events`` anomalies spaced by ``gap_s``, and a normal-only
    run of ``normal_s`` for the false-alarm rate."""

    channels: int = 512
    warm_s: float = 1000.0
    normal_s: float = 600.0
    n_events: int = 8
    event_s: tuple[float, float] = (8.0, 15.0)
    gap_s: float = 20.0
    intensity: tuple[float, float] = (0.5, 1.5)
    seed: int = 1000

    def seconds(self, family: str) -> float:
        if family == "normal":
            return self.normal_s
        return self.n_events * (self.event_s[1] + self.gap_s) + self.gap_s


QUICK_PLAN = EvalPlan(channels=128, warm_s=320.0, normal_s=120.0, n_events=4)  # warm-up: 300 s


def eval_scenarios(plan: EvalPlan, family: str, seed: int) -> tuple[Any, ...]:
    """``n_events`` `sensors_sim.Scenario`s of a family (kinds in turn), ``gap_s`` apart,
    random centre channel, duration and intensity."""
    from sensors_sim import Scenario

    if family not in FAMILIES:
        raise DatasetError(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}")
    kinds = FAMILIES[family]
    if not kinds:
        return ()
    rng = np.random.default_rng(seed)
    out, t = [], plan.gap_s / 2
    for k in range(plan.n_events):
        kind = kinds[k % len(kinds)]
        dur = float(rng.uniform(*plan.event_s))
        centre = int(rng.integers(16, plan.channels - 16))
        level = float(rng.uniform(*plan.intensity))
        if kind in ("leak", "fiber_break"):
            kw: dict[str, Any] = {"channel": centre}
        else:
            half = int(rng.integers(3, 12))
            kw = {"ch_start": centre - half, "ch_end": centre + half}
        out.append(Scenario(kind, round(t, 3), round(dur, 3), intensity=round(level, 3), **kw))
        t += plan.event_s[1] + plan.gap_s
    return tuple(out)


def eval_run(plan: EvalPlan, family: str, seed: int, *,
             stream: str = "das") -> tuple[Iterator[bytes], list, int]:
    """``(frames, labels, start_ns)`` of one evaluation run; the warm-up run is family
    ``"warm"`` and every other run starts where it ends."""
    from sensors_sim import SimConfig, Simulator
    from sensors_sim.config import DEFAULT_START_NS

    warm = family == "warm"
    start = DEFAULT_START_NS + (0 if warm else round(plan.warm_s * 1e9))
    cfg = SimConfig(channels=plan.channels, streams=(stream,), gateway=f"eval-{family}",
                    seconds=plan.warm_s if warm else plan.seconds(family), start_ns=start,
                    scenarios=() if warm else eval_scenarios(plan, family, seed))
    sim = Simulator(cfg, seed=seed)
    return (f for _, f in sim.frames()), sim.labels(), start
