"""The channel schema: every option of the physical layer, validated by pydantic.

This is the one description of the channel. fedsim's experiment config uses it as its
``[channel]`` section; :class:`channels.Channel` and the latency model read it directly. Parts
with parameters of their own (fading laws, interference models, power control) are named by a
registry entry: ``fading = "rayleigh"`` or ``fading = {name = "rician", k = 4.0}``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from channels.fading import FADING
from channels.interference import INTERFERENCE, interference_scale
from channels.power import POWER_CONTROL
from channels.registry import component

#: Keys of earlier versions that moved into a part's own table: what to write instead, given the value.
MOVED = {
    "alpha": 'interference = {{name = "sas", alpha = {}}}',
    "sas_vector": 'interference = {{name = "sas", alpha = 1.5, vector = "{}"}}',
    "rician_k": 'fading = {{name = "rician", k = {}}}',
}


class ChannelConfig(BaseModel):
    """The physical layer. The receiver (server, relay, d2d, digital) is not an option here: the
    strategy decides it. Interference level: set exactly one of ``scale`` (SαS scale c per
    coordinate at a receiver), ``dispersion`` (c^α) or ``gsnr_db`` (geometric SNR P/S0², dB)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True,
                              validate_default=True)

    fading: component(FADING) = Field("none", description="fading law: 'none', 'rayleigh', "
                                                          "{name = 'rician', k = K}")
    csi_error: float = Field(0.0, ge=0, description="variance ε of the CN CSI error at the transmitters "
                                                    "(0 = perfect CSI)")
    power_control: component(POWER_CONTROL) = Field(
        "inversion", description="'inversion' (truncated, drop-out below h_th), 'phase' (phase-only) or "
                                 "'none' (equal gain, no CSI)")
    h_th: float = Field(0.3, ge=0, description="truncation threshold on |ĥ| (linear amplitude)")
    power: float = Field(1.0, gt=0, description="per-UE power budget P (linear)")
    rho: Literal["full", "fixed", "norm", "cotaf", "fixed-unbounded"] = Field(
        "full", description="power scaling ρ_t, capped so that no UE exceeds P: 'full' (the neediest UE at exactly "
                            "P), 'fixed' (ρ = P), 'norm' (P·h_th²/max‖u‖²), 'cotaf' (P/max‖u‖²); "
                            "'fixed-unbounded' (ρ = P, the budget ignored)")
    rho_growth: Literal["none", "lr"] = Field(
        "none", description="'lr': ρ_t grows as (η_0/η_t)², so the noise shrinks with the step size (with rho = "
                            "'fixed' or 'fixed-unbounded'; the budget caps the growth under 'fixed')")
    interference: component(INTERFERENCE) = Field(
        "none", description="interference model: 'none', 'gaussian', {name = 'sas', alpha = α}")
    scale: float | None = Field(None, ge=0, description="SαS scale c per coordinate (Gaussian: std √2·c)")
    dispersion: float | None = Field(None, ge=0, description="c^α")
    gsnr_db: float | None = Field(None, ge=-100, le=200, description="geometric SNR P/S0² [dB]")
    interference_mode: Literal["common", "per_ue", "common+per_ue"] | None = Field(
        None, description="relay: which noise UEs see (default 'common+per_ue'); d2d is always per_ue, "
                          "server always common")
    downlink_scale: float = Field(1.0, ge=0, description="relay: per-UE (downlink) interference scale "
                                                         "relative to the uplink's")
    downlink_h_th: float = Field(0.3, ge=0, description="relay: a UE whose downlink fading |g_m| is below this "
                                                        "misses the round's estimate (linear amplitude)")
    quant_bits: int | None = Field(None, ge=1, le=24, description="digital: bits per entry of stochastic "
                                                                  "quantisation (unset: exact)")
    resources: int = Field(1000, ge=1, description="W: orthogonal real waveforms per symbol")
    symbol_time: float = Field(1e-6, gt=0, description="T_sym [s]")
    bits: int = Field(32, ge=1, le=64, description="digital: bits per entry")
    rate: float = Field(1e6, gt=0, description="digital per-UE link rate [bit/s]")
    propagation: float = Field(0.0, ge=0, description="one-way propagation delay [s]")
    relay_processing: float = Field(0.0, ge=0, description="relay forwarding delay [s]")

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, instead in MOVED.items():
                if key in data:
                    raise ValueError(f"channel.{key} is no longer a channel key: write {instead.format(data[key])}")
        return data

    @model_validator(mode="after")
    def _one_level(self) -> ChannelConfig:
        given = [k for k in ("scale", "dispersion", "gsnr_db") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"set only one of channel.scale, channel.dispersion, channel.gsnr_db (got {given})")
        if self.interference.name != "none" and not given:
            raise ValueError("channel.interference is set: give channel.scale, channel.dispersion or "
                             "channel.gsnr_db")
        if self.rho == "norm" and self.h_th <= 0:
            raise ValueError("channel.rho='norm' uses P·h_th²/max‖v‖²: set channel.h_th > 0")
        if self.rho_growth == "lr" and self.rho not in ("fixed", "fixed-unbounded"):
            raise ValueError(f"channel.rho_growth = 'lr' grows a constant ρ_t; rho = '{self.rho}' rescales ρ_t to the "
                             "payload every round, which cancels the growth: use rho = 'fixed' or 'fixed-unbounded'")
        return self

    @property
    def alpha(self) -> float:
        """The interference's tail index (2 for Gaussian and for none)."""
        return INTERFERENCE.get(self.interference.name)(self.interference, 0.0).alpha

    def interference_level(self) -> float:
        """The per-coordinate scale c at a receiver, from whichever level is given (0: none)."""
        if self.interference.name == "none":
            return 0.0
        return interference_scale(self.alpha, scale=self.scale, dispersion=self.dispersion,
                                  gsnr_db=self.gsnr_db, power=self.power)
