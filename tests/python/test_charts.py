"""bench/report.py --charts: the SVG charts of a benchmark run put each figure where its axes say.

A small results file with known figures (bench/run.sh's JSON lines: a cpu record, t5serve's closed
and open-loop runs, three other engines, paired rounds that the charts leave out) and a saved
bench/open_loop.sh output go through report.py as bench/run.sh calls it; bench/open_loop.sh's JSON
lines of two lever settings go through report.py --open-loop and bench/open_loop_report.py (the
open-loop levers' markdown and chart), and charts.within_2x, the highest tested fraction of
saturation whose p99 stays within 2x the single-request p50, is checked exactly on known sweeps.
The SVGs are parsed with
xml.etree; every point must sit where the figure maps on the axis drawn beside it (the scale is read
from the tick labels and positions in the picture itself, linear for values, log2 for clients), every
ratio label must be the exact ratio to the fastest other engine of the same precision, and the
reference lines must sit at the single-request p50 and twice it. Coordinates are written with two
decimals, hence the 0.005 px tolerance. Only the standard library.

    python3 tests/python/test_charts.py
"""

import json
import math
import subprocess
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import charts  # noqa: E402  (bench/charts.py, beside bench/report.py)

NS = {"s": "http://www.w3.org/2000/svg"}
STEM = "2026-01-02-0304-t5-small-test"
CPU = {"model_name": "Test CPU", "cores": 2, "features": ["avx2", "fma"], "int8_kernel": "avx2", "int8_kernel_saturates": True}
# Generated tokens/s by engine and clients / batch size.
TOKENS = {
    "t5serve-int8": {1: 120, 8: 1200, 32: 2400},
    "t5serve-fp32": {1: 60, 8: 500, 32: 800},
    "ctranslate2-int8": {1: 100, 8: 1100, 32: 1500},
    "optimum-ort-int8": {1: 90, 8: 1000, 32: 1600},
    "ctranslate2-fp32": {1: 50, 8: 400, 32: 1000},
    "optimum-ort-fp32": {1: 40, 8: 450, 32: 640},
}
# t5serve / the fastest other engine of its precision, as the chart must write it.
RATIOS = {
    "t5serve-int8": {1: "1.20x", 8: "1.09x", 32: "1.50x"},  # 120/100, 1200/1100, 2400/1600
    "t5serve-fp32": {1: "1.20x", 8: "1.11x", 32: "0.80x"},  # 60/50, 500/450, 800/1000
}
# Single-request p50 (s), requests/s at 32 clients, and the open-loop run (rate req/s, p50 s, p99 s).
OPEN = {
    "t5serve-int8": (0.1, 75.0, (37.5, 0.15, 0.25)),
    "t5serve-fp32": (0.2, 25.0, (12.5, 0.3, 0.5)),
}
OPEN_LOOP_LOG = """\
model models/t5-small-shape-int8; single: {"mode":"closed","p50_s":0.09,"p99_s":0.1,"param":1.0,"requests":20,"requests_per_s":11.0}
saturation (closed loop, 32 clients): {"mode":"closed","p50_s":0.4,"p99_s":0.8,"param":32.0,"requests":192,"requests_per_s":80.0}
| 0.125 | 10.0 | 95 | 130 | 1.06x | 1.44x | 21% |
| 0.250 | 20.0 | 110 | 170 | 1.22x | 1.89x | 40% |
| 0.500 | 40.0 | 160 | 290 | 1.78x | 3.22x | 77% |
"""
# Fraction, p50 ms, p99 ms of the table above.
SWEEP = [(0.125, 95, 130), (0.25, 110, 170), (0.5, 160, 290)]
TOLERANCE = 0.005


# bench/open_loop.sh's JSON lines for two lever settings: label -> (flags, single-request p50 s,
# saturation req/s, [(fraction, p50 s, p99 s)]). Binary fractions, so that every figure is exact.
LEVERS = {
    "default": ("", 0.125, 64.0, [(0.0625, 0.1, 0.125), (0.125, 0.11, 0.1875), (0.1875, 0.12, 0.1875),
                                  (0.25, 0.15, 0.3125), (0.375, 0.2, 0.25), (0.5, 0.3, 0.5)]),
    "lanes1-prefill-inline": ("--decode-lanes 1 --prefill-thread false", 0.1, 50.0,
                              [(0.0625, 0.1, 0.15), (0.125, 0.12, 0.2), (0.25, 0.15, 0.19)]),
}
# What within_2x must make of them: (fraction, rate, first failing, interpolated, passes again).
# default: the limit is 0.25 s; 0.1875 passes (0.1875 s), 0.25 fails (0.3125 s), and p99 crosses
# 0.25 s at 0.1875 + (0.25 - 0.1875) / (0.3125 - 0.1875) * 0.0625 = 0.21875; 0.375 passes again.
# lanes1-prefill-inline: the limit is 0.2 s, met exactly at 0.125; every fraction passes.
LEVERS_WITHIN = {
    "default": (0.1875, 12.0, 0.25, 0.21875, (0.375,)),
    "lanes1-prefill-inline": (0.25, 12.5, None, None, ()),
}


def lever_rows() -> list[dict]:
    rows = [{"engine": "cpu", "cpu": CPU}]
    for label, (flags, single, sat, sweep) in LEVERS.items():
        name = f"t5serve-t5-small-shape-int8@{label}"
        common = {"setting": label, "flags": flags, "model": "models/t5-small-shape-int8"}
        rows.append({"engine": name, "batch": 1, "run": {"p50_s": single, "p99_s": single, "requests_per_s": 1 / single}, **common})
        rows.append({"engine": name, "batch": 32, "run": {"p50_s": 0.5, "p99_s": 0.6, "requests_per_s": sat}, **common})
        for f, p50, p99 in sweep:
            run = {"param": f * sat, "p50_s": p50, "p99_s": p99, "requests": 200, "requests_per_s": f * sat, "wall_s": 10.0}
            rows.append({"engine": f"{name}-open", "fraction": f, "rate": f * sat, "busy": 0.5, "run": run, **common})
    return rows


def results(tokens: dict) -> list[dict]:
    rows = [{"engine": "cpu", "cpu": CPU}]
    for name, by_b in tokens.items():
        for b, v in by_b.items():
            if name.startswith("t5serve"):
                single, sat, _ = OPEN[name]
                run = {"tokens_per_s": v, "p50_s": single if b == 1 else 0.5, "p99_s": 0.6, "ttft_mean_s": 0.01,
                       "requests_per_s": sat if b == 32 else v / 32, "param": float(b), "requests": 20, "mode": "closed"}
                rows.append({"engine": name, "batch": b, "run": run})
            else:
                rows.append({"engine": name, "batch": b, "tokens_per_s": v})
    for name in (n for n in tokens if n.startswith("t5serve")):
        rate, p50, p99 = OPEN[name][2]
        run = {"tokens_per_s": 1, "p50_s": p50, "p99_s": p99, "ttft_mean_s": 0.02, "requests_per_s": rate, "param": rate, "requests": 200, "mode": "open"}
        rows.append({"engine": f"{name}-open", "batch": 0, "run": run})
    if "ctranslate2-int8" in tokens:
        # Paired rounds feed report.py's targets; the charts must not plot them.
        rows.append({"engine": "paired-t5serve-int8", "round": 1, "batch": 1, "run": {"tokens_per_s": 9999}})
        rows.append({"engine": "paired-ctranslate2-int8", "round": 1, "batch": 1, "tokens_per_s": 9999})
    return rows


def report(tmp: Path, tokens: dict, *extra: str) -> subprocess.CompletedProcess:
    jsonl = tmp / "results.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in results(tokens)))
    cmd = [sys.executable, str(ROOT / "bench/report.py"), str(jsonl), "t5-small", "--ort-thread-pool per-session", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, check=True)


def panel(svg: Path, ident: str) -> ET.Element:
    found = [g for g in ET.parse(svg).getroot().iter(f"{{{NS['s']}}}g") if g.get("class") == "panel" and g.get("id") == ident]
    assert len(found) == 1, f"{svg.name}: {len(found)} panels with id {ident}"
    return found[0]


def ticks(g: ET.Element, axis: str) -> dict[float, float]:
    """Tick value (from its label) -> pixel (from its line) on one axis of a panel."""
    out = {}
    for t in g.findall("s:g[@class='tick']", NS):
        if t.get("data-axis") == axis:
            line = t.find("s:line", NS)
            out[float(t.find("s:text", NS).text)] = float(line.get("y1" if axis == "y" else "x1"))
    return out


def linear(scale: dict[float, float], v: float) -> float:
    """Where v falls on a linear axis, from its first and last ticks."""
    (lo, a), (hi, b) = min(scale.items()), max(scale.items())
    return a + (v - lo) / (hi - lo) * (b - a)


def log2(scale: dict[float, float], v: float) -> float:
    (lo, a), (hi, b) = min(scale.items()), max(scale.items())
    return a + (math.log2(v) - math.log2(lo)) / (math.log2(hi) - math.log2(lo)) * (b - a)


def elements(g: ET.Element, tag: str, cls: str) -> dict[tuple[str, str], ET.Element]:
    found = [e for e in g.iter(f"{{{NS['s']}}}{tag}") if e.get("class") == cls]
    out = {(e.get("data-series"), e.get("data-x")): e for e in found}
    assert len(out) == len(found), f"two {cls} {tag}s for one series and x"
    return out


class Charts(unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = Path(tempfile.mkdtemp())
        log = self.tmp / "open_loop.txt"
        log.write_text(OPEN_LOOP_LOG)
        self.out = report(self.tmp, TOKENS, "--charts", str(self.tmp / STEM), "--open-loop", str(log))
        self.tokens_svg = self.tmp / f"{STEM}-tokens.svg"
        self.open_svg = self.tmp / f"{STEM}-open-loop.svg"

    def near(self, got: str, want: float, what: str) -> None:
        self.assertLessEqual(abs(float(got) - want), TOLERANCE, f"{what}: drawn at {got}, its axis puts it at {want:.3f}")

    def test_tokens_points_sit_on_their_axes(self) -> None:
        g = panel(self.tokens_svg, "tokens")
        xs, ys = ticks(g, "x"), ticks(g, "y")
        self.assertEqual(sorted(xs), [1, 8, 32])
        self.assertEqual(min(ys), 0)
        self.assertGreaterEqual(max(ys), 2400, "the top tick must be above the largest figure")
        # Clients on a log2 scale: 8 is 3/5 of the way from 1 to 32.
        self.assertAlmostEqual((xs[8] - xs[1]) / (xs[32] - xs[1]), 3 / 5, places=4)
        points = elements(g, "circle", "point")
        self.assertEqual(set(points), {(n, str(b)) for n, by_b in TOKENS.items() for b in by_b}, "paired rounds or open-loop rows plotted")
        for name, by_b in TOKENS.items():
            for b, v in by_b.items():
                p = points[(name, str(b))]
                self.near(p.get("cx"), log2(xs, b), f"{name} at {b} clients, x")
                self.near(p.get("cy"), linear(ys, v), f"{name} at {b} clients, {v} tokens/s, y")

    def test_ratio_labels_are_the_exact_ratios(self) -> None:
        labels = elements(panel(self.tokens_svg, "ratio"), "text", "ratio")
        self.assertEqual({k: e.text for k, e in labels.items()}, {(n, str(b)): r for n, by_b in RATIOS.items() for b, r in by_b.items()})

    def test_ratio_bars_height_is_the_ratio(self) -> None:
        g = panel(self.tokens_svg, "ratio")
        ys = ticks(g, "y")
        bars = elements(g, "rect", "bar")
        best = {"t5serve-int8": ("ctranslate2-int8", "optimum-ort-int8"), "t5serve-fp32": ("ctranslate2-fp32", "optimum-ort-fp32")}
        for name, others in best.items():
            for b, v in TOKENS[name].items():
                ratio = v / max(TOKENS[o][b] for o in others)
                bar = bars[(name, str(b))]
                self.near(bar.get("y"), linear(ys, ratio), f"{name} / best at {b}, top")
                self.near(str(float(bar.get("y")) + float(bar.get("height"))), linear(ys, 0), f"{name} bar at {b}, bottom")
        parity = [e for e in g.iter(f"{{{NS['s']}}}line") if e.get("data-series") == "parity"]
        self.near(parity[0].get("y1"), linear(ys, 1.0), "parity line")

    def test_open_loop_points_and_reference_lines(self) -> None:
        for name, (single, sat, (rate, p50, p99)) in OPEN.items():
            g = panel(self.open_svg, f"open-{name}")
            xs, ys = ticks(g, "x"), ticks(g, "y")
            points = elements(g, "circle", "point")
            fraction = rate / sat
            for key, v in (("p50", p50), ("p99", p99)):
                p = points[(key, f"{fraction:g}")]
                self.near(p.get("cx"), linear(xs, fraction), f"{name} {key} x")
                self.near(p.get("cy"), linear(ys, v * 1000), f"{name} {key} y")
            refs = {e.get("data-series"): e for e in g.iter(f"{{{NS['s']}}}line") if e.get("class") == "ref"}
            self.near(refs["single"].get("y1"), linear(ys, single * 1000), f"{name} single-request p50 line")
            self.near(refs["2x"].get("y1"), linear(ys, 2 * single * 1000), f"{name} 2x line")

    def test_open_loop_sweep_from_open_loop_sh_output(self) -> None:
        g = panel(self.open_svg, "open-t5serve-t5-small-shape-int8")
        xs, ys = ticks(g, "x"), ticks(g, "y")
        points = elements(g, "circle", "point")
        self.assertEqual(len(points), 2 * len(SWEEP))
        for fraction, p50, p99 in SWEEP:
            for key, ms in (("p50", p50), ("p99", p99)):
                p = points[(key, f"{fraction:g}")]
                self.near(p.get("cx"), linear(xs, fraction), f"sweep {key} at {fraction}, x")
                self.near(p.get("cy"), linear(ys, ms), f"sweep {key} at {fraction}, y")
        refs = {e.get("data-series"): e for e in g.iter(f"{{{NS['s']}}}line") if e.get("class") == "ref"}
        self.near(refs["2x"].get("y1"), linear(ys, 180), "sweep 2x line (single p50 90 ms)")

    def test_titles_state_shape_date_and_cpu_flags(self) -> None:
        for svg in (self.tokens_svg, self.open_svg):
            texts = [t.text for t in ET.parse(svg).getroot().findall("s:text", NS)]
            self.assertTrue(any("t5-small shape, 2026-01-02" in t for t in texts), texts[:2])
            self.assertTrue(any("CPU flags: avx2, fma" in t and "Test CPU" in t for t in texts), texts[:2])

    def test_markdown_links_the_charts(self) -> None:
        self.assertIn(f"![{STEM}-tokens.svg]({STEM}-tokens.svg)", self.out.stdout)
        self.assertIn(f"![{STEM}-open-loop.svg]({STEM}-open-loop.svg)", self.out.stdout)
        self.assertIn("`--ort-thread-pool per-session`", self.out.stdout, "t5serve's flags are still the third argument")

    def test_without_charts_no_svg_and_no_links(self) -> None:
        tmp = Path(tempfile.mkdtemp())
        out = report(tmp, TOKENS)
        self.assertEqual(sorted(p.name for p in tmp.iterdir()), ["results.jsonl"])
        self.assertNotIn("Charts:", out.stdout)

    def test_t5serve_only_run_has_no_ratio_panel(self) -> None:
        tmp = Path(tempfile.mkdtemp())
        only = {n: v for n, v in TOKENS.items() if n.startswith("t5serve")}
        report(tmp, only, "--charts", str(tmp / STEM))
        root = ET.parse(tmp / f"{STEM}-tokens.svg").getroot()
        self.assertEqual([g.get("id") for g in root.iter(f"{{{NS['s']}}}g") if g.get("class") == "panel"], ["tokens"])
        self.assertTrue((tmp / f"{STEM}-open-loop.svg").exists())


def refs(g: ET.Element) -> dict[str, ET.Element]:
    return {e.get("data-series"): e for e in g.iter(f"{{{NS['s']}}}line") if e.get("class") == "ref"}


class OpenLoopSweeps(unittest.TestCase):
    """bench/open_loop.sh's JSON lines, one sweep per lever setting (bench/open_loop_levers.sh)."""

    def setUp(self) -> None:
        self.tmp = Path(tempfile.mkdtemp())
        self.jsonl = self.tmp / "open-loop.jsonl"
        self.jsonl.write_text("".join(json.dumps(r) + "\n" for r in lever_rows()))

    def levers_report(self, *extra: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, str(ROOT / "bench/open_loop_report.py"), str(self.jsonl), *extra]
        return subprocess.run(cmd, capture_output=True, text=True, check=True)

    def test_within_2x_of_the_known_sweeps(self) -> None:
        curves = charts.open_curves(lever_rows())
        for label, (fraction, rate, failing, interpolated, again) in LEVERS_WITHIN.items():
            w = charts.within_2x(curves[f"t5serve-t5-small-shape-int8@{label}"])
            self.assertEqual((w.fraction, w.rate, w.first_failing, w.interpolated, w.passes_again),
                             (fraction, rate, failing, interpolated, again), label)

    def test_within_2x_edges(self) -> None:
        def curve(single, points):
            return charts.OpenCurve("x", single, 100.0, [(f, f * 100, p99 / 2, p99) for f, p99 in points])

        none = charts.within_2x(curve(0.1, [(0.0625, 0.25), (0.125, 0.3)]))
        self.assertEqual((none.fraction, none.rate, none.first_failing, none.interpolated), (0.0, None, 0.0625, None))
        self.assertIn("at no tested rate", charts.describe(none))
        once = charts.within_2x(curve(0.1, [(0.0625, 0.15), (0.125, 0.25)]))
        self.assertEqual((once.fraction, once.first_failing), (0.0625, 0.125))
        # 0.15 s -> 0.25 s over 0.0625 -> 0.125: 0.2 s is crossed halfway (within float rounding).
        self.assertAlmostEqual(once.interpolated, 0.09375, places=12)
        self.assertIsNone(charts.within_2x(curve(None, [(0.0625, 0.1)])), "no single-request p50, no figure")

    def test_report_states_the_figure_and_draws_each_setting(self) -> None:
        out = report(self.tmp, TOKENS, "--charts", str(self.tmp / STEM), "--open-loop", str(self.jsonl))
        self.assertIn("Open-loop sweep, t5serve-t5-small-shape-int8@default: p99 <= 2x the single-request p50 up to "
                      "0.1875 of saturation (12.0 req/s); 0.25 exceeds it; interpolated crossing 0.219; passes again "
                      "at 0.375 (not counted).", out.stdout)
        self.assertIn("Open-loop sweep, t5serve-t5-small-shape-int8@lanes1-prefill-inline: p99 <= 2x the single-request "
                      "p50 at every tested rate, up to 0.25 of saturation (12.5 req/s; a lower bound).", out.stdout)
        self.check_chart(self.tmp / f"{STEM}-open-loop.svg")

    def check_chart(self, svg: Path) -> None:
        for label, (flags, single, sat, sweep) in LEVERS.items():
            name = f"t5serve-t5-small-shape-int8@{label}"
            g = panel(svg, f"open-{name}")
            xs, ys = ticks(g, "x"), ticks(g, "y")
            points = elements(g, "circle", "point")
            self.assertEqual(len(points), 2 * len(sweep))
            for f, p50, p99 in sweep:
                for key, v in (("p50", p50), ("p99", p99)):
                    p = points[(key, f"{f:g}")]
                    self.near(p.get("cx"), linear(xs, f), f"{label} {key} at {f}, x")
                    self.near(p.get("cy"), linear(ys, v * 1000), f"{label} {key} at {f}, y")
            lines = refs(g)
            self.near(lines["single"].get("y1"), linear(ys, single * 1000), f"{label} single-request p50 line")
            self.near(lines["2x"].get("y1"), linear(ys, 2 * single * 1000), f"{label} 2x line")
            fraction = LEVERS_WITHIN[label][0]
            self.near(lines["within-2x"].get("x1"), linear(xs, fraction), f"{label} within-2x line")
            stated = [t for t in g.iter(f"{{{NS['s']}}}text") if t.get("class") == "within-2x"]
            self.assertEqual([t.get("data-fraction") for t in stated], [f"{fraction:g}"], label)
        self.assertIn("up to 0.1875 of saturation (0.219 interpolated)", self.texts(svg, "open-t5serve-t5-small-shape-int8@default"))
        self.assertIn("at every tested rate (>= 0.25)", self.texts(svg, "open-t5serve-t5-small-shape-int8@lanes1-prefill-inline"))
        # Side by side: p99 / the setting's own single-request p50, and the line at 2.
        g = panel(svg, "open-comparison")
        xs, ys = ticks(g, "x"), ticks(g, "y")
        points = elements(g, "circle", "point")
        for label, (_, single, _, sweep) in LEVERS.items():
            for f, _, p99 in sweep:
                p = points[(f"t5serve-t5-small-shape-int8@{label}", f"{f:g}")]
                self.near(p.get("cx"), linear(xs, f), f"comparison {label} at {f}, x")
                self.near(p.get("cy"), linear(ys, p99 / single), f"comparison {label} at {f}, y")
        self.near(refs(g)["2x"].get("y1"), linear(ys, 2), "comparison 2x line")

    def texts(self, svg: Path, ident: str) -> str:
        return " | ".join(t.text or "" for t in panel(svg, ident).iter(f"{{{NS['s']}}}text"))

    def near(self, got: str, want: float, what: str) -> None:
        self.assertLessEqual(abs(float(got) - want), TOLERANCE, f"{what}: drawn at {got}, its axis puts it at {want:.3f}")

    def test_levers_markdown_rows_and_chart(self) -> None:
        out = self.levers_report("--chart", str(self.tmp / STEM)).stdout
        # setting | flags | single p50 ms | saturation | figure | its rate | rate / first saturation | interpolated | first failing
        self.assertIn("| default | default flags | 125 | 64.0 | 0.1875 | 12.0 | 0.188 | 0.219 | 0.25 |", out)
        self.assertIn("| lanes1-prefill-inline | `--decode-lanes 1 --prefill-thread false` | 100 | 50.0 | 0.25 (all passed) "
                      "| 12.5 | 0.195 | - | - |", out)
        # A sweep's table: fraction, rate, requests, p50, p99, their ratios to the single p50, busy, within.
        self.assertIn("| 0.25 | 16.00 | 200 | 150.0 | 312.5 | 1.20 | 2.50 | 50% | no |", out)
        self.assertIn("| 0.125 | 6.25 | 200 | 120.0 | 200.0 | 1.20 | 2.00 | 50% | yes |", out)
        self.assertIn(f"![{STEM}-open-loop.svg]({STEM}-open-loop.svg)", out)
        self.check_chart(self.tmp / f"{STEM}-open-loop.svg")
        summary = [json.loads(line) for line in self.levers_report("--rows").stdout.splitlines()]
        self.assertEqual([(r["engine"], r["fraction"], r["rate"], r["first_failing"], r["interpolated"]) for r in summary],
                         [("t5serve-t5-small-shape-int8@default-open-within-2x", 0.1875, 12.0, 0.25, 0.21875),
                          ("t5serve-t5-small-shape-int8@lanes1-prefill-inline-open-within-2x", 0.25, 12.5, None, None)])
        self.assertEqual(summary[0]["passes_again"], [0.375])

    def test_within_2x_rows_are_not_plotted(self) -> None:
        rows = lever_rows()
        text = "".join(json.dumps(r) + "\n" for r in rows)
        summary = self.levers_report("--rows").stdout
        self.assertEqual(charts.open_curves(charts.open_loop_log(text + summary)), charts.open_curves(rows))


if __name__ == "__main__":
    unittest.main()
