"""SVG charts of bench/run.sh's results, written by hand (no plotting dependency): generated tokens/s
against clients per engine, with t5serve's ratio to the fastest other engine of its precision, and
open-loop latency (p50, p99) against the arrival rate as a fraction of saturation, with where p99
leaves twice the single-request p50 (within_2x; one panel per server or lever setting, and their
p99 / single-request p50 side by side when there are several). report.py and
bench/open_loop_report.py call write() and open_loop_chart(); the markdown stays theirs. Where each
point lands is Axis.at, checked against the drawn ticks by tests/python/test_charts.py.

Elements carry class and data-* attributes (panel, point, bar, ratio, ref, tick) so that a test or a
script can find them; coordinates are written with two decimals.
"""

import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from datetime import date
from xml.sax.saxutils import quoteattr, escape

WIDTH = 820
COLORS = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f"]
FONT = 'font-family="DejaVu Sans, Helvetica, Arial, sans-serif"'


@dataclass(frozen=True)
class Box:
    left: float
    top: float
    width: float
    height: float

    @property
    def right(self) -> float:
        return self.left + self.width

    @property
    def bottom(self) -> float:
        return self.top + self.height


@dataclass(frozen=True)
class Axis:
    """Maps a value in [lo, hi] to a pixel in [start, end] (end < start for a y axis), linearly or
    on a log2 scale (clients: 1, 8, 32 are batch sizes that double)."""

    lo: float
    hi: float
    start: float
    end: float
    log: bool = False

    def at(self, v: float) -> float:
        t = math.log2 if self.log else float
        span = t(self.hi) - t(self.lo)
        f = 0.5 if span == 0 else (t(v) - t(self.lo)) / span
        return self.start + f * (self.end - self.start)


@dataclass
class OpenCurve:
    """One server's open-loop runs: points are (fraction of saturation, rate req/s, p50 s, p99 s).
    setting and flags: the lever setting bench/open_loop.sh ran it with (its LABEL and SERVER_FLAGS);
    the charts name a curve by its setting where it has one."""

    name: str
    single_p50_s: float | None = None
    saturation: float | None = None
    points: list[tuple[float, float, float, float]] = field(default_factory=list)
    setting: str | None = None
    flags: str | None = None


@dataclass(frozen=True)
class Within2x:
    """Where an open-loop curve's p99 leaves `bound` x the single-request p50 (within_2x)."""

    bound: float
    # The stated figure: the highest tested fraction of saturation up to which every tested
    # fraction passes (p99 <= bound x single p50); 0 when the lowest tested one already fails.
    fraction: float
    # Its arrival rate, req/s (None when fraction is 0).
    rate: float | None
    # The lowest failing fraction; None when every tested one passes (fraction is then a lower bound).
    first_failing: float | None
    # Where p99 crosses the bound on the straight line between the last passing and the first
    # failing point; None unless both exist.
    interpolated: float | None
    # Tested fractions above first_failing that pass again (the noise of one run, or a curve that
    # is not monotone); they do not raise fraction.
    passes_again: tuple[float, ...] = ()


def num(v: float) -> str:
    """A tick or figure label: 2500, 0.25, 1.5 (no trailing zeros)."""
    return f"{v:g}"


def px(v: float) -> str:
    return f"{v:.2f}"


def nice_ticks(hi: float, n: int = 5) -> list[float]:
    """0 and steps of 1, 2, 2.5 or 5 x 10^k up to the first tick at or above hi."""
    hi = hi if hi > 0 else 1.0
    raw = hi / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    count = math.ceil(hi / step - 1e-9)
    return [round(i * step, 9) for i in range(count + 1)]


def tag(name: str, text: str | None = None, **attrs) -> str:
    """One SVG element; attribute names take '-' for '_' (data_series -> data-series, class_ -> class)."""
    parts = []
    for k, v in attrs.items():
        if v is not None:
            v = px(v) if isinstance(v, float) else str(v)
            parts.append(f"{k.rstrip('_').replace('_', '-')}={quoteattr(v)}")
    head = " ".join([name] + parts)
    return f"<{head}/>" if text is None else f"<{head}>{escape(text)}</{name}>"


def document(width: float, height: float, body: list[str]) -> str:
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" {FONT}>'
    )
    background = tag("rect", x=0, y=0, width=f"{width:.0f}", height=f"{height:.0f}", fill="white")
    return "\n".join([head, background, *body, "</svg>"]) + "\n"


def cpu_line(cpu: dict | None) -> str:
    """The CPU and the flags that decide ONNX Runtime's kernels, as report.py states them."""
    if not cpu:
        return "CPU flags: not recorded (a run made before bench/run.sh recorded them)"
    flags = ", ".join(cpu["features"]) or "none of them"
    return f"{cpu['cores']} cores, {cpu['model_name']}; CPU flags: {flags}; int8 kernel {cpu['int8_kernel']}"


def heading(title: str, shape: str, day: str, cpu: dict | None) -> list[str]:
    return [
        tag("text", f"{title}, {shape} shape, {day}", x=20, y=26, font_size=16, font_weight="bold"),
        tag("text", cpu_line(cpu), x=20, y=46, font_size=11, fill="#444"),
    ]


def axes(box: Box, x: Axis, y: Axis, xticks: list[float], yticks: list[float], labels: tuple[str, str]) -> list[str]:
    """Frame, grid, ticks with their labels and the two axis titles of one panel."""
    out = [tag("rect", x=box.left, y=box.top, width=box.width, height=box.height, fill="none", stroke="#333")]
    for v in yticks:
        at = y.at(v)
        out += [
            '<g class="tick" data-axis="y">',
            tag("line", x1=box.left - 5, y1=at, x2=box.right, y2=at, stroke="#ddd"),
            tag("text", num(v), x=box.left - 8, y=at + 4, font_size=11, text_anchor="end"),
            "</g>",
        ]
    for v in xticks:
        at = x.at(v)
        out += [
            '<g class="tick" data-axis="x">',
            tag("line", x1=at, y1=box.top, x2=at, y2=box.bottom + 5, stroke="#eee"),
            tag("text", num(v), x=at, y=box.bottom + 18, font_size=11, text_anchor="middle"),
            "</g>",
        ]
    xlabel, ylabel = labels
    mid_y = box.top + box.height / 2
    if xlabel:
        out.append(tag("text", xlabel, x=box.left + box.width / 2, y=box.bottom + 36, font_size=12, text_anchor="middle"))
    out.append(tag("text", ylabel, x=box.left - 52, y=mid_y, font_size=12, text_anchor="middle",
                   transform=f"rotate(-90 {px(box.left - 52)} {px(mid_y)})"))
    return out


def legend(entries: list[tuple[str, str, str | None]], left: float, top: float) -> list[str]:
    """(label, colour, dash pattern or None) rows, each with a short line sample."""
    out = ['<g class="legend">']
    for i, (label, colour, pattern) in enumerate(entries):
        y = top + 18 * i
        out.append(tag("line", x1=left, y1=y, x2=left + 22, y2=y, stroke=colour, stroke_width=2.5, stroke_dasharray=pattern))
        out.append(tag("text", label, x=left + 28, y=y + 4, font_size=11))
    out.append("</g>")
    return out


def series(name: str, pts: list[tuple[float, float, float]], colour: str, pattern: str | None = None) -> list[str]:
    """A line through (x pixel, y pixel, x value) points, with a marker at each."""
    out = [tag("polyline", points=" ".join(f"{px(a)},{px(b)}" for a, b, _ in pts), fill="none",
               stroke=colour, stroke_width=2, stroke_dasharray=pattern)]
    for a, b, v in pts:
        out.append(tag("circle", class_="point", data_series=name, data_x=num(v), cx=a, cy=b, r=3.5, fill=colour))
    return out


def throughput(rows: list[dict]) -> dict[str, dict[int, float]]:
    """Generated tokens/s by engine and clients (t5serve) or batch size (the in-process engines)."""
    tps: dict[str, dict[int, float]] = {}
    for r in rows:
        name = r["engine"]
        if name == "cpu" or name.startswith("paired-") or name.endswith("-open") or not r.get("batch"):
            continue
        tps.setdefault(name, {})[r["batch"]] = r["run"]["tokens_per_s"] if "run" in r else r["tokens_per_s"]
    return tps


def precision(name: str) -> str:
    return name.rsplit("-", 1)[-1]


def ratios(tps: dict[str, dict[int, float]]) -> dict[str, dict[int, tuple[float, str]]]:
    """t5serve's variants against the fastest other engine of the same precision (int8, fp32) at each
    clients count, or the fastest other engine of any precision where none shares it."""
    others = [n for n in tps if not n.startswith("t5serve")]
    out: dict[str, dict[int, tuple[float, str]]] = {}
    for ours in (n for n in tps if n.startswith("t5serve")):
        pool = [n for n in others if precision(n) == precision(ours)] or others
        for b, v in tps[ours].items():
            cands = [(tps[n][b], n) for n in pool if b in tps[n]]
            if cands:
                best, who = max(cands)
                out.setdefault(ours, {})[b] = (v / best, who)
    return out


def order(names) -> list[str]:
    """t5serve's variants first, then the other engines, each by name."""
    return sorted(names, key=lambda n: (not n.startswith("t5serve"), n))


def colours(names: list[str]) -> dict[str, str]:
    return {n: COLORS[i % len(COLORS)] for i, n in enumerate(order(names))}


def dash(name: str) -> str | None:
    """t5serve's lines solid, the other engines' dashed."""
    return None if name.startswith("t5serve") else "6 3"


def hline(series_name: str, box: Box, at: float, colour: str, dash_pattern: str | None) -> str:
    """A reference line across a panel."""
    return tag("line", class_="ref", data_series=series_name, x1=box.left, y1=at, x2=box.right, y2=at,
               stroke=colour, stroke_width=1.5, stroke_dasharray=dash_pattern)


def tokens_panel(tps: dict[str, dict[int, float]], box: Box, x: Axis, colour: dict[str, str]) -> list[str]:
    ticks = nice_ticks(max(v for by_b in tps.values() for v in by_b.values()) * 1.08)
    y = Axis(0, ticks[-1], box.bottom, box.top)
    clients = sorted({b for by_b in tps.values() for b in by_b})
    out = ['<g class="panel" id="tokens">']
    xlabel = "concurrent clients (t5serve over HTTP) / batch size (in-process engines)"
    out += axes(box, x, y, clients, ticks, (xlabel, "generated tokens/s"))
    for name in order(tps):
        pts = [(x.at(b), y.at(v), b) for b, v in sorted(tps[name].items())]
        out += series(name, pts, colour[name], dash(name))
    out.append("</g>")
    return out


def ratio_panel(rat: dict[str, dict[int, tuple[float, str]]], box: Box, x: Axis, colour: dict[str, str]) -> list[str]:
    """Bars of t5serve / fastest other engine at each clients count, the ratio written above each bar
    (the engine it was measured against in the bar's tooltip), and a line at parity."""
    ticks = nice_ticks(max(max(r for r, _ in by_b.values()) for by_b in rat.values()) * 1.2, 4)
    y = Axis(0, ticks[-1], box.bottom, box.top)
    clients = sorted({b for by_b in rat.values() for b in by_b})
    out = ['<g class="panel" id="ratio">']
    title = "t5serve / fastest other engine of the same precision"
    out.append(tag("text", title, x=box.left, y=box.top - 8, font_size=12, font_weight="bold"))
    out += axes(box, x, y, clients, ticks, ("", "ratio"))
    out.append(hline("parity", box, y.at(1), "#333", "4 3"))
    names = sorted(rat)
    for i, name in enumerate(names):
        for b, (r, who) in sorted(rat[name].items()):
            centre = x.at(b) + (i - (len(names) - 1) / 2) * 36
            top = y.at(r)
            out.append(f'<g><title>{escape(f"{name} / {who} at {b}")}</title>')
            out.append(tag("rect", class_="bar", data_series=name, data_x=b, x=centre - 15, y=top, width=30.0,
                           height=y.at(0) - top, fill=colour[name], opacity=0.85))
            out.append(tag("text", f"{r:.2f}x", class_="ratio", data_series=name, data_x=b, x=centre, y=top - 4,
                           font_size=11, text_anchor="middle"))
            out.append("</g>")
    out.append("</g>")
    return out


def tokens_chart(rows: list[dict], shape: str, day: str, cpu: dict | None) -> str | None:
    """Tokens/s against clients per engine; below it, where other engines ran, the ratio panel."""
    tps = throughput(rows)
    if not tps:
        return None
    rat = ratios(tps)
    colour = colours(list(tps))
    main = Box(80, 80, 500, 270)
    clients = sorted({b for by_b in tps.values() for b in by_b})
    x = Axis(clients[0], clients[-1], main.left + 48, main.right - 48, log=True)
    body = heading("Generated tokens/s against clients", shape, day, cpu)
    body += tokens_panel(tps, main, x, colour)
    body += legend([(n, colour[n], dash(n)) for n in order(tps)], main.right + 24, main.top + 10)
    height = main.bottom + 60
    if rat:
        low = Box(main.left, main.bottom + 80, main.width, 140)
        body += ratio_panel(rat, low, x, colour)
        body += legend([(n, colour[n], None) for n in sorted(rat)], low.right + 24, low.top + 10)
        height = low.bottom + 50
    return document(WIDTH, height, body)


def open_curves(rows: list[dict]) -> dict[str, OpenCurve]:
    """Open-loop runs by server (engine NAME-open), with NAME's single-request p50 (clients 1) and
    saturation rate (requests/s at 32 clients). A row's own "fraction" wins over rate / saturation."""
    closed = {(r["engine"], r.get("batch")): r["run"] for r in rows if "run" in r and not r["engine"].endswith("-open")}
    curves: dict[str, OpenCurve] = {}
    for r in rows:
        if not r["engine"].endswith("-open"):
            continue
        name = r["engine"].removesuffix("-open")
        single, sat = closed.get((name, 1)), closed.get((name, 32))
        c = curves.setdefault(name, OpenCurve(name, single and single["p50_s"], sat and sat["requests_per_s"],
                                              setting=r.get("setting"), flags=r.get("flags")))
        run = r["run"]
        fraction = r.get("fraction", run["param"] / c.saturation if c.saturation else None)
        if fraction is not None:
            c.points.append((fraction, run["param"], run["p50_s"], run["p99_s"]))
    for c in curves.values():
        c.points.sort()
    return {n: c for n, c in curves.items() if c.points}


def within_2x(c: OpenCurve, bound: float = 2.0) -> Within2x | None:
    """The highest arrival rate whose p99 stays within `bound` x the single-request p50, as a
    fraction of the saturation rate: the highest tested fraction f with p99 <= bound x single p50
    at f and at every lower tested fraction. The sweep is read from its low end; a pass above the
    first failure is listed in passes_again but does not count. None without a single-request p50."""
    if not c.single_p50_s or not c.points:
        return None
    limit = bound * c.single_p50_s
    last: tuple[float, float, float, float] | None = None
    for i, point in enumerate(c.points):
        f, _, _, p99 = point
        if p99 > limit:
            again = tuple(p[0] for p in c.points[i + 1 :] if p[3] <= limit)
            if last is None:
                return Within2x(bound, 0.0, None, f, None, again)
            f0, rate0, _, q0 = last
            return Within2x(bound, f0, rate0, f, f0 + (limit - q0) * (f - f0) / (p99 - q0), again)
        last = point
    return Within2x(bound, last[0], last[1], None, None)


def describe(w: Within2x) -> str:
    """The figure in words, as the reports state it."""
    bar = f"p99 <= {num(w.bound)}x the single-request p50"
    if w.first_failing is None:
        text = f"{bar} at every tested rate, up to {num(w.fraction)} of saturation ({w.rate:.1f} req/s; a lower bound)"
    elif w.rate is None:
        text = f"{bar} at no tested rate: {num(w.first_failing)} of saturation, the lowest tested, already exceeds it"
    else:
        text = (f"{bar} up to {num(w.fraction)} of saturation ({w.rate:.1f} req/s); {num(w.first_failing)} exceeds it; "
                f"interpolated crossing {w.interpolated:.3f}")
    if w.passes_again:
        text += f"; passes again at {', '.join(num(f) for f in w.passes_again)} (not counted)"
    return text


def short(w: Within2x | None) -> str:
    """The figure in a chart label."""
    if w is None:
        return "no single-request p50"
    if w.first_failing is None:
        return f"p99 <= {num(w.bound)}x single p50 at every tested rate (>= {num(w.fraction)})"
    if w.rate is None:
        return f"p99 > {num(w.bound)}x single p50 from {num(w.first_failing)} (lowest tested)"
    return f"p99 <= {num(w.bound)}x single p50 up to {num(w.fraction)} of saturation ({w.interpolated:.3f} interpolated)"


def open_loop_log(text: str) -> list[dict]:
    """bench/open_loop.sh's output as rows open_curves reads: its JSON lines (OUT) as they are, or
    its printed text: the single-request and saturation runs (clients 1 and 32) and one open row
    per table line (fraction, rate, p50 and p99 in whole ms), the server named
    t5serve-<model directory>."""
    lines = [line for line in text.splitlines() if line.strip()]
    if lines and all(line.lstrip().startswith("{") for line in lines):
        return [json.loads(line) for line in lines]
    m = re.search(r"^model (\S+); single: (\{.*\})$", text, re.M)
    sat = re.search(r"^saturation \(closed loop, 32 clients\): (\{.*\})$", text, re.M)
    if not m or not sat:
        raise ValueError("not bench/open_loop.sh output: no 'model ...; single:' or 'saturation' line")
    name = "t5serve-" + os.path.basename(m.group(1).rstrip("/"))
    rows = [
        {"engine": name, "batch": 1, "run": json.loads(m.group(2))},
        {"engine": name, "batch": 32, "run": json.loads(sat.group(1))},
    ]
    for f, rate, p50, p99 in re.findall(r"^\| ([\d.]+) \| ([\d.]+) \| (\d+) \| (\d+) \|", text, re.M):
        run = {"param": float(rate), "p50_s": int(p50) / 1000, "p99_s": int(p99) / 1000}
        rows.append({"engine": f"{name}-open", "fraction": float(f), "run": run})
    return rows


OPEN_STYLE = {"p50": ("#1f77b4", None), "p99": ("#d62728", None), "single": ("#555", "2 3"), "2x": ("#555", "7 4"),
              "within-2x": ("#2ca02c", "3 3")}
# Open-loop panels: two per row, this far apart.
OPEN_COLUMNS, OPEN_PITCH_X, OPEN_PITCH_Y = 2, 400, 350


def vline(series_name: str, box: Box, at: float, colour: str, dash_pattern: str | None) -> str:
    """A reference line down a panel."""
    return tag("line", class_="ref", data_series=series_name, x1=at, y1=box.top, x2=at, y2=box.bottom,
               stroke=colour, stroke_width=1.5, stroke_dasharray=dash_pattern)


def open_panel(c: OpenCurve, box: Box, x: Axis) -> list[str]:
    """p50 and p99 (ms) against the fraction of saturation, with the single-request p50 and twice it,
    and a line at the highest fraction within 2x (stated above the panel)."""
    refs = [("single", c.single_p50_s), ("2x", 2 * c.single_p50_s)] if c.single_p50_s else []
    top = max([p[3] for p in c.points] + [v for _, v in refs]) * 1000
    ticks = nice_ticks(top * 1.1)
    y = Axis(0, ticks[-1], box.bottom, box.top)
    sat = f", saturation {c.saturation:.1f} req/s" if c.saturation else ""
    w = within_2x(c)
    out = [f'<g class="panel" id="open-{escape(c.name)}">']
    out.append(tag("text", f"{c.setting or c.name}{sat}", x=box.left, y=box.top - 22, font_size=12, font_weight="bold"))
    out.append(tag("text", short(w), class_="within-2x", data_fraction=None if w is None else num(w.fraction),
                   x=box.left, y=box.top - 7, font_size=10.5, fill="#333"))
    out += axes(box, x, y, nice_ticks(x.hi, 4), ticks, ("arrival rate / saturation rate (Poisson)", "latency, ms"))
    for key, v in refs:
        colour, pattern = OPEN_STYLE[key]
        at = y.at(v * 1000)
        out.append(hline(key, box, at, colour, pattern))
        out.append(tag("text", f"{num(round(v * 1000))} ms", x=box.right - 4, y=at - 4, font_size=10, text_anchor="end", fill=colour))
    if w is not None and w.fraction > 0:
        out.append(vline("within-2x", box, x.at(w.fraction), *OPEN_STYLE["within-2x"]))
    for key, col in (("p50", 2), ("p99", 3)):
        pts = [(x.at(p[0]), y.at(p[col] * 1000), p[0]) for p in c.points]
        out += series(key, pts, OPEN_STYLE[key][0])
    out.append("</g>")
    return out


def comparison_panel(curves: list[OpenCurve], box: Box, x: Axis, colour: dict[str, str]) -> list[str]:
    """Every curve's p99 / its own single-request p50 against the fraction of saturation, with the
    2x line: the lever settings side by side."""
    ratios = {c.name: [(p[0], p[3] / c.single_p50_s) for p in c.points] for c in curves}
    ticks = nice_ticks(max([2.0] + [r for pts in ratios.values() for _, r in pts]) * 1.1)
    y = Axis(0, ticks[-1], box.bottom, box.top)
    out = ['<g class="panel" id="open-comparison">']
    title = "p99 / single-request p50, each setting against its own"
    out.append(tag("text", title, x=box.left, y=box.top - 8, font_size=12, font_weight="bold"))
    out += axes(box, x, y, nice_ticks(x.hi, 4), ticks, ("arrival rate / saturation rate (Poisson)", "p99 / single p50"))
    out.append(hline("2x", box, y.at(2), *OPEN_STYLE["2x"]))
    for c in curves:
        out += series(c.name, [(x.at(f), y.at(r), f) for f, r in ratios[c.name]], colour[c.name])
    out.append("</g>")
    return out


def open_loop_chart(rows: list[dict], shape: str, day: str, cpu: dict | None) -> str | None:
    """One open-loop panel per server or lever setting, two to a row, sharing the x scale and a
    legend; with several curves, their p99 / single-request p50 in one more panel below."""
    curves = open_curves(rows)
    if not curves:
        return None
    hi = nice_ticks(max(p[0] for c in curves.values() for p in c.points) * 1.1, 4)[-1]
    body = heading("Open-loop latency against arrival rate", shape, day, cpu)
    for i, c in enumerate(curves.values()):
        col, row = i % OPEN_COLUMNS, i // OPEN_COLUMNS
        box = Box(80 + OPEN_PITCH_X * col, 100 + OPEN_PITCH_Y * row, 310, 250)
        body += open_panel(c, box, Axis(0, hi, box.left, box.right))
    rows_drawn = (len(curves) + OPEN_COLUMNS - 1) // OPEN_COLUMNS
    bottom = 100 + OPEN_PITCH_Y * (rows_drawn - 1) + 250 + 65
    entries = [("p50", *OPEN_STYLE["p50"]), ("p99", *OPEN_STYLE["p99"]),
               ("single-request p50 (1 client)", *OPEN_STYLE["single"]), ("2x the single-request p50", *OPEN_STYLE["2x"]),
               ("highest tested rate with p99 within 2x", *OPEN_STYLE["within-2x"])]
    body += legend(entries, 80, bottom)
    bottom += 18 * len(entries)
    compared = [c for c in curves.values() if c.single_p50_s]
    if len(compared) > 1:
        box = Box(80, bottom + 40, 500, 250)
        colour = colours([c.name for c in compared])
        body += comparison_panel(compared, box, Axis(0, hi, box.left, box.right), colour)
        labels = [(f"{c.setting or c.name}: {short(within_2x(c))}", colour[c.name], None) for c in compared]
        body += legend(labels, 80, box.bottom + 55)
        bottom = box.bottom + 55 + 18 * len(labels)
    return document(max(WIDTH, 80 + OPEN_PITCH_X * min(len(curves), OPEN_COLUMNS)), bottom + 10, body)


def write(rows: list[dict], shape: str, stem: str, open_log: str | None = None, day: str | None = None) -> list[str]:
    """Writes STEM-tokens.svg and STEM-open-loop.svg (each where the rows have its figures; the open
    loop also from bench/open_loop.sh's printed output) and returns their paths. The date is STEM's
    leading YYYY-MM-DD (bench/run.sh names results by date), else today's."""
    if day is None:
        m = re.match(r"\d{4}-\d{2}-\d{2}", os.path.basename(stem))
        day = m.group(0) if m else date.today().isoformat()
    cpu = next((r["cpu"] for r in rows if r["engine"] == "cpu"), None)
    open_rows = rows + (open_loop_log(open_log) if open_log else [])
    written = []
    charts = (("tokens", tokens_chart(rows, shape, day, cpu)), ("open-loop", open_loop_chart(open_rows, shape, day, cpu)))
    for suffix, svg in charts:
        if svg is not None:
            path = f"{stem}-{suffix}.svg"
            with open(path, "w") as f:
                f.write(svg)
            written.append(path)
    return written


def option(name: str) -> str | None:
    """Takes `name VALUE` out of the arguments (t5serve's flags, positional, may start with --)."""
    if name not in sys.argv[1:]:
        return None
    i = sys.argv.index(name, 1)
    if i + 1 >= len(sys.argv):
        sys.exit(f"{name} needs a value")
    value = sys.argv[i + 1]
    del sys.argv[i : i + 2]
    return value
