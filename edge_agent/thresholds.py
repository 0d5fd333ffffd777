"""The threshold stage: adaptive per-group thresholds at a target false-alarm rate.

Channels are grouped (``group_size`` adjacent channels; the group score is the max over its
channels). Each group keeps a ring of its recent *normal* scores and fits a threshold that
the group's score exceeds with probability ``false_alarm_rate`` per window:

1. peaks over threshold: take the top ``tail_fraction`` of the history (at least
   ``min_exceedances`` points) above the level ``u``; fit a generalised Pareto distribution
   to the excesses by probability-weighted moments (Hosking & Wallis 1987); accept the fit if
   the shape is in (-0.5, 0.5) and a Kolmogorov-Smirnov test does not reject it at 5 %
   (a tail heavier than that range is fitted with the shape 0.5, `_heavy_fit`, and its
   threshold capped at ``heavy_tail_cap`` x the history's maximum);
   extrapolate to the target rate with the shape and scale raised by ``margin`` (0.5)
   standard errors. Without it, a short history overshoots the rate several times on
   average (the extrapolation error is skewed); with it, the realised rate stays near or
   below the target from 40 to 2000 windows of history for light and exponential tails
   (heavy Pareto-like tails with a short history still exceed it, about 3x at 40 windows).
2. otherwise (poor fit, too few points) an empirical quantile at ``1 - false_alarm_rate``;
   when the history is too short to hold that quantile (``n * rate < 1``) the top of the
   history is extended with an exponential tail (the mean excess), so a short history does
   not mean a threshold at its maximum with a false-alarm rate of ``1/n``.

A package with held-back calibration scores (normal rows the model never trained on,
manifest ``threshold.calibration``) gets a *calibrated* floor instead: `calibrated_threshold`
at the configured rate (split-conformal quantile when the held-back set is large enough for
the rate, else a GPD/exponential tail fitted to it). Such a group is fixed at that
threshold (method ``calibrated``) from its first window: no warm-up, and no adaptive refit,
which would learn a slow fault that starts below the threshold (a drift, a fouling valve)
as normal and raise the threshold over it.

Every fitted threshold is raised to a *floor* (`threshold_floor`): ``min_threshold``, or for a
model package with ``floor_quantile`` set, ``max(min_threshold, quantiles[floor_quantile])``
from the package manifest (the model's own training-score quantiles). The adaptive fit
follows the local noise; the floor keeps it from sitting inside the model's normal range.
Scores are in one model's units, so the pipeline keeps one `GroupThreshold` per model
(`GroupThreshold.for_detector`): a hot-swapped model gets fresh thresholds and its own floor.

`GroupThreshold.classify` is pure; only `GroupThreshold.learn` changes state, and it never
learns a group the caller excludes (flagged groups, groups with faulty channels). No group
flags before it has ``warmup_windows`` normal scores. Refits are spread round-robin over
windows so no single window pays for all groups.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import numpy as np

from edge_agent.config import ThresholdConfig

log = logging.getLogger(__name__)

WARMUP, GPD, EMPIRICAL, CALIBRATED = 0, 1, 2, 3
METHODS = ("warmup", "gpd", "empirical", "calibrated")


def threshold_floor(cfg: ThresholdConfig,
                    quantiles: Mapping[float, float] | None) -> tuple[float, float | None]:
    """The floor under every fitted threshold, and the quantile level it came from.

    Parameters
    ----------
    cfg : ThresholdConfig
        ``min_threshold`` and ``floor_quantile``.
    quantiles : mapping of float to float, or None
        Training-score quantiles by level (`LiteRTDetector.threshold_quantiles`, from the
        package manifest's ``threshold.quantiles``); None for detectors without a package.

    Returns
    -------
    (floor, level) : tuple
        ``floor = max(min_threshold, quantiles[level])``. `level` is ``floor_quantile`` when
        the package has it, else the nearest higher level it has, else its highest level
        (a different level is logged as a warning); None when no quantile applies
        (``floor_quantile`` None, or no quantiles): the floor is then ``min_threshold``.

    Examples
    --------
    >>> q = {0.999: 4.0, 0.9999: 9.0, 1.0: 30.0}
    >>> threshold_floor(ThresholdConfig(floor_quantile=0.9999), q)
    (9.0, 0.9999)
    >>> threshold_floor(ThresholdConfig(floor_quantile=0.99999), q)  # nearest higher level
    (30.0, 1.0)
    >>> threshold_floor(ThresholdConfig(floor_quantile=0.9999, min_threshold=12.0), q)
    (12.0, 0.9999)
    >>> threshold_floor(ThresholdConfig(floor_quantile=None), q)
    (0.0, None)
    """
    want = cfg.floor_quantile
    if want is None or not quantiles:
        return cfg.min_threshold, None
    levels = sorted(quantiles)
    level = next((lv for lv in levels if lv >= want - 1e-12), levels[-1])
    if abs(level - want) > 1e-12:
        log.warning("event=threshold_floor_level threshold.floor_quantile=%g not in the model "
                    "package (levels %s); using level %g", want,
                    ",".join(f"{lv:g}" for lv in levels), level)
    return max(cfg.min_threshold, float(quantiles[level])), level


def calibrated_threshold(scores: np.ndarray, rate: float) -> float:
    """The threshold a normal score exceeds with probability ``rate``, from held-back
    normal scores (never the training rows).

    With ``n`` scores and ``rate * (n + 1) >= 1`` it is the split-conformal quantile: the
    ``ceil((n + 1) (1 - rate))``-th smallest score, exceeded by a new exchangeable normal
    score with probability at most ``rate``. Rarer rates lie beyond the data: `fit_tail`
    extrapolates a GPD (or exponential) tail with its error margin.

    Examples
    --------
    >>> calibrated_threshold(np.arange(1.0, 100.0), 0.05)  # 99 scores: the 95th
    95.0
    >>> bool(calibrated_threshold(np.arange(1.0, 100.0), 1e-4) > 99.0)
    True
    """
    s = np.sort(np.asarray(scores, np.float64))
    n = s.size
    k = math.ceil((n + 1) * (1 - rate))
    if k <= n:
        return float(s[k - 1])
    # heavy_tail=False: a held-back set keeps the exponential fallback below for a tail the
    # GPD fit rejects (the calibrated operating point the public-data evaluation measured)
    t, method = fit_tail(s, rate, heavy_tail=False)
    if method == GPD:
        return t
    # an exponential tail over the top tenth (at least 10): unlike `fit_tail`'s empirical
    # fallback it is not held at the maximum, which on a few dozen held-back rows would
    # make one odd row the threshold (the training-maximum problem again). Its scale is the
    # mean excess, the exponential's estimate: a heavy tail in the held-back rows widens it
    # (a median excess took 1 row in 79 at 11x the others for noise, and the stream then
    # alarmed at 3x the target rate: tests/integration/test_edge_agent.py's mv stream)
    m = min(n - 1, max(10, n // 10))
    u = s[n - m - 1]
    scale = float(np.mean(s[n - m:] - u))
    return float(u + scale * math.log(m / (rate * n)))


def group_max(scores: np.ndarray, group_size: int) -> np.ndarray:
    """Max over each run of `group_size` adjacent entries (the last group may be shorter)."""
    starts = np.arange(0, scores.shape[0], group_size)
    return np.maximum.reduceat(scores, starts)


def fit_tail(values: np.ndarray, rate: float, *, tail_fraction: float = 0.1,
             min_exceedances: int = 20, margin: float = 0.5,
             heavy_tail: bool = True, heavy_cap: float | None = None) -> tuple[float, int]:
    """Threshold exceeded with probability `rate` by the distribution of `values`.

    Parameters
    ----------
    values : numpy.ndarray
        1-D sample of normal scores (at least 2).
    rate : float
        Target exceedance probability, in (0, 0.5).
    margin : float
        Standard errors added to the fitted GPD shape (and scale) before extrapolating: a
        short history gives a wide estimate, and erring high keeps the false-alarm rate at
        or below the target; the margin shrinks as ``1/sqrt(exceedances)``.
    heavy_tail : bool
        A tail heavier than the GPD fit accepts (PWM shape >= `XI_MAX`) is extrapolated
        with the shape `XI_MAX` (`_heavy_fit`; never below the `EMPIRICAL` fallback)
        instead of falling back to that exponential tail, the lightest choice: at the fit's
        edge the threshold dropped some 25x from one refit to the next (from the GPD's ~700
        to the history's maximum, about 27, on the simulator's wellhead groups, where rare
        surface disturbances make the tail heavy), and the next strong disturbance alarmed.
    heavy_cap : float, optional
        Such a threshold is at most ``heavy_cap`` x the largest value, never below that
        fallback (`ThresholdConfig.heavy_tail_cap`; 1 = the fallback).

    Returns
    -------
    (threshold, method) : tuple of float and int
        `method` is `GPD` or `EMPIRICAL`.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.exponential(size=5000)
    >>> t, m = fit_tail(x, 1e-3, margin=0.0)
    >>> METHODS[m], bool(abs(t - np.log(1000)) < 0.3)  # exact: ln(1000) = 6.91
    ('gpd', True)
    >>> bool(fit_tail(x, 1e-3)[0] > t)  # the default margin errs high
    True
    """
    x = np.sort(np.asarray(values, dtype=np.float64))
    n = x.size
    if n < 2:
        raise ValueError("need at least 2 values")
    k = max(min_exceedances, int(n * tail_fraction))
    if 2 * k <= n and rate * n < k:
        u = x[n - k - 1]
        fit = _gpd_pwm(x[n - k:] - u)
        heavy = fit is None and heavy_tail
        if heavy:
            fit = _heavy_fit(x[n - k:] - u)
        t = u + _gpd_excess(fit, k, rate * n / k, margin) if fit is not None else math.nan
        if math.isfinite(t) and t >= u:
            if not heavy:
                return float(t), GPD
            if heavy_cap is not None:
                t = min(t, heavy_cap * x[-1])
            return max(float(t), _empirical(x, rate, margin)), GPD  # never below the fallback
    return _empirical(x, rate, margin), EMPIRICAL


def _gpd_excess(fit: tuple[float, float], k: int, p: float, margin: float) -> float:
    """The excess over the level of a GPD ``fit`` (xi, sigma) from ``k`` exceedances at
    tail probability ``p``, shape and scale raised by ``margin`` standard errors."""
    xi, sigma = fit
    # asymptotic standard errors of the PWM estimators near xi = 0 (Hosking & Wallis)
    xi += margin * 1.155 / math.sqrt(k)
    sigma *= 1 + margin * 1.53 / math.sqrt(k)
    return sigma * math.log(1 / p) if abs(xi) < 1e-6 else sigma / xi * (p**-xi - 1)


def _gpd_pwm(y: np.ndarray) -> tuple[float, float] | None:
    """(shape xi, scale sigma) of a GPD fitted to sorted excesses `y`, or None if poor."""
    k = y.size
    a0 = y.mean()
    pp = (np.arange(1, k + 1) - 0.35) / k
    a1 = float(np.mean((1 - pp) * y))
    d = a0 - 2 * a1
    if not (a0 > 0 and d > 0):
        return None
    xi = 2 - a0 / d
    sigma = 2 * a0 * a1 / d
    if not (-0.5 < xi < 0.5 and sigma > 0):
        return None
    if abs(xi) < 1e-6:
        cdf = 1 - np.exp(-y / sigma)
    else:
        cdf = 1 - np.maximum(1 + xi * y / sigma, 0) ** (-1 / xi)
    i = np.arange(1, k + 1)
    ks = max(float(np.max(i / k - cdf)), float(np.max(cdf - (i - 1) / k)))
    if ks > 1.36 / math.sqrt(k):
        return None
    return float(xi), float(sigma)


#: the heaviest GPD shape `_gpd_pwm` accepts (its PWM estimate's variance is finite below it)
XI_MAX = 0.5


def _heavy_fit(y: np.ndarray) -> tuple[float, float] | None:
    """(`XI_MAX`, scale) for sorted excesses `y` whose PWM shape is `XI_MAX` or heavier, else
    None. The scale matches the excesses' mean (a GPD's mean is ``sigma / (1 - xi)``): the
    lightest tail the fit would still call heavy, so a threshold never falls below the
    GPD's at the edge of its accepted range."""
    k = y.size
    a0 = float(y.mean())
    pp = (np.arange(1, k + 1) - 0.35) / k
    d = a0 - 2 * float(np.mean((1 - pp) * y))
    if not a0 > 0 or (d > 0 and 2 - a0 / d < XI_MAX):
        return None
    return XI_MAX, a0 * (1 - XI_MAX)


def _empirical(x: np.ndarray, rate: float, margin: float) -> float:
    n = x.size
    if rate * n >= 1:
        return float(np.quantile(x, 1 - rate, method="higher"))
    k = max(n // 10, min(20, n // 2), 1)
    u = x[n - k - 1] if n > k else x[0]
    mean_excess = float(np.mean(x[n - k:] - u)) * (1 + margin / math.sqrt(k))
    return float(max(x[-1], u + mean_excess * math.log(k / (rate * n))))


class GroupThreshold:
    """Per-group adaptive thresholds over a ring of recent normal group scores.

    Parameters
    ----------
    n_groups : int
    cfg : ThresholdConfig
        ``false_alarm_rate``, ``warmup_windows``, ``history_windows``, ``min_threshold``.
    refit_every : int
        Each group is refitted once per this many `learn` calls.
    floor : float, optional
        Lower bound of every fitted threshold (default ``cfg.min_threshold``; never below
        it). `for_detector` sets it from a model package (`threshold_floor`).

    Attributes
    ----------
    thresholds : numpy.ndarray
        float64 ``(n_groups,)``, the thresholds in force; ``inf`` while a group warms up.
        With ``cfg.neighbour_groups`` r > 0 a warm group's threshold is the largest
        `fitted` of the warm groups within r of it (`_pool`).
    fitted : numpy.ndarray
        float64 ``(n_groups,)``: each group's own fit (floored); ``inf`` while warming up.
    method : numpy.ndarray
        int8 ``(n_groups,)``: `WARMUP`, `GPD` or `EMPIRICAL` (see `METHODS`).
    floor : float
        The floor in force.
    """

    def __init__(self, n_groups: int, cfg: ThresholdConfig, *, refit_every: int = 20,
                 tail_fraction: float = 0.1, min_exceedances: int = 20,
                 floor: float | None = None) -> None:
        self.cfg = cfg
        self.floor = cfg.min_threshold if floor is None else max(cfg.min_threshold, floor)
        self.n_groups = n_groups
        self.refit_every = max(1, refit_every)
        self.tail_fraction = tail_fraction
        self.min_exceedances = min_exceedances
        self._hist = np.zeros((n_groups, cfg.history_windows), dtype=np.float32)
        self._pos = np.zeros(n_groups, dtype=np.int64)
        self.count = np.zeros(n_groups, dtype=np.int64)
        self.thresholds = np.full(n_groups, np.inf)
        self.fitted = np.full(n_groups, np.inf)
        self.method = np.full(n_groups, WARMUP, dtype=np.int8)
        self._tick = 0
        q = cfg.quarantine_windows  # a ring of scores waiting to be learned (see `learn`)
        self._held = np.zeros((q, n_groups), dtype=np.float32)
        self._held_ok = np.zeros((q, n_groups), dtype=bool)
        self._held_pos = 0

    @classmethod
    def for_detector(cls, n_groups: int, cfg: ThresholdConfig, detector: object, *,
                     refit_every: int = 20, rows_per_group: int = 1) -> GroupThreshold:
        """Thresholds for one detector's scores: floored at its calibrated threshold
        (`calibrated_threshold` of ``detector.calibration_scores``) when it has one, else
        at its package quantiles (`threshold_floor`).

        Calibration scores are per row; a group's score is the max of ``rows_per_group``
        rows (a group of fibre channels; 1 for an mv stream), so each row is calibrated at
        ``false_alarm_rate / rows_per_group`` (a union bound: the group rate stays at most
        the target). The package's ``threshold_margin`` (default 1) multiplies it: held-back
        rows sit next to the training rows in time, the rows scored later drift further."""
        cal = getattr(detector, "calibration_scores", None)
        if cal is not None and len(cal) >= 2:
            row_rate = cfg.false_alarm_rate / max(1, rows_per_group)
            margin = float(getattr(detector, "threshold_margin", 1.0))
            floor = max(cfg.min_threshold, margin * calibrated_threshold(cal, row_rate))
            log.info("event=threshold_floor model=%s floor=%.6g level=calibrated n=%d rate=%g",
                     getattr(detector, "version", "?"), floor, len(cal), cfg.false_alarm_rate)
            thr = cls(n_groups, cfg, floor=floor, refit_every=refit_every)
            thr.thresholds[:] = thr.fitted[:] = floor
            thr.method[:] = CALIBRATED
            return thr
        return cls._for_quantiles(n_groups, cfg, detector, refit_every=refit_every)

    @classmethod
    def _for_quantiles(cls, n_groups: int, cfg: ThresholdConfig, detector: object, *,
                       refit_every: int) -> GroupThreshold:
        """Thresholds for one detector's scores, floored by its package quantiles.

        `detector` may carry ``threshold_quantiles`` (`LiteRTDetector` does; the
        statistical detectors do not and get ``min_threshold`` alone); see `threshold_floor`.
        """
        quantiles = getattr(detector, "threshold_quantiles", None)
        floor, level = threshold_floor(cfg, quantiles)
        log.info("event=threshold_floor model=%s floor=%.6g level=%s",
                 getattr(detector, "version", "?"), floor,
                 "none" if level is None else f"{level:g}")
        return cls(n_groups, cfg, floor=floor, refit_every=refit_every)

    @property
    def warm(self) -> bool:
        """Every group has a threshold."""
        return bool(np.all(self.method != WARMUP))

    def classify(self, group_scores: np.ndarray) -> np.ndarray:
        """bool ``(n_groups,)``: scores above their threshold. Pure."""
        return group_scores > self.thresholds

    def learn(self, group_scores: np.ndarray, exclude: np.ndarray | None = None) -> None:
        """Learn the scores of groups not excluded; refit the groups due.

        With ``quarantine_windows`` q > 0 a score is held for q windows first, and an
        excluded (flagged) window drops the group's held scores: they led up to the flag.
        """
        keep = np.ones(self.n_groups, dtype=bool) if exclude is None else ~exclude
        if self._held.shape[0]:
            self._held_ok[:, ~keep] = False
            i = self._held_pos
            scores, ok = self._held[i].copy(), self._held_ok[i].copy()
            self._held[i], self._held_ok[i] = group_scores, keep
            self._held_pos = (i + 1) % self._held.shape[0]
            group_scores, keep = scores, ok
        self._commit(group_scores, np.flatnonzero(keep))

    def _commit(self, group_scores: np.ndarray, idx: np.ndarray) -> None:
        if idx.size:
            self._hist[idx, self._pos[idx]] = group_scores[idx]
            self._pos[idx] = (self._pos[idx] + 1) % self.cfg.history_windows
            self.count[idx] = np.minimum(self.count[idx] + 1, self.cfg.history_windows)
        due = set(range(self._tick % self.refit_every, self.n_groups, self.refit_every))
        due.update(np.flatnonzero((self.method == WARMUP)
                                  & (self.count >= self.cfg.warmup_windows)).tolist())
        self._tick += 1
        for g in due:
            self._refit(g)

    def _refit(self, g: int) -> None:
        if self.method[g] == CALIBRATED:
            return  # fixed at the calibrated threshold: a slow fault is never learned
        n = int(self.count[g])
        if n < max(self.cfg.warmup_windows, 2):
            return  # a calibrated group keeps its floor, others stay at inf: no events
        t, m = fit_tail(self._hist[g, :n], self.cfg.false_alarm_rate,
                        tail_fraction=self.tail_fraction, min_exceedances=self.min_exceedances,
                        heavy_cap=self.cfg.heavy_tail_cap)
        self.fitted[g] = max(t, self.floor)
        self.method[g] = m
        self._pool(g)

    def _pool(self, g: int) -> None:
        """Set the thresholds in force of group `g`'s neighbours (within
        ``cfg.neighbour_groups`` r) and its own after `g` was refitted: each warm group takes
        the largest fit of the warm groups within r of it.

        A group's history (``history_windows``) is too short for a rare normal transient
        that strikes a zone of the fiber (a narrow surface disturbance near the wellhead:
        one in hours per group, the score of a leak): a group whose last quarter of an hour
        held none fits a light tail and alarms at the next one, while its neighbours, which
        saw one, fitted a heavy tail. The neighbours are more samples of the same zone. The
        price: the zone takes its noisiest group's threshold (off by default)."""
        r = self.cfg.neighbour_groups
        fit, out = self.fitted, self.thresholds
        if r == 0:
            out[g] = fit[g]
            return
        n = self.n_groups
        for j in range(max(0, g - r), min(n, g + r + 1)):
            if not math.isfinite(fit[j]):
                continue  # warming up: no flag yet (inf), and no say over its neighbours
            near = fit[max(0, j - r): j + r + 1]
            out[j] = float(np.max(near[np.isfinite(near)]))

    def reported(self) -> np.ndarray:
        """Thresholds for summaries (finite: 0.0 while warming up)."""
        return np.where(np.isfinite(self.thresholds), self.thresholds, 0.0)
