"""The figures a lesson prints beside the textbook's, and where the difference went.

Three bubbles tell the story of a step:
  textbook  the schedule with equal stages, F = B = W and free messages;
  replay    the measured step played again (simulate.replay): every action
            lasting exactly what it lasted here, every message free and
            instant. No run with these action times can be shorter, so the
            replay is a floor; it already holds what the textbook leaves out:
            unequal stages (the last one computes the loss), F, B and W as
            they are here (not equal), small micro-batches that use the
            cores less well, an action slowed by a neighbour on its core;
  measured  the step as it ran.
Whatever the measured step took beyond its replay was spent outside the
actions: waiting for messages, mpipipe's own code between actions, a rank
waiting for a core. `where_the_rest_went` measures each.
"""

import os
import statistics
from dataclasses import dataclass, field

from mpipipe.measure import summary as measure
from mpipipe.schedules.actions import ALLREDUCE, message_key
from mpipipe.plan.simulate import replay
from mpipipe.plan.timeline import Timeline, in_ms


@dataclass
class Trained:
    """One lesson training: the summary on every rank; on rank 0 also, for each step
    after the first (which warms up), the measured Timeline and its replay, in ms."""

    summary: object
    run: object
    measured: list = field(default_factory=list)
    replayed: list = field(default_factory=list)

    @classmethod
    def of(cls, run):
        trained = cls(run.summary, run)
        if run.records is None:           # not rank 0
            return trained
        pp, schedule = run.summary.pp, run.setup.schedule
        for step in range(run.summary.first_step + 1, run.summary.steps):
            events = in_ms(measure.last_step_events(run.records, step))
            trained.measured.append(Timeline.of_events(events, pp))
            trained.replayed.append(replay(schedule, events))
        return trained

    @property
    def bubble(self):
        """The measured bubble, median over the steps after the first."""
        return statistics.median(t.bubble_fraction for t in self.measured)

    @property
    def replay_bubble(self):
        return statistics.median(t.bubble_fraction for t in self.replayed)

    @property
    def lowest_excess(self):
        """The least any step's measured bubble exceeds its own replay's (>= 0 but for
        the clocks of different ranks, which start together only to a few microseconds)."""
        return min(m.bubble_fraction - r.bubble_fraction
                   for m, r in zip(self.measured, self.replayed))

    @property
    def textbook(self):
        """The schedule simulated with equal stages, F = B = W, free messages."""
        return self.summary.bubble_fraction_planned

    @property
    def step_ms(self):
        return self.summary.step_time_s * 1e3

    @property
    def compute_ms(self):
        """Compute per rank and step (median over steps): what the cores did for the model."""
        return statistics.median(sum(t.busy) / t.num_ranks for t in self.measured)

    @property
    def compute_ms_per_rank(self):
        return [statistics.median(t.busy[r] for t in self.measured)
                for r in range(self.summary.pp)]

    def time_in(self, kind):
        """ms per rank and step spent in actions of `kind` (F, BW, B, W, R), median over steps."""
        return statistics.median(
            sum(e.end - e.start for e in t.events if e.action.kind == kind) / t.num_ranks
            for t in self.measured)

    def action_ms(self, kind):
        """The mean time of one action of `kind`, over every measured step and rank."""
        times = [e.end - e.start for t in self.measured for e in t.events if e.action.kind == kind]
        return statistics.mean(times) if times else 0.0

    def explain(self):
        """The lines that put the textbook figure and the measurement side by side."""
        per_rank = " | ".join(f"{t:.1f}" for t in self.compute_ms_per_rank)
        return [f"  step time  {self.step_ms:.1f} ms (median of steps 2..{self.summary.steps}),"
                f" of which computing {per_rank} ms (rank 0 | 1 ...)",
                f"  bubble     {self.textbook:.3f} textbook: equal stages, F = B = W, "
                "free messages",
                f"             {self.replay_bubble:.3f} replay: this run's own action times, "
                "free messages",
                f"             {self.bubble:.3f} measured",
                *where_the_rest_went(self)]


def in_flight(trained):
    """The last step's messages: ms from the send (or from when the receiver began waiting,
    if later) to the receive's end, one figure per message."""
    measured, schedule = trained.measured[-1], trained.run.setup.schedule
    sends = {message_key(schedule, e.rank, e.action): e for e in measured.events
             if e.action.kind.startswith("SEND")}
    return [max(0.0, e.end - max(e.start, sends[message_key(schedule, e.rank, e.action)].start))
            for e in measured.events if e.action.kind.startswith("RECV")]


def where_the_rest_went(trained):
    """Lines saying what the last step spent outside its actions, measured."""
    measured, replayed = trained.measured[-1], trained.replayed[-1]
    by_rank = [sorted((e for e in measured.events if e.rank == r and e.action.kind != ALLREDUCE),
                      key=lambda e: e.start) for r in range(measured.num_ranks)]
    messages = in_flight(trained)
    between = statistics.mean(_between_actions(events) for events in by_rank)
    ranks, cores = trained.summary.ranks_on_node, trained.summary.cores
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [f"  where the rest went, last step: {measured.makespan:.1f} ms measured, "
             f"{replayed.makespan:.1f} ms replayed, {measured.makespan - replayed.makespan:.1f}"
             " ms outside the actions:"]
    if messages:
        lines.append(f"    messages  {len(messages)}, each {statistics.median(messages):.2f} ms "
                     f"from its send to its arrival (median), the slowest "
                     f"{max(messages):.2f} ms: {sum(messages) / measured.num_ranks:.1f} ms "
                     "per rank")
    lines += [f"    Python    {between:.1f} ms per rank between and around the actions "
              "(posting sends, bookkeeping)",
              f"    cores     {ranks} ranks on {cores} cores, load average {load:.1f}"
              + (": ranks and other programs took turns on them" if load > cores - 0.5 else "")]
    return lines


def _between_actions(events):
    """A rank's time neither computing nor waiting in a receive, up to its last action."""
    gaps = sum(max(0.0, b.start - a.end) for a, b in zip(events, events[1:]))
    sends = sum(e.end - e.start for e in events if e.action.kind.startswith("SEND"))
    return gaps + sends + (events[0].start if events else 0.0)


def draw(path, trained, name):
    """The last step's replay above its measurement, on one time axis; a line saying where."""
    from mpipipe.measure.plot import draw as draw_panels

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "no picture: matplotlib is missing (.venv/bin/pip install -e '.[plot]')"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    measured, replayed, pp = trained.measured[-1], trained.replayed[-1], trained.summary.pp
    draw_panels(path, [
        (replayed.events, pp, f"replay of the last step (its own action times, free messages):"
         f" {name}, bubble {replayed.bubble_fraction:.3f}", "ms"),
        (measured.events, pp, f"the last step measured: {name}, bubble "
         f"{measured.bubble_fraction:.3f}", "ms")])
    # The picture is one step, the printed figures are medians: say so, or the two disagree.
    return (f"picture: {os.path.relpath(path)} (the last step, step {trained.summary.steps}: "
            f"its replay above, its measurement below; the figures printed are medians of "
            f"steps 2..{trained.summary.steps})")


def web_page(path, trained, name):
    """The last step as a web page (mpipipe.measure.html): its replay and its measurement,
    every idle slot with its cause. Returns the line that says where it is."""
    from mpipipe.measure import html

    os.makedirs(os.path.dirname(path), exist_ok=True)
    s, run = trained.summary, trained.run
    measured, replayed = trained.measured[-1], trained.replayed[-1]
    html.write(path, html.page_data(
        f"{name}: the last step, step {s.steps}", run.setup.schedule,
        planned=replayed.events, measured=measured.events,
        bubbles={"textbook": s.bubble_fraction_planned, "replay": replayed.bubble_fraction,
                 "measured": measured.bubble_fraction},
        bytes_each=html.bytes_per_microbatch(s),
        facts=["planned: the replay of this step (each action as long as it took, messages "
               "free); measured: the step as it ran", "hover an idle slot for its cause"]))
    slot = s.longest_idle
    why = f", waiting for {slot['waited_for']}" if slot and slot["waited_for"] else ""
    return (f"web page: {os.path.relpath(path)} (open it in a browser: every idle slot says why)"
            + (f"\n  its longest idle slot: rank {slot['rank']}, {slot['end'] - slot['start']:.2f} "
               f"ms, {slot['cause']}{why}" if slot else ""))


def memory_against_bubble(path, planned, planned_title, measured, measured_title):
    """One dot per schedule (name, bubble, memory), planned and measured side by side:
    where each sits in the trade-off. Returns the line that says where the picture is."""
    try:
        import matplotlib
    except ImportError:
        return "no picture: matplotlib is missing (.venv/bin/pip install -e '.[plot]')"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(os.path.dirname(path), exist_ok=True)
    figure, panels = plt.subplots(1, 2, figsize=(11, 4))
    for axes, points, title in ((panels[0], planned, planned_title),
                                (panels[1], measured, measured_title)):
        for i, (name, bubble, memory) in enumerate(points):   # labels alternate up and down
            axes.scatter(bubble, memory, color="tab:blue")
            axes.annotate(name, (bubble, memory), textcoords="offset points",
                          xytext=(6, 4 if i % 2 == 0 else -14))
        axes.set_xlabel("bubble of one step")
        axes.set_ylabel("activations held, fullest rank (micro-batches)")
        axes.set_title(title)
        axes.set_ylim(bottom=0, top=1.15 * max(p[2] for p in points))
        axes.set_xlim(left=0, right=1.25 * max(p[1] for p in points))
    figure.suptitle("memory against bubble")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return f"picture: {os.path.relpath(path)} (each schedule: its bubble across, its memory up;\n  planned on the left, this run's measured median on the right)"
