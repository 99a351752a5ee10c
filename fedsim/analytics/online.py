"""Analytics computed alongside a run: one call per logged round (see OnlineAnalytics).

Per round (model §8 items 10–16; § numbers: docs/explanation/model.md) the row gains:

- ``err_p``: mean over the evaluated models of ``‖w − w*‖^p``, ``p = (1 + α)/2`` (§9 item 10),
  where the workload knows ``w*``.
- ``theory_dist`` / ``theory_sigma``: the exact §4.4 reference for quadratics (K = 1, additive
  noise on the aggregated gradient): the median of ``‖e_t‖`` under the exact law and the mean
  per-coordinate SαS scale ``σ_t`` of its random part. ``theory_bound``: Theorem A (§4.3) on
  ``E‖w_t − w*‖^p``. Each is logged only where its conditions hold; round 0 says why not.
- ``noise_hill`` / ``noise_tail_slope``: tail-index estimates (§8 item 2) of the interference
  on the aggregate, pooled over the rounds so far after dividing each round's noise by its
  declared scale; ``noise_scale_ratio``: pooled ``median|ξ/c_eff| / median|SαS(α, 1)|`` (1 when
  the channel's noise has the scale it declares). ``nonfinite``: non-finite entries of this
  round's estimate and models; ``dropouts_total``: cumulative drop-outs. The time spent here
  accumulates in ``OnlineAnalytics.total_s`` and goes to ``summary.json`` (``analytics_s``), not
  into the rows, which stay identical for identical seeds.

Round 0 also carries ``constants`` (each ``{"value", "source"}``) and ``theory_notes``.
Nothing here ever returns NaN: the server treats a non-finite float as divergence.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from channels.rng import numpy_generator
from channels.stable import sample_sas
from channels.stats import hill_estimator, sas_median_abs, tail_slope_estimator
from fedsim.analytics.errors import AnalyticsError
from fedsim.analytics.theory import default_p, theorem_a_vp
from fedsim.runtime.schedule import make_lr

#: Pooled normalised-noise buffer (ring) and how much of one round's noise enters it.
BUFFER = 1 << 15
PER_ROUND = 2048
#: Recompute the pooled tail estimators once this many new samples (or a quarter of the pool)
#: have arrived; rows in between carry the last estimate (amortises the O(n) partitions).
STATS_MIN_NEW = 2000
#: Monte-Carlo draws for the median of ‖e_t‖ under the exact §4.4 law (common random numbers).
MC_DRAWS = 128


class OnlineAnalytics:
    """Per-round theory values and channel statistics for ``metrics.jsonl``.

    Args:
        cfg: the ExperimentConfig. workload: the Workload (for its TheoryConstants).
        transmit: what UEs transmit ("gradient", "update", "model"). receiver: the channel's
            receiver (``channels.Receiver``: analog or digital, which noise each UE sees).
        tau_cm: communication latency [s]. delay_steps: D. steps_per_round: local steps per round.
    """

    def __init__(self, cfg: Any, workload: Any, *, transmit: str, receiver: Any, tau_cm: float, delay_steps: int,
                 steps_per_round: int):
        self.cfg, self.workload = cfg, workload
        self.transmit, self.receiver = transmit, receiver
        self.tau_cm, self.delay, self.steps = tau_cm, delay_steps, steps_per_round
        ch = cfg.channel
        self.interference = ch.interference.name
        self.alpha = ch.alpha
        self.p = default_p(self.alpha)
        self.consts = workload.theory_constants()
        self.w_star = None if self.consts.w_star is None else self.consts.w_star.to(torch.float64)
        self.notes: dict[str, str] = {}
        self._buf = np.empty(BUFFER)
        self._n = 0  # samples written so far (ring position = _n % BUFFER)
        self._tail: dict[str, float] = {}
        self._n_stats = 0  # _n at the last estimator update
        self._dropouts = 0
        self._med1 = sas_median_abs(self.alpha) if self.interference != "none" else 1.0
        self.total_s = 0.0  # wall time spent here; kept out of metrics.jsonl so rows stay deterministic
        self._lr = _make_lr(cfg)
        self._setup_reference()
        self._vp: float | None = None
        self._theorem_a_reason = self._theorem_a_conditions()
        self.notes["theorem_a"] = self._theorem_a_reason or "applies (bound on E||w_t - w*||^p from round 1)"

    # ------------------------------------------------------------------ conditions
    def _common_conditions(self) -> str | None:
        """Why the K = 1 additive-noise model of §4.3/§4.4 does not describe this run (None: it does)."""
        cfg, ch, st = self.cfg, self.cfg.channel, self.cfg.strategy
        if self.steps != 1 or cfg.train.local_steps != 1:
            return "needs K = 1 (one step per round)"
        if st.overlap.enabled:
            return "overlapped schedule (stale aggregates, §4.7): no closed form"
        if self.transmit != "gradient" and self.receiver.analog:
            return "needs gradient transmission (noise on the aggregated gradient, §2.4 (a))"
        if st.fraction < 1:
            return "needs full participation (strategy.fraction = 1)"
        if not self.receiver.analog and ch.quant_bits is not None:
            return "quantised digital aggregation: error is not SaS"
        if self.receiver.noise_mode() != "common" and self.interference != "none":
            return "server-free with per-UE noise: models differ (§4.5); only common noise reduces to §4.3"
        if ch.fading.name != "none" or ch.csi_error > 0:
            return "needs fading = none and perfect CSI (fading is multiplicative noise, drop-outs bias the average)"
        if self.receiver.analog and ch.rho not in ("fixed", "fixed-unbounded"):
            return "needs a constant power scaling, channel.rho = fixed or fixed-unbounded (full/norm/COTAF make " \
                   "c_eff depend on the iterate)"
        if self.interference == "sas" and not 1.0 < self.alpha <= 2.0:
            return f"needs 1 < alpha <= 2, got {self.alpha}"
        return None

    def _setup_reference(self) -> None:
        """Exact §4.4 reference: separable quadratic, Hessian of f = diag(Σ q_n a_n)."""
        self._ref = False
        reason = self._common_conditions()
        wl = self.workload
        if reason is None and getattr(wl, "name", "") != "quadratic":
            reason = "exact reference needs the quadratic workload (§4.4)"
        grad_noise = float(getattr(getattr(wl, "cfg", None), "grad_noise", 0.0) or 0.0)
        if reason is None and grad_noise > 0 and self.alpha < 2:
            reason = "Gaussian gradient noise + SaS interference is not SaS: no exact law"
        if reason is not None:
            self.notes["quadratic_reference"] = reason
            return
        q = wl.ue_weights().to(torch.float64)
        self._mu_i = (q @ wl.a).numpy()
        self._det = (wl.init_params().to(torch.float64) - wl.w_star).numpy().copy()
        self._disp = np.zeros_like(self._det)  # σ_t^α per coordinate
        # Averaged Gaussian gradient noise, std g·sqrt(Σ q²) per coordinate = SαS(2, that/√2).
        self._grad_c = grad_noise * float(torch.sqrt((q * q).sum())) / math.sqrt(2.0)
        gen = torch.Generator().manual_seed(int(self.cfg.seed) * 7919 + 17)
        self._Z = sample_sas((MC_DRAWS, self._det.size), self.alpha, generator=gen, dtype=torch.float64).numpy()
        self._ref = True
        self.notes["quadratic_reference"] = "applies (exact law, §4.4; c_eff from each round's noise_scale)"

    def _theorem_a_conditions(self) -> str | None:
        reason = self._common_conditions()
        if reason is not None:
            return reason
        c, lr = self.consts, self.cfg.train.lr
        if c.mu is None or c.L is None or self.w_star is None:
            return "needs known mu, L and w* (strongly convex workload)"
        if lr.schedule != "inverse":
            return "needs the inverse schedule eta_t = theta/(t + gamma)"
        if self._sigma_p() is None:
            return "gradient-noise bound sigma^2 unknown (use full-batch gradients)"
        try:  # θ/γ ≤ μ/L² and pμθ/2 > p − 1 do not depend on c_eff: check them up front
            self._theorem_a_vp(0.0)
        except AnalyticsError as exc:
            return str(exc)
        return None

    def _theorem_a_vp(self, c_eff: float) -> float:
        lr, c = self.cfg.train.lr, self.consts
        w0 = self.workload.init_params().to(torch.float64)
        return theorem_a_vp(p=self.p, alpha=self.alpha, mu=c.mu, L=c.L, theta=lr.theta, gamma=lr.gamma,
                            sigma_p=self._sigma_p() or 0.0, d=self.workload.dim, c_eff=c_eff,
                            w0_dist=float(torch.linalg.vector_norm(w0 - self.w_star)))

    def _sigma_p(self) -> float | None:
        """Norm bound on the averaged gradient noise: (E‖ζ‖²)^{1/2} ≥ (E‖ζ‖^p)^{1/p} (Jensen)."""
        if self.consts.sigma2 is not None:
            q = self.workload.ue_weights().to(torch.float64)
            return math.sqrt(self.consts.sigma2 * float((q * q).sum()))
        wcfg = getattr(self.workload, "cfg", None)
        if getattr(wcfg, "batch_size", None) == 0:
            return 0.0  # full-batch gradients: ζ = 0
        return None

    # ------------------------------------------------------------------ constants
    def constants(self) -> dict[str, Any]:
        """Every constant with its source (workload, configuration or online estimate)."""
        c = self.consts
        out: dict[str, Any] = {}
        for name in ("L", "mu", "f_star", "sigma2", "G2", "heterogeneity"):
            v = getattr(c, name)
            out[name] = {"value": None if v is None else float(v),
                         "source": c.sources.get(name, "unknown for this workload")}
        out["w_star"] = {"value": "known" if c.w_star is not None else None,
                         "source": c.sources.get("w_star", "unknown for this workload")}
        out["alpha"] = {"value": self.alpha, "source": f"config: channel.interference={self.interference}"}
        out["p"] = {"value": self.p, "source": "(1 + alpha)/2 (§9 item 10)"}
        out["c_eff"] = {"value": None, "source": "per round: the channel's noise_scale (logged each round)"}
        out["tail_index"] = {"value": None, "source": "estimated online: noise_hill / noise_tail_slope"}
        out["tau_cm"] = {"value": self.tau_cm, "source": "fedsim.runtime.clock.communication_time"}
        out["delay_steps"] = {"value": self.delay, "source": "ceil(tau_cm / tau_cp) (§3(d))"}
        return out

    # ------------------------------------------------------------------ per round
    def row(self, r: int, row: dict[str, Any], channel: Any | None, models: torch.Tensor | None) -> dict[str, Any]:
        """Extra keys for the row of round ``r`` (0 = initial model). ``channel`` is that round's
        ``channels.ChannelResult`` (None for round 0 or when nobody transmitted); ``models`` is
        the evaluated model ``[1, d]`` (server strategies) or the UE models ``[M, d]``
        (server-free/overlap), or None when the round was not evaluated."""
        t0 = time.perf_counter()
        out: dict[str, Any] = {}
        if r == 0:
            out["constants"] = self.constants()
            out["theory_notes"] = dict(self.notes)
        nonfinite = 0
        if models is not None:
            models = models.cpu()  # no-op on CPU runs; analytics are numpy/scipy work
            nonfinite += _count_nonfinite(models)
            if self.w_star is not None and nonfinite == 0:
                dist = torch.linalg.vector_norm(models.to(torch.float64) - self.w_star, dim=1)
                out["err_p"] = float((dist**self.p).mean())
        if channel is not None:
            nonfinite += _count_nonfinite(channel.estimate)
            self._dropouts += int(channel.dropouts)
            out["dropouts_total"] = self._dropouts
            self._collect(channel, r)
            out.update(self._check_constant_rho(r, channel))
        if r > 0 and self._ref:
            self._advance_reference(r, channel)
        if self._ref:
            out.update(self._reference_row())
        if r > 0 and self._theorem_a_reason is None:
            out.update(self._theorem_a_row(r, channel))
        fresh = self._n - self._n_stats
        if fresh and (fresh >= max(STATS_MIN_NEW, min(self._n, BUFFER) // 4) or r == self.cfg.rounds
                      or "noise_hill" not in self._tail):
            self._tail, self._n_stats = self._tail_stats(), self._n
        out.update(self._tail)
        out["nonfinite"] = nonfinite
        self.total_s += time.perf_counter() - t0
        return out

    def _check_constant_rho(self, r: int, ch: Any) -> dict[str, Any]:
        """Under rho = "fixed" the budget may cap ρ_t, and then c_eff depends on the iterate: the
        theory curves stop from that round on, and the row says why."""
        if (not self.receiver.analog or self.cfg.channel.rho != "fixed" or ch.rho == self.cfg.channel.power
                or not (self._ref or self._theorem_a_reason is None)):
            return {}
        why = f"the power budget capped rho_t at round {r}: c_eff depends on the iterate from then on"
        self._ref = False
        self._theorem_a_reason = why
        self.notes.update(quadratic_reference=why, theorem_a=why)
        return {"theory_notes": {"quadratic_reference": why, "theorem_a": why}}

    def _collect(self, ch: Any, r: int) -> None:
        """Append this round's noise, divided by its declared scale, to the pooled buffer."""
        if self.interference == "none":
            return
        parts = ((ch.noise_common, ch.noise_scale_common), (ch.noise_per_ue, ch.noise_scale_per_ue))
        if ch.noise_common is None and ch.noise_per_ue is None:
            parts = ((ch.noise, ch.noise_scale),)
        for x, scale in parts:
            s = torch.as_tensor(scale, dtype=torch.float64)
            if x is None or not bool((s > 0).any()):
                continue
            z = x.detach().to("cpu", torch.float64)
            if s.dim():  # a scale per UE row (a faded relay downlink, D2D slots); 0: nothing received
                keep = s > 0
                z = z[keep] / s[keep].unsqueeze(1)
            else:
                z = z / float(s)
            a = z.reshape(-1)
            if a.numel() > PER_ROUND:  # subsample big tensors: cost stays O(PER_ROUND)
                rng = numpy_generator(self.cfg.seed, "analytics", r)  # keyed by round: resumable
                a = a[torch.from_numpy(rng.integers(0, a.numel(), PER_ROUND))]
            v = a.numpy()
            v = v[np.isfinite(v)]
            i0 = self._n % BUFFER
            k = min(v.size, BUFFER - i0)
            self._buf[i0:i0 + k] = v[:k]
            self._buf[:v.size - k] = v[k:]
            self._n += v.size

    def _tail_stats(self) -> dict[str, float]:
        x = self._buf[: min(self._n, BUFFER)]
        out: dict[str, float] = {"noise_samples": int(x.size)}
        if x.size >= 200:
            out["noise_scale_ratio"] = float(np.median(np.abs(x))) / self._med1
            hill = hill_estimator(x, k_frac=0.005)
            if math.isfinite(hill):
                out["noise_hill"] = hill
            # Survival window 1e-2 .. 5/n: enough ranks on a pooled buffer of 10^3–10^4.5 values.
            slope = tail_slope_estimator(x, tail_frac=0.01, min_count=5, n_points=20)
            if math.isfinite(slope):
                out["noise_tail_slope"] = slope
        return out

    def _advance_reference(self, r: int, ch: Any | None) -> None:
        """One step of the §4.4 recursion with the realised c_eff of round r (step s = r − 1)."""
        eta = self._lr(r - 1)
        a = 1.0 - self._mu_i * eta
        c = float(ch.noise_scale) if ch is not None and self.interference != "none" else 0.0
        if self.alpha == 2.0:
            c = math.sqrt(c * c + self._grad_c**2)
        self._det *= a
        self._disp = np.abs(a) ** self.alpha * self._disp + (eta * c) ** self.alpha

    def _reference_row(self) -> dict[str, float]:
        sigma = self._disp ** (1.0 / self.alpha)
        e = self._det + sigma * self._Z
        sq = np.einsum("md,md->m", e, e)
        half = MC_DRAWS // 2  # median of an even count: mean of the two middle order statistics
        mid = np.partition(sq, (half - 1, half))[half - 1:half + 1]
        return {"theory_dist": float(np.sqrt(mid).mean()), "theory_sigma": float(sigma.mean())}

    def _theorem_a_row(self, r: int, ch: Any | None) -> dict[str, float]:
        if self._vp is None:
            c_eff = float(ch.noise_scale) if ch is not None and self.interference != "none" else 0.0
            try:
                self._vp = self._theorem_a_vp(c_eff)
            except AnalyticsError as exc:
                self._theorem_a_reason = str(exc)
                return {"theory_notes": {"theorem_a": str(exc)}}
        # After round r the model has taken t = r steps (K = 1).
        return {"theory_bound": self._vp / (r + self.cfg.train.lr.gamma) ** (self.p - 1.0)}


def _count_nonfinite(x: torch.Tensor) -> int:
    return 0 if bool(torch.isfinite(x).all()) else int((~torch.isfinite(x)).sum())


def _make_lr(cfg: Any) -> Any:
    return make_lr(cfg.train.lr, cfg.rounds * cfg.train.local_steps)
