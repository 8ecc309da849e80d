"""The web page of a run (`--html`), opened in a real browser: headless Chromium runs its
script from disk, and every rank's row, every action and every idle slot of the page's
data must be in what it drew; a screenshot must not be blank.

Skips where no Chromium is installed, and fails instead under MPIPIPE_REQUIRE_BROWSER=1
(which CI sets, after installing Debian's chromium).
"""

import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import pytest

from mpipipe.comm.launcher import mpiexec_command

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
if BROWSER is None and os.environ.get("MPIPIPE_REQUIRE_BROWSER") == "1":
    pytest.fail("MPIPIPE_REQUIRE_BROWSER=1 but no chromium on PATH (apt-get install chromium)",
                pytrace=False)
needs_browser = pytest.mark.skipif(BROWSER is None, reason="no chromium on PATH: "
                                   "apt-get install chromium to run the browser tests")
# Headless, and nothing that reaches for the network: the page must work without it.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def browser(tmp_path, *args):
    profile = tmp_path / "profile"
    done = subprocess.run([BROWSER, *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


class Drawn(HTMLParser):
    """The SVG elements the page's script drew, with their attributes."""

    def __init__(self):
        super().__init__()
        self.elements = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def of(self, tag, klass, panel=None):
        return [a for t, a in self.elements if t == tag and a.get("class") == klass
                and (panel is None or a.get("data-panel") == panel)]


def page_data(path):
    text = path.read_text()
    found = re.search(r'<script id="data" type="application/json">(.*?)</script>', text, re.S)
    return json.loads(found.group(1).replace("<\\/", "</"))


def drawn_panels(dom):
    """{panel name: Drawn of its svg} from the dumped DOM."""
    panels = {}
    for name, body in re.findall(r'<svg[^>]*data-panel="(\w+)"[^>]*>(.*?)</svg>', dom, re.S):
        drawn = Drawn()
        drawn.feed(body)
        panels[name] = drawn
    return panels


def check_everything_drawn(path, tmp_path):
    data = page_data(path)
    dom = browser(tmp_path, "--dump-dom", path.as_uri())
    panels = drawn_panels(dom)
    assert sorted(panels) == sorted(p["name"] for p in data["panels"])
    for p in data["panels"]:
        drawn = panels[p["name"]]
        assert [int(a["data-rank"]) for a in drawn.of("g", "row")] == list(range(data["ranks"]))
        actions = drawn.of("rect", "action")
        assert [a["data-action"] for a in actions] == [a["label"] for a in p["actions"]]
        assert [int(a["data-rank"]) for a in actions] == [a["rank"] for a in p["actions"]]
        slots = drawn.of("rect", "idle")
        assert [a["data-cause"] for a in slots] == [s["cause"] for s in p["idle"]]
        assert [int(a["data-rank"]) for a in slots] == [s["rank"] for s in p["idle"]]
        assert len(drawn.of("polyline", "memory")) == data["ranks"]
    bubbles = re.findall(r'<tr class="bubble" data-name="(\w+)">', dom)
    assert bubbles == [b["name"] for b in data["bubbles"]]
    return data, dom


def not_blank(png):
    """Many colours, and a good share of the picture not white."""
    image = pytest.importorskip("matplotlib.image").imread(png)
    pixels = image[..., :3].reshape(-1, 3)
    coloured = (pixels < 0.95).any(axis=1).mean()
    colours = len({tuple(p) for p in (pixels[::97] * 255).astype(int)})
    return coloured > 0.05 and colours > 8


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A GPT run on 4 ranks, as the README's main job, with --html."""
    folder = tmp_path_factory.mktemp("page")
    done = subprocess.run([*mpiexec_command(4), sys.executable, "-m", "mpipipe", "train",
                           "--model", "gpt", "--steps", "20", "--quiet", "--html",
                           str(folder / "run.html")], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "web page saved in" in done.stdout
    return folder / "run.html"


def test_the_page_is_one_small_file_that_fetches_nothing(trained):
    text = trained.read_text()
    assert os.path.getsize(trained) < 2 * 1024 * 1024
    assert not re.search(r"\b(src|href)\s*=", text), "the page loads nothing"
    # the one address in it is SVG's namespace, a name that is never fetched
    assert set(re.findall(r"https?://[^\s\"'<>)]+", text)) == {"http://www.w3.org/2000/svg"}
    data = page_data(trained)
    assert [p["name"] for p in data["panels"]] == ["planned", "measured"]
    assert {b["name"] for b in data["bubbles"]} == {"textbook", "replay", "measured"}


@needs_browser
def test_the_browser_draws_every_rank_action_and_idle_slot(trained, tmp_path):
    data, _ = check_everything_drawn(trained, tmp_path)
    measured = data["panels"][1]
    assert len(measured["actions"]) == 4 * 8 * 2      # an F and a BW per micro-batch and rank
    assert any(s["cause"] == "message" and s["waited_for"] for s in measured["idle"])


@needs_browser
def test_hovering_an_idle_slot_tells_its_cause_and_points_at_what_it_waited_for(trained,
                                                                                 tmp_path):
    """The page hovers each slot itself under #selftest; what it saw must be each slot's
    cause and producer from the data, the arrow ending on the producer's row."""
    data = page_data(trained)
    dom = browser(tmp_path, "--dump-dom", trained.as_uri() + "#selftest")
    found = re.search(r'<pre id="selftest">(.*?)</pre>', dom, re.S)
    seen = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&")
                      .replace("&lt;", "<").replace("&gt;", ">"))
    waited = [(p["name"], i, s) for p in data["panels"] for i, s in enumerate(p["idle"])
              if s.get("producer")]
    assert len(seen) == len(waited) > 0
    for hovered, (panel, i, slot) in zip(seen, waited):
        assert (hovered["panel"], hovered["i"]) == (panel, i)
        assert hovered["shown"] and hovered["visible"]
        assert hovered["tip"].startswith("idle ") and f": {slot['cause']}\n" in hovered["tip"]
        assert f"waited for {slot['waited_for']}" in hovered["tip"]
        row = 24                                    # the page's row height
        assert hovered["arrow"][1] == slot["rank"] * row + row / 2
        assert hovered["arrow"][3] == slot["producer"]["rank"] * row + row / 2


@needs_browser
def test_a_screenshot_of_the_page_is_not_blank(trained, tmp_path):
    png = tmp_path / "page.png"
    browser(tmp_path, "--window-size=1200,1000", f"--screenshot={png}", trained.as_uri())
    assert not_blank(png)


@needs_browser
@pytest.mark.parametrize("schedule", ["zbv", "interleaved"])
def test_a_plan_from_simulate_is_drawn_too(tmp_path, schedule):
    path = tmp_path / f"{schedule}.html"
    done = subprocess.run([sys.executable, "-m", "mpipipe", "simulate", "--schedule", schedule,
                           "--stages", "4", "--microbatches", "8", "--costs", "comm=0.2",
                           "--html", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    data, _ = check_everything_drawn(path, tmp_path)
    assert [p["name"] for p in data["panels"]] == ["planned"]


@needs_browser
def test_a_saved_trace_becomes_a_page(tmp_path):
    trace, path = tmp_path / "t.json", tmp_path / "report.html"
    done = subprocess.run([*mpiexec_command(2), sys.executable, "-m", "mpipipe", "train",
                           "--steps", "3", "--quiet", "--trace", str(trace)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([sys.executable, "-m", "mpipipe", "report", str(trace), "--html",
                           str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    data, _ = check_everything_drawn(path, tmp_path)
    assert [p["name"] for p in data["panels"]] == ["measured"]
