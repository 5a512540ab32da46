#!/usr/bin/env python3
"""bench/open_loop.sh's JSON lines (one file, or several sweeps concatenated, as
bench/open_loop_levers.sh writes them) as markdown: for each server or lever setting, the highest
tested arrival rate whose p99 stays within 2x the single-request p50, as a fraction of its 32-client
saturation rate (charts.within_2x, defined in DEFINITION below), then each sweep's table.

    python3 bench/open_loop_report.py FILE.jsonl [--chart STEM]   markdown; with the SVG STEM-open-loop.svg
    python3 bench/open_loop_report.py FILE.jsonl --brief          the figure of each curve, one line each
    python3 bench/open_loop_report.py FILE.jsonl --rows           the same as JSON lines (open_loop.sh keeps them)
"""

import json
import os
import re
import sys
from datetime import date

import charts

DEFINITION = (
    "The figure: the highest tested fraction f of the saturation rate (requests/s of a closed loop of "
    "32 clients, measured on the same server just before the sweep) such that p99 <= 2x the "
    "single-request p50 (1 client, closed loop, same server) at f and at every lower tested fraction. "
    "A fraction above the first failing one that passes again is listed, not counted. 'Interpolated' "
    "is where p99 crosses 2x on the straight line between the last passing and the first failing "
    "fraction; the stated figure is the tested one. Each setting is measured against its own "
    "saturation rate and single-request p50; 'rate / first saturation' puts its rate on the first "
    "setting's scale."
)


def switch(name: str) -> bool:
    if name in sys.argv[1:]:
        sys.argv.remove(name)
        return True
    return False


def cell(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def flags(c: charts.OpenCurve) -> str:
    return f"`{c.flags}`" if c.flags else "default flags"


def summary_row(c: charts.OpenCurve, w: charts.Within2x | None) -> dict:
    """The JSON line of one curve's figure (bench/open_loop.sh appends it to its file)."""
    row = {"engine": f"{c.name}-open-within-2x", "setting": c.setting, "flags": c.flags,
           "single_p50_s": c.single_p50_s, "saturation_requests_per_s": c.saturation,
           "fractions": [p[0] for p in c.points]}
    if w is not None:
        row.update(bound=w.bound, fraction=w.fraction, rate=w.rate, first_failing=w.first_failing,
                   interpolated=w.interpolated, passes_again=list(w.passes_again))
    return row


def markdown(rows: list[dict], curves: dict[str, charts.OpenCurve], cpu: dict | None) -> list[str]:
    out = [f"CPU: {charts.cpu_line(cpu)}.", "", DEFINITION, ""]
    first_sat = next((c.saturation for c in curves.values() if c.saturation), None)
    out += ["| setting | server flags | single p50 ms | saturation req/s | within 2x up to (fraction) | its rate req/s "
            "| rate / first saturation | interpolated | first failing |",
            "|---|---|---|---|---|---|---|---|---|"]
    for c in curves.values():
        w = charts.within_2x(c)
        if w is None:
            figure = rate = ratio = interp = failing = "-"
        else:
            figure = f"{charts.num(w.fraction)}" + (" (all passed)" if w.first_failing is None else "")
            rate = cell(w.rate, ".1f")
            ratio = cell(w.rate / first_sat if w.rate and first_sat else None, ".3f")
            interp, failing = cell(w.interpolated, ".3f"), cell(w.first_failing, "g")
        single = cell(c.single_p50_s and c.single_p50_s * 1000, ".0f")
        out.append(f"| {c.setting or c.name} | {flags(c)} | {single} | {cell(c.saturation, '.1f')} | {figure} | "
                   f"{rate} | {ratio} | {interp} | {failing} |")
    for c in curves.values():
        w = charts.within_2x(c)
        out += ["", f"{c.name} ({flags(c)}): {charts.describe(w) if w else 'no single-request p50 recorded'}.", "",
                "| fraction | rate req/s | requests | p50 ms | p99 ms | p50 / single | p99 / single | decode busy | within 2x |",
                "|---|---|---|---|---|---|---|---|---|"]
        limit = 2 * c.single_p50_s if c.single_p50_s else None
        for r in sorted((r for r in rows if r["engine"] == f"{c.name}-open" and "fraction" in r), key=lambda r: r["fraction"]):
            run, s = r["run"], c.single_p50_s
            busy = cell(100 * r["busy"] if r.get("busy") is not None else None, ".0f")
            ok = "-" if limit is None else ("yes" if run["p99_s"] <= limit else "no")
            out.append(f"| {charts.num(r['fraction'])} | {run['param']:.2f} | {run.get('requests', '-')} | "
                       f"{run['p50_s'] * 1000:.1f} | {run['p99_s'] * 1000:.1f} | {cell(s and run['p50_s'] / s, '.2f')} | "
                       f"{cell(s and run['p99_s'] / s, '.2f')} | {busy}{'%' if busy != '-' else ''} | {ok} |")
    return out


def main() -> None:
    stem = charts.option("--chart")
    shape = charts.option("--shape")
    brief, as_rows = switch("--brief"), switch("--rows")
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    rows = [json.loads(line) for path in sys.argv[1:] for line in open(path) if line.strip()]
    curves = charts.open_curves(rows)
    if not curves:
        sys.exit("no open-loop rows (engine NAME-open with a fraction) in " + " ".join(sys.argv[1:]))
    cpu = next((r["cpu"] for r in rows if r["engine"] == "cpu"), None)
    if as_rows:
        for c in curves.values():
            print(json.dumps(summary_row(c, charts.within_2x(c))))
        return
    if brief:
        for c in curves.values():
            w = charts.within_2x(c)
            print(f"{c.name}: {charts.describe(w) if w else 'no single-request p50 recorded'}")
        return
    print("\n".join(markdown(rows, curves, cpu)))
    if stem:
        if shape is None:
            model = next((r["model"] for r in rows if r.get("model")), "")
            shape = re.sub(r"-shape.*$", "", os.path.basename(model.rstrip("/"))) or "?"
        m = re.match(r"\d{4}-\d{2}-\d{2}", os.path.basename(stem))
        svg = charts.open_loop_chart(rows, shape, m.group(0) if m else date.today().isoformat(), cpu)
        with open(f"{stem}-open-loop.svg", "w") as f:
            f.write(svg)
        name = os.path.basename(stem)
        print(f"\nChart: ![{name}-open-loop.svg]({name}-open-loop.svg).")


if __name__ == "__main__":
    main()
