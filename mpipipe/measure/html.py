"""One self-contained HTML page of a step: the plan and the run, every idle slot explained.

`write(path, data)` writes a single file that opens from disk in any browser, with
nothing fetched from anywhere: the style and the script are inline, and the data is
the JSON that `page_data` builds (the same figures the summary prints). The page
draws, per rank and aligned in time, the planned and the measured timeline; hovering
an action shows what it was, hovering an idle slot shows its cause (idle.py) and
draws an arrow to the action it waited for. Below them, the activations each rank
held over the step, and the three bubbles the lessons teach, with their formulas.

The script is plain JavaScript, written to be read: it turns the JSON into SVG.
"""

import html
import json

from mpipipe.schedules.actions import ALLREDUCE, BW, B, F, W
from .idle import breakdown, idle_slots, longest, slot_dict, step_span

BUBBLE_FORMULAS = {
    "planned": "this plan: 1 - (compute time of all ranks) / (P x makespan)",
    "textbook": "the schedule planned with F = B = W and free messages (1F1B and GPipe: "
                "(P-1)/(m+P-1))",
    "replay": "this step again with each action as long as it took and free messages: "
              "the floor these action times allow",
    "measured": "1 - (compute time of all ranks) / (P x span), span = the step's start to "
                "its last compute",
}


def held_curve(events, rank, bytes_each=None):
    """[(time, held), ...] of one rank: the micro-batches whose activations it keeps (one
    more at the end of an F, one fewer at the end of the backward that frees it: BW, or W
    when the backward is split), times `bytes_each` if given."""
    split = any(e.action.kind == B for e in events if e.rank == rank)
    frees = (W,) if split else (BW,)
    held, curve = 0, [(0.0, 0)]
    for e in sorted((e for e in events if e.rank == rank), key=lambda e: e.end):
        step = 1 if e.action.kind == F else -1 if e.action.kind in frees else 0
        if step:
            held += step
            curve.append((e.end, held * (bytes_each or 1)))
    return curve


def panel(name, events, schedule, bytes_each=None):
    """One timeline of the page: its compute actions, idle slots and memory curves."""
    slots = idle_slots(events, schedule)
    actions = [{"rank": e.rank, "label": str(e.action), "kind": e.action.kind,
                "microbatch": e.action.microbatch, "chunk": e.action.chunk,
                "stage": schedule.stage(e.rank, e.action.chunk), "start": e.start, "end": e.end,
                "tensor": e.collective}
               for e in events if e.action.is_compute]
    reductions = [{"rank": e.rank, "start": e.start, "end": e.end}
                  for e in events if e.action.kind == ALLREDUCE]
    return {"name": name, "span": step_span(events), "actions": actions,
            "reductions": reductions,
            "idle": [slot_dict(s, 1) for s in slots],
            "breakdown": breakdown(slots, schedule.num_ranks),
            "memory": [held_curve(events, r, bytes_each and bytes_each[r])
                       for r in range(schedule.num_ranks)],
            "memory_unit": "KiB" if bytes_each else "micro-batches",
            "longest": slot_dict(longest(slots), 1)}


def bytes_per_microbatch(summary):
    """Per rank, one micro-batch's activations: its peak stash bytes over its peak count."""
    return [b / n if n else 0 for b, n in zip(summary.peak_stash_bytes, summary.peak_stash)]


def page_data(title, schedule, planned=None, measured=None, bubbles=None, unit="ms",
              bytes_each=None, facts=None):
    """The page's JSON: `planned` and `measured` are event lists of one step in `unit`
    (either may be None), `bubbles` {"textbook": x, "replay": y, "measured": z} (those
    known), `bytes_each` per rank the bytes of one micro-batch's activations, `facts`
    a few lines about the run."""
    panels = [panel(name, events, schedule, bytes_each and [b / 1024 for b in bytes_each])
              for name, events in (("planned", planned), ("measured", measured))
              if events is not None]
    return {"title": title, "unit": unit, "ranks": schedule.num_ranks, "panels": panels,
            "bubbles": [{"name": k, "value": v, "formula": BUBBLE_FORMULAS[k]}
                        for k, v in (bubbles or {}).items() if v is not None],
            "facts": list(facts or [])}


def measured_bubble(events, num_ranks):
    """The bubble of one step's events, as the summary measures it."""
    from mpipipe.plan.timeline import Timeline

    return Timeline.of_events(events, num_ranks).bubble_fraction


def render(data):
    """The page as text: the template with the data inlined (`</` escaped, so that no
    string in the data can close the script element)."""
    payload = json.dumps(data).replace("</", "<\\/")
    return (TEMPLATE.replace("@TITLE@", html.escape(data["title"]))
            .replace("@DATA@", payload).replace("@SCRIPT@", SCRIPT).replace("@STYLE@", STYLE))


def write(path, data):
    with open(path, "w", encoding="utf-8") as out:
        out.write(render(data))


TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>@TITLE@</title>
<style>@STYLE@</style></head>
<body>
<h1>@TITLE@</h1>
<div id="facts"></div>
<div id="controls">
  <label>zoom <input id="zoom" type="range" min="1" max="40" value="1"></label>
  <label>time <input id="scrub" type="range" min="0" max="1000" value="0"></label>
  <span id="now"></span>
</div>
<div id="panels"></div>
<div id="legend"></div>
<h2>The bubble, three ways</h2>
<table id="bubbles"></table>
<h2>Idle time per rank, by cause</h2>
<table id="causes"></table>
<div id="tip"></div>
<script id="data" type="application/json">@DATA@</script>
<script>@SCRIPT@</script>
</body></html>
"""

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 1.5em; }
#controls { margin: .8em 0; } #controls label { margin-right: 1.5em; }
.scroll { overflow-x: auto; border: 1px solid #ddd; margin-bottom: .8em; }
.panel-title { font-weight: 600; margin: .6em 0 .2em; }
svg text { font-size: 11px; }
rect.action { stroke: #fff; stroke-width: .5; }
rect.idle { opacity: .75; }
rect:hover { stroke: #000; stroke-width: 1.5; }
#tip { position: fixed; display: none; background: #fffbe6; border: 1px solid #aa8;
       padding: .4em .6em; max-width: 32em; pointer-events: none; white-space: pre-line; }
table { border-collapse: collapse; } td, th { padding: .2em .8em; border-bottom: 1px solid #eee;
       text-align: left; }
.swatch { display: inline-block; width: 1em; height: 1em; vertical-align: middle;
          margin: 0 .3em 0 1em; }
"""

SCRIPT = r"""
const data = JSON.parse(document.getElementById("data").textContent);
const SVG = "http://www.w3.org/2000/svg";
const ROW = 24, LEFT = 64, WIDTH = 900;
const KIND_COLOUR = {F: "#4c78a8", B: "#54a24b", BW: "#54a24b", W: "#f58518", R: "#b279a2"};
const CAUSE_COLOUR = {"warm-up": "#c7c7c7", "message": "#e45756", "all-reduce": "#eeca3b",
                      "between actions": "#d4a6c8", "cool-down": "#9d9d9d"};
const CAUSE_TEXT = {
  "warm-up": "before the rank's first compute action: the pipeline filling",
  "message": "waiting for a peer's activation or gradient",
  "all-reduce": "waiting for the data-parallel all-reduce of the gradients",
  "between actions": "posting sends, the Python between actions, waiting for a core",
  "cool-down": "after the rank's last compute action: the pipeline draining"};
const span = Math.max(...data.panels.map(p => p.span), 1e-12);
let zoom = 1;

function el(name, attrs, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}
const x = t => LEFT + (t / span) * WIDTH * zoom;
const fmt = t => t.toFixed(3) + " " + data.unit;

function tipOn(node, text) {   // hovering shows `text`
  node.dataset.tip = text;
}

function drawPanel(panel, holder) {
  holder.innerHTML = "";
  const rows = data.ranks, memoryHeight = 40;
  const height = rows * ROW + 20 + rows * memoryHeight + 10;
  const svg = el("svg", {width: LEFT + WIDTH * zoom + 20, height: height,
                         "data-panel": panel.name}, holder);
  for (let r = 0; r < rows; r++) {
    const row = el("g", {class: "row", "data-rank": r}, svg);
    const text = el("text", {x: 4, y: r * ROW + 16}, row);
    text.textContent = "rank " + r;
  }
  panel.idle.forEach((s, i) => {
    const box = el("rect", {class: "idle", "data-cause": s.cause, "data-i": i, "data-rank": s.rank,
                            x: x(s.start), y: s.rank * ROW + 3, height: ROW - 6,
                            width: Math.max(x(s.end) - x(s.start), 0.5),
                            fill: CAUSE_COLOUR[s.cause]}, svg);
    let text = `idle ${fmt(s.end - s.start)} on rank ${s.rank}: ${s.cause}\n` + CAUSE_TEXT[s.cause];
    if (s.waited_for) text += `\nwaited for ${s.waited_for}`;
    if (s.producer) text += `, which ended at ${fmt(s.producer.end)}` +
        (s.producer_waited > 0 ? ` after itself waiting ${fmt(s.producer_waited)}` : "");
    tipOn(box, text);
    if (s.producer) box.dataset.arrow = JSON.stringify(s);
  });
  panel.actions.forEach((a, i) => {
    const width = Math.max(x(a.end) - x(a.start), 0.5);
    const box = el("rect", {class: "action", "data-action": a.label, "data-i": i,
                            "data-rank": a.rank, x: x(a.start), y: a.rank * ROW + 2,
                            width: width, height: ROW - 4, fill: KIND_COLOUR[a.kind] || "#888",
                            opacity: a.chunk % 2 ? 0.7 : 1}, svg);
    let text = `${a.label} on rank ${a.rank}: ${a.kind}, micro-batch ${a.microbatch}, ` +
               `chunk ${a.chunk} (stage ${a.stage})\n${fmt(a.start)} .. ${fmt(a.end)}, ` +
               `${fmt(a.end - a.start)}`;
    if (a.tensor > 0) {
      text += `\nof which ${fmt(a.tensor)} in tensor all-reduces`;
      el("rect", {class: "tensor", x: x(a.end) - width * a.tensor / (a.end - a.start),
                  y: a.rank * ROW + ROW - 7, width: width * a.tensor / (a.end - a.start),
                  height: 4, fill: "#000"}, svg);
    }
    tipOn(box, text);
    if (width > 18) {
      const label = el("text", {x: x(a.start) + 2, y: a.rank * ROW + 16, fill: "#fff",
                                "pointer-events": "none"}, svg);
      label.textContent = a.label;
    }
  });
  panel.reductions.forEach(d => {
    el("rect", {class: "reduction", x: x(d.start), y: d.rank * ROW + ROW - 3,
                width: Math.max(x(d.end) - x(d.start), 0.5), height: 2, fill: "#eeca3b"}, svg);
  });
  const top = rows * ROW + 20;
  const peak = Math.max(1e-12, ...panel.memory.flat().map(p => p[1]));
  panel.memory.forEach((curve, r) => {
    const base = top + (r + 1) * memoryHeight - 4;
    let points = "";
    curve.forEach(([t, held], j) => {
      const y = base - (held / peak) * (memoryHeight - 8);
      if (j > 0) points += ` ${x(t)},${base - (curve[j - 1][1] / peak) * (memoryHeight - 8)}`;
      points += ` ${x(t)},${y}`;
    });
    points += ` ${x(span)},${base - (curve[curve.length - 1][1] / peak) * (memoryHeight - 8)}`;
    const line = el("polyline", {class: "memory", "data-rank": r, points: points, fill: "none",
                                 stroke: "#333"}, svg);
    const most = Math.max(...curve.map(p => p[1]));
    tipOn(line, `rank ${r}: activations held, at most ${most.toFixed(1)} ${panel.memory_unit}`);
    const text = el("text", {x: 4, y: base - 8}, svg);
    text.textContent = `held r${r}`;
  });
  el("line", {class: "cursor", x1: LEFT, x2: LEFT, y1: 0, y2: height, stroke: "#000",
              "stroke-dasharray": "3 3"}, svg);
  el("line", {class: "arrow", x1: 0, y1: 0, x2: 0, y2: 0, stroke: "#000", "stroke-width": 2,
              visibility: "hidden"}, svg);
}

function drawAll() {
  const holder = document.getElementById("panels");
  if (!holder.children.length) {
    data.panels.forEach(p => {
      const title = document.createElement("div");
      title.className = "panel-title";
      const longest = p.longest ? ` | longest idle: rank ${p.longest.rank}, ` +
          `${fmt(p.longest.end - p.longest.start)}, ${p.longest.cause}` +
          (p.longest.waited_for ? ` (waited for ${p.longest.waited_for})` : "") : "";
      title.textContent = `${p.name}: ${fmt(p.span)} from the step's start to its last compute` +
                          longest;
      const scroll = document.createElement("div");
      scroll.className = "scroll";
      scroll.dataset.panel = p.name;
      holder.append(title, scroll);
    });
  }
  data.panels.forEach((p, i) => drawPanel(p, holder.querySelectorAll(".scroll")[i]));
  moveCursor();
}

function moveCursor() {
  const fraction = document.getElementById("scrub").value / 1000;
  document.querySelectorAll(".scroll").forEach(s => {
    s.scrollLeft = fraction * (s.scrollWidth - s.clientWidth);
  });
  document.querySelectorAll("line.cursor").forEach(line => {
    line.setAttribute("x1", x(fraction * span));
    line.setAttribute("x2", x(fraction * span));
  });
  document.getElementById("now").textContent = "t = " + fmt(fraction * span);
}

function showArrow(node) {    // from an idle slot to the action it waited for
  const s = JSON.parse(node.dataset.arrow);
  const arrow = node.ownerSVGElement.querySelector("line.arrow");
  arrow.setAttribute("x1", x((s.start + s.end) / 2));
  arrow.setAttribute("y1", s.rank * ROW + ROW / 2);
  arrow.setAttribute("x2", x(s.producer.end));
  arrow.setAttribute("y2", s.producer.rank * ROW + ROW / 2);
  arrow.setAttribute("visibility", "visible");
}

document.addEventListener("mouseover", event => {
  const node = event.target, tip = document.getElementById("tip");
  if (!node.dataset || !node.dataset.tip) return;
  tip.textContent = node.dataset.tip;
  tip.style.display = "block";
  tip.style.left = (event.clientX + 12) + "px";
  tip.style.top = (event.clientY + 12) + "px";
  if (node.dataset.arrow) showArrow(node);
});
document.addEventListener("mouseout", event => {
  if (!event.target.dataset || !event.target.dataset.tip) return;
  document.getElementById("tip").style.display = "none";
  document.querySelectorAll("line.arrow").forEach(a => a.setAttribute("visibility", "hidden"));
});
document.getElementById("zoom").addEventListener("input", e => { zoom = +e.target.value; drawAll(); });
document.getElementById("scrub").addEventListener("input", moveCursor);

function tables() {
  document.getElementById("facts").innerHTML = "";
  data.facts.forEach(line => {
    const p = document.createElement("div");
    p.textContent = line;
    document.getElementById("facts").appendChild(p);
  });
  const bubbles = document.getElementById("bubbles");
  bubbles.innerHTML = "<tr><th>bubble</th><th>fraction</th><th>what it is</th></tr>";
  data.bubbles.forEach(b => {
    const row = bubbles.insertRow();
    row.className = "bubble";
    row.dataset.name = b.name;
    [b.name, b.value.toFixed(3), b.formula].forEach(v => { row.insertCell().textContent = v; });
  });
  const causes = document.getElementById("causes");
  const names = Object.keys(CAUSE_COLOUR);
  causes.innerHTML = "<tr><th>timeline</th><th>rank</th>" +
                     names.map(n => `<th>${n}</th>`).join("") + "</tr>";
  data.panels.forEach(p => p.breakdown.forEach((row, r) => {
    const line = causes.insertRow();
    line.className = "cause-row";
    [p.name, r, ...names.map(n => fmt(row[n]))].forEach(v => { line.insertCell().textContent = v; });
  }));
  document.getElementById("legend").innerHTML = names.map(n =>
    `<span class="swatch" style="background:${CAUSE_COLOUR[n]}"></span>${n}`).join("") +
    " (idle slots; hover one for its cause)";
}

tables();
drawAll();

// With #selftest in the address the page hovers every idle slot that waited for a message
// itself and writes down what a reader would have seen: the tip and the arrow (the browser
// test reads it, so hovering is tested without a mouse).
if (location.hash === "#selftest") {
  const seen = [];
  document.querySelectorAll("rect.idle").forEach(node => {
    if (!node.dataset.arrow) return;
    node.dispatchEvent(new MouseEvent("mouseover", {bubbles: true, clientX: 10, clientY: 10}));
    const arrow = node.ownerSVGElement.querySelector("line.arrow");
    seen.push({panel: node.ownerSVGElement.dataset.panel, i: +node.dataset.i,
               tip: document.getElementById("tip").textContent,
               shown: document.getElementById("tip").style.display === "block",
               arrow: ["x1", "y1", "x2", "y2"].map(k => +arrow.getAttribute(k)),
               visible: arrow.getAttribute("visibility") === "visible"});
    node.dispatchEvent(new MouseEvent("mouseout", {bubbles: true}));
  });
  const out = document.createElement("pre");
  out.id = "selftest";
  out.textContent = JSON.stringify(seen);
  document.body.appendChild(out);
}
"""
