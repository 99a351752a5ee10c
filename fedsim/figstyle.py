"""One figure style for ``fedsim plot``, the sweep figures and ``fedsim report``.

- Sized for one column of a paper (3.5 in wide; a grid of more than two panels gets the full
  7.16 in), 8-pt fonts, legends below the panels, never over the data.
- The Okabe–Ito colour-blind-safe palette, each colour with its own line style.
- Axis labels with symbols and units from :data:`AXIS_LABELS` (an unknown key is its own label).
- Legends name what differs between the groups in words (``strategy: server-ota``, ``α = 1.5``),
  leaving out a channel part's sub-parameters that are the same for every group.
- Log-log axes where rates are the point (:data:`RATE_METRICS` against rounds).
- Bands only across two or more seeds (median and IQR), with the seed count in the legend.
- Every figure saved as vector PDF and as PNG at :data:`DPI` dots per inch.

Nothing here switches matplotlib's backend or touches pyplot: figures are
:class:`matplotlib.figure.Figure` objects, drawn under :func:`style` (a ``rc_context``) and
saved by their own canvas, so a notebook's inline backend is left alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from cycler import cycler
from matplotlib.figure import Figure

from channels import ChannelConfig, Dispatch
from fedsim.results.labels import PART_KEYS, flatten, short_key

#: Width of one column and of a whole page (two columns), in inches.
COLUMN_WIDTH = 3.5
PAGE_WIDTH = 7.16
#: Height of one panel, in inches.
PANEL_HEIGHT = 1.75
DPI = 200
#: Width of one 8-pt character and of a legend handle with its padding, in inches (estimates).
CHAR_WIDTH, HANDLE_WIDTH = 0.062, 0.5
FORMATS = ("pdf", "png")

#: Okabe & Ito (2008), black moved last and yellow (hard to see on white) after it.
OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#D55E00", "#0072B2", "#CC79A7", "#000000", "#F0E442")
#: Solid, dash-dot, long dash, dash-dot-dot, dash-dot-dot-dot; never short dashes (the virtual
#: average's) nor dots (the theory's).
LINESTYLES = ("-", (0, (6, 1.5, 1, 1.5)), (0, (9, 2.5)), (0, (6, 1.5, 1, 1.5, 1, 1.5)),
              (0, (6, 1.5, 1, 1.5, 1, 1.5, 1, 1.5)), "-", (0, (6, 1.5, 1, 1.5)), (0, (9, 2.5)))
#: The virtual-average reference of UE-held strategies: thin short dashes, in its group's colour.
REFERENCE = {"linestyle": (0, (3, 2)), "linewidth": 0.9}
#: Theory curves: thin dots, in their group's colour.
THEORY = {"linestyle": (0, (1, 1.2)), "linewidth": 1.0}

RC = {
    "font.size": 8, "axes.labelsize": 8, "axes.titlesize": 8, "xtick.labelsize": 8, "ytick.labelsize": 8,
    "legend.fontsize": 8, "legend.title_fontsize": 8, "legend.frameon": False,
    "lines.linewidth": 1.2, "axes.linewidth": 0.6, "xtick.major.width": 0.6, "ytick.major.width": 0.6,
    "axes.grid": True, "grid.linewidth": 0.4, "grid.alpha": 0.35,
    "axes.prop_cycle": cycler(color=OKABE_ITO, linestyle=LINESTYLES),
    "savefig.dpi": DPI, "pdf.fonttype": 42, "ps.fonttype": 42,
}

AXIS_LABELS = {
    "gap": "optimality gap f(w_t) − f*",
    "dist": "distance ‖w_t − w*‖",
    "err_p": "‖w_t − w*‖^p, mean over UEs",
    "loss": "test loss",
    "train_loss": "training loss",
    "accuracy": "test accuracy",
    "perplexity": "test perplexity",
    "ppl_floor": "perplexity floor",
    "routing_fluctuation": "routing fluctuation",
    "sim_time": "simulated time [s]",
    "round": "round t",
    "consensus": "consensus distance",
    "noise_scale": "effective noise scale",
    "snr_db": "SNR [dB]",
    "tx_energy_max": "max transmit energy / P",
}
#: Metrics whose decay rate is the point: log-log against rounds.
RATE_METRICS = frozenset({"gap", "dist", "err_p"})
#: Metrics spanning decades: log y.
LOG_METRICS = RATE_METRICS | {"consensus", "noise_scale"}

#: How a swept key reads in a legend; ``{}`` is its value.
KEY_FORMATS = {
    "strategy.name": "strategy: {}",
    "channel.interference": "interference: {}",
    "channel.fading": "fading: {}",
    "channel.power_control": "power control: {}",
    "channel.scale": "c = {}",
    "channel.gsnr_db": "GSNR = {} dB",
    "timing.latency_ratio": "τ_cm/τ_cp = {}",
    "train.lr.eta": "η = {}",
    "train.lr.schedule": "step size: {}",
    "train.local_steps": "K = {}",
    "workload.num_ues": "N = {}",
    "workload.router": "router: {}",
    "rounds": "T = {}",
    "seed": "seed {}",
}
#: Switches that read better as words than as on/off: key -> (word for False, word for True).
BOOL_WORDS = {"workload.iid": ("non-IID", "IID"), "strategy.overlap.enabled": ("sequential", "overlapped")}
#: How a channel part's sub-parameter reads.
PARAM_FORMATS = {"alpha": "α = {}", "scale": "c = {}", "sigma": "σ = {}", "beta": "β = {}", "rho": "ρ = {}"}
PART_NAMES = {"sas": "SαS", "gaussian": "Gaussian", "rayleigh": "Rayleigh", "rician": "Rician"}
#: The order of a legend label's parts, by key prefix (others follow, alphabetically).
KEY_ORDER = ("strategy.name", "strategy", "channel", "timing", "train", "workload")
#: What a single run is described by when nothing differs.
HEADLINE = ("strategy.name", "channel.interference")


@contextmanager
def style() -> Iterator[None]:
    """The rc settings of every fedsim figure, for the duration of the block."""
    with matplotlib.rc_context(RC):
        yield


def axis_label(key: str) -> str:
    """``gap`` -> ``optimality gap f(w_t) − f*``; ``avg_gap`` -> the same, of the virtual average."""
    if key in AXIS_LABELS:
        return AXIS_LABELS[key]
    if key.startswith("avg_") and key[4:] in AXIS_LABELS:
        return f"{AXIS_LABELS[key[4:]]}, virtual average"
    return key


def loglog(metric: str, x: str) -> bool:
    """Whether ``metric`` against ``x`` is drawn on log-log axes (a rate against rounds)."""
    return x == "round" and metric in RATE_METRICS


def show(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# ------------------------------------------------------------------------------ legends


def _nested(config: Mapping[str, Any], key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _part(config: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = _nested(config, key)
    return dict(value) if isinstance(value, Mapping) else {"name": value}


def _defaults(key: str, name: Any) -> dict[str, Any]:
    """A channel part's default sub-parameters (empty when its model cannot be found)."""
    try:
        field = ChannelConfig.model_fields[key.split(".", 1)[1]]
        dispatch = next(m for m in field.metadata if isinstance(m, Dispatch))
        model = dispatch.model_for({"name": name})
        return {k: f.default for k, f in model.model_fields.items() if k != "name"}
    except (KeyError, StopIteration, ValueError, TypeError, AttributeError):
        return {}


def _part_label(key: str, part: dict[str, Any], parts: Sequence[dict[str, Any]]) -> str:
    """A channel part in words, with only the sub-parameters that tell the groups apart (or,
    for a single run, those that differ from their defaults)."""
    missing = object()
    defaults = _defaults(key, part.get("name"))
    kept = []
    for k, v in part.items():
        present = [p[k] for p in parts if k in p]
        if k == "name" or (len({repr(p) for p in present}) == 1 and (
                defaults.get(k, missing) == v or (len(parts) > 1 and len(present) == len(parts)))):
            continue  # the same wherever it applies, and its default or in every group
        kept.append(PARAM_FORMATS.get(k, k + " = {}").format(show(v)))
    params = ", ".join(kept)
    if len(parts) > 1 and len({repr(p.get("name")) for p in parts}) == 1 and params:
        return params  # same law everywhere: its parameter is the difference
    name = PART_NAMES.get(str(part.get("name")), show(part.get("name")))
    head = KEY_FORMATS.get(key, f"{key.split('.')[-1]}: {{}}").format(name)
    return f"{head} ({params})" if params else head


def _value_label(key: str, value: Any, keys: Sequence[str]) -> str:
    if key in BOOL_WORDS and isinstance(value, bool):
        return BOOL_WORDS[key][value]
    if key in KEY_FORMATS:
        return KEY_FORMATS[key].format(show(value))
    name = short_key(key, keys)
    return f"{name} = {show(value)}" if isinstance(value, int | float) and not isinstance(value, bool) \
        else f"{name}: {show(value)}"


def legend_labels(configs: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> list[str]:
    """One legend label per config (a run's nested config, one per group): the values of
    ``keys`` (the flattened keys that differ) in words, joined by commas."""
    flats = [flatten(dict(c)) for c in configs]
    keys = sorted(keys, key=lambda k: next((i for i, p in enumerate(KEY_ORDER) if k.startswith(p)), len(KEY_ORDER)))
    parts = {k: [_part(c, k) for c in configs] for k in keys if k in PART_KEYS}
    labels = []
    for i, flat in enumerate(flats):
        bits = [_part_label(k, parts[k][i], parts[k]) if k in parts else _value_label(k, flat[k], keys)
                for k in keys if k in parts or k in flat]
        labels.append(", ".join(b for b in bits if b))
    return labels


def describe(config: Mapping[str, Any]) -> str:
    """A single run in words, for a figure with nothing to compare it to."""
    keys = [k for k in HEADLINE if _nested(config, k) is not None]
    return legend_labels([config], keys)[0] or str(config.get("name", "run"))


def seed_labels(labels: Sequence[str], counts: Sequence[int]) -> tuple[list[str], str | None]:
    """Labels and a legend title that say how many seeds each median is over: one title when
    every group has the same k ≥ 2 seeds, else ``(n = k seeds)`` after each label with k ≥ 2.
    Single seeds get neither (there is no band to explain)."""
    many = [k for k in counts if k >= 2]
    if not many:
        return list(labels), None
    if len(set(counts)) == 1:
        return list(labels), f"median and IQR over n = {counts[0]} seeds"
    return [f"{lab} (n = {k} seeds)" if k >= 2 else lab for lab, k in zip(labels, counts, strict=True)], \
        "median and IQR over seeds"


def group_style(i: int) -> dict[str, Any]:
    """Colour and line style of the i-th group (the same pairing as the rc cycle)."""
    return {"color": OKABE_ITO[i % len(OKABE_ITO)], "linestyle": LINESTYLES[i % len(LINESTYLES)]}


# ------------------------------------------------------------------------------ figures


def new_figure(n_panels: int, *, ncols: int = 1, panel_height: float = PANEL_HEIGHT,
               width: float | None = None) -> tuple[Figure, np.ndarray]:
    """A figure of ``n_panels`` axes in ``ncols`` columns (constrained layout); one column wide
    for up to two columns of panels, a page wide beyond. Call inside :func:`style`."""
    nrows = math.ceil(n_panels / ncols)
    width = width or (COLUMN_WIDTH if ncols <= 2 else PAGE_WIDTH)
    fig = Figure(figsize=(width, panel_height * nrows + 0.35), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat[n_panels:]:
        ax.set_visible(False)
    return fig, axes


def legend_below(fig: Figure, handles: Sequence[Any], labels: Sequence[str], title: str | None = None) -> None:
    """One legend under all panels, in as many columns as fit the width; the figure grows by its
    height, so the panels keep theirs."""
    if not handles:
        return
    width = fig.get_figwidth()
    labels = [wrap(s, width - HANDLE_WIDTH) for s in labels]
    longest = max(len(line) for s in labels for line in s.splitlines()) * CHAR_WIDTH + HANDLE_WIDTH
    ncol = max(1, min(len(labels), int(width // longest)))
    lines = sum(max(s.count("\n") + 1 for s in labels[i:i + ncol]) for i in range(0, len(labels), ncol))
    fig.set_figheight(fig.get_figheight() + 0.15 * (lines + (1 if title else 0)) + 0.1)
    fig.legend(list(handles), labels, loc="outside lower center", ncol=ncol, title=title,
               handlelength=2.4, columnspacing=1.2)


def wrap(label: str, width: float) -> str:
    """``label`` broken after its commas into lines of at most ``width`` inches of 8-pt text."""
    limit, lines = max(12, int(width / CHAR_WIDTH)), [""]
    for bit in label.split(", "):
        candidate = f"{lines[-1]}, {bit}" if lines[-1] else bit
        if len(candidate) <= limit or not lines[-1]:
            lines[-1] = candidate
        else:
            lines[-1] += ","
            lines.append(bit)
    return "\n".join(lines)


def legend_below_axes(ax: Any, title: str | None = None) -> None:
    """The legend of axes someone else laid out (``ax=`` from a notebook): under the axes."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.22), title=title,
                  ncol=1, handlelength=2.4)


def save(fig: Figure, out: str | Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write ``out`` with each suffix in ``formats`` (PDF vector, PNG at :data:`DPI`); the figure
    keeps its size (no tight bounding box), so a PNG is figsize × DPI pixels."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    written = []
    with style():
        for fmt in formats:
            path = out.with_suffix(f".{fmt}")
            fig.savefig(path, dpi=DPI, format=fmt)
            written.append(path)
    return written
