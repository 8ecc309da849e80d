"""Timelines as pictures (matplotlib, the `plot` extra).

One row per rank, time to the right, one box per action: F blue, B (or the
fused BW) green, W orange, a recomputed forward purple; odd chunks in a
lighter shade; the micro-batch number inside the box when it fits. Waiting for
a message is a hatched grey box; time that is neither is left empty: that
white space is the bubble. The two actions of an overlapped pair (DualPipe's
F&B) share a black outline; the part of an action spent in tensor-parallel
all-reduces is a dark band at its end. The plan (simulator) and the measurement (engine)
are drawn by the same function, so `compare` can stack them.
"""

import importlib.util
import os

from mpipipe.errors import ConfigError

COLOURS = {"F": ("#2f6db5", "#8fb3e0"), "BW": ("#2e8b57", "#93cfa9"),
           "B": ("#2e8b57", "#93cfa9"), "W": ("#e08a1e", "#f2c48a"),
           "R": ("#7b4fa0", "#c2a7d8")}
WAIT_COLOUR = "#bbbbbb"
REDUCE_COLOUR = "#c0392b"
COLLECTIVE_COLOUR = "#333333"


def needs_matplotlib():
    """Before any work: ConfigError unless matplotlib can be imported."""
    if importlib.util.find_spec("matplotlib") is None:
        raise ConfigError("--timeline needs matplotlib: pip install 'mpipipe[plot]'")


def check_writable(path):
    """Before any work: can `path` (a picture, a trace) be written? ConfigError saying why not."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"cannot write {path}: {folder} is not a writable folder")


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("drawing PNG timelines needs matplotlib: pip install 'mpipipe[plot]'") \
            from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _draw(ax, events, num_ranks, title, unit, end):
    boxes, waits, reduces, talks = {}, [], [], []
    for e in events:
        kind = e.action.kind
        width = e.end - e.start
        if kind in COLOURS:
            boxes.setdefault(COLOURS[kind][e.action.chunk % 2], []).append(e)
            if e.collective > 0:      # the tensor all-reduces inside it, drawn at its end
                talks.append(e._replace(start=e.end - e.collective))
            if width > end / 60:
                ax.text(e.start + width / 2, e.rank, str(e.action.microbatch), ha="center",
                        va="center", fontsize=7, color="white")
        elif kind.startswith("RECV") and width > end / 400:
            waits.append(e)
        elif kind == "ALLREDUCE":       # beside the actions: a thin bar along the row's top
            reduces.append(e)
    for colour, group in boxes.items():
        _boxes(ax, group, 0.8, facecolors=colour, edgecolors="white", linewidths=0.5)
    _boxes(ax, waits, 0.5, facecolors="none", edgecolors=WAIT_COLOUR, hatch="////", linewidths=0)
    _boxes(ax, reduces, 0.1, offset=-0.45, facecolors=REDUCE_COLOUR)
    _boxes(ax, talks, 0.2, offset=0.3, facecolors=COLLECTIVE_COLOUR)
    for first, second in _pairs(events):
        ax.barh(first.rank, second.end - first.start, left=first.start, height=0.9,
                color="none", edgecolor="black", linewidth=1.0)
    ax.set_yticks(range(num_ranks))
    ax.set_yticklabels([f"rank {r}" for r in range(num_ranks)])
    ax.set_ylim(num_ranks - 0.5, -0.5)
    ax.set_xlim(0, end)
    ax.set_xlabel(unit)
    ax.set_title(title, fontsize=10)


def _boxes(ax, events, height, offset=0.0, **style):
    """One collection of boxes per row (broken_barh): a plan of thousands of actions
    draws in a fraction of a second, where a patch per box takes many."""
    rows = {}
    for e in events:
        rows.setdefault(e.rank, []).append((e.start, e.end - e.start))
    for rank, spans in rows.items():
        ax.broken_barh(spans, (rank + offset - height / 2, height), **style)


def _pairs(events):
    """(first, second) events of every overlapped pair: the first is marked
    pairs_with_next, the second is the next F/B/BW/W its rank ran."""
    pairs, open_pair = [], {}
    for e in sorted(events, key=lambda e: (e.rank, e.start)):
        if e.action.kind not in ("F", "B", "BW", "W"):
            continue
        if e.rank in open_pair:
            pairs.append((open_pair.pop(e.rank), e))
        if e.action.pairs_with_next:
            open_pair[e.rank] = e
    return pairs


def _legend(figure, pairs=False, collectives=False):
    from matplotlib.patches import Patch

    handles = [Patch(color=COLOURS[k][0], label=label) for k, label in
               (("F", "F forward"), ("B", "B / BW backward"), ("W", "W weight gradient"),
                ("R", "R recomputed forward"))]
    handles.append(Patch(color=COLOURS["F"][1], label="lighter: odd chunk"))
    handles.append(Patch(facecolor="none", edgecolor=WAIT_COLOUR, hatch="////",
                         label="waiting for a message"))
    handles.append(Patch(color=REDUCE_COLOUR, label="data-parallel all-reduce (thin bar)"))
    if pairs:
        handles.append(Patch(facecolor="none", edgecolor="black", label="overlapped pair"))
    if collectives:
        handles.append(Patch(color=COLLECTIVE_COLOUR, label="in tensor all-reduces"))
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7,
                  frameon=False)


def draw(path, panels, width=11.0):
    """Save a PNG of one or more timelines stacked: panels = [(events, num_ranks, title, unit)].

    Stacked panels share one time axis, so a plan and a measurement compare at a glance.
    """
    plt = _pyplot()
    end = max((e.end for p in panels for e in p[0]), default=1.0) or 1.0
    heights = [0.9 + 0.35 * p[1] for p in panels]
    figure, axes = plt.subplots(len(panels), 1, figsize=(width, sum(heights) + 0.6),
                                gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, (events, num_ranks, title, unit) in zip(axes[:, 0], panels):
        _draw(ax, events, num_ranks, title, unit, end)
    figure.tight_layout(rect=(0, 0.06 if len(panels) > 1 else 0.1, 1, 1))
    _legend(figure, any(_pairs(p[0]) for p in panels),
            any(e.collective > 0 for p in panels for e in p[0]))
    figure.savefig(path, dpi=100)
    plt.close(figure)
