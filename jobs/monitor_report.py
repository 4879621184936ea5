"""The monitor's HTML report (``index.html``) and its plots (PNGs beside it): PSI per feature, the served
pCTRs' reliability, O/E by hour served. Rendered from the monitor's stats, nothing recomputed."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from core.config import MonitorConfig
from core.io import write_text_atomic

PSI_PLOT, RELIABILITY_PLOT, OE_PLOT = "psi.png", "reliability.png", "oe_by_hour.png"


def write_report(directory: Path, monitor: MonitorConfig, stats: dict[str, Any]) -> None:
    """Write the plots that the stats allow (no drift or no labelled impression: none of theirs) and the page."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = []
    if stats["drift"]:
        names = list(stats["drift"])
        fig, ax = plt.subplots(figsize=(7, 0.25 * len(names) + 1.5))
        values = [stats["drift"][n]["psi"] for n in names]
        ax.barh(names, values, color=["tab:red" if v > monitor.max_psi else "tab:blue" for v in values])
        ax.axvline(monitor.max_psi, color="k", ls="--", lw=1, label=f"max PSI {monitor.max_psi}")
        ax.invert_yaxis()
        ax.set(xlabel="PSI (served vs training set)", title="Feature drift")
        ax.legend(loc="lower right")
        plots.append(_save(fig, directory / PSI_PLOT))
    overall = stats["calibration"]["overall"]
    if overall["count"]:
        bins = overall["reliability"]
        fig, ax = plt.subplots(figsize=(5, 5))
        top = max(max(b["mean_pred"] for b in bins), max(b["observed"] for b in bins)) * 1.1
        ax.plot([0, top], [0, top], "k--", lw=1, label="perfect")
        ax.plot([b["mean_pred"] for b in bins], [b["observed"] for b in bins], "o-", label="served pCTR")
        ax.set(xlabel="mean served pCTR (decile)", ylabel="observed CTR", title="Reliability of served pCTRs")
        ax.legend()
        plots.append(_save(fig, directory / RELIABILITY_PLOT))
        by_hour = stats["calibration"]["by_hour"]
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot([h["hour"][-5:] for h in by_hour], [h["oe_ratio"] for h in by_hour], "o-")
        for bound in monitor.oe_band:
            ax.axhline(bound, color="k", ls="--", lw=1)
        ax.set(xlabel="hour served (day-hour, UTC)", ylabel="O/E", title="Observed / expected clicks by hour")
        ax.tick_params(axis="x", rotation=90)
        plots.append(_save(fig, directory / OE_PLOT))
    write_text_atomic(directory / "index.html", _page(stats, plots))


def _save(fig: Any, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path.name


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        return html.escape(f"{value:.4g}" if isinstance(value, float) else str(value))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _page(stats: dict[str, Any], plots: list[str]) -> str:
    breaches = stats["breaches"]
    verdict = (
        "<p class=bad>" + "<br>".join(html.escape(b) for b in breaches) + "</p>"
        if breaches
        else "<p class=ok>no threshold crossed</p>"
    )
    drift = _table(
        ["feature", "kind", "PSI", "KS"],
        [[n, d["kind"], d["psi"], "" if d["ks"] is None else d["ks"]] for n, d in stats["drift"].items()],
    )
    calibration = stats["calibration"]
    rows = []
    if calibration["overall"]["count"]:
        for name, summary in [("overall", calibration["overall"])] + [
            (f"{segment}={value}", s)
            for segment, values in calibration["segments"].items()
            for value, s in values.items()
        ]:
            bounds = summary.get("bounds")
            gated = "" if bounds is None else f"O/E [{bounds['oe_ratio'][0]:.3f}, {bounds['oe_ratio'][1]:.3f}]"
            rows.append([name, summary["count"], summary["clicks"], summary["oe_ratio"], summary["ece"], gated or "no"])
    ages = stats["staleness"]
    age_rows = [["bundle " + ages["bundle"]["version"], ages["bundle"]["age_hours"]]]
    age_rows += [[f"online view {n}", v["age_hours"]] for n, v in ages["feature_views"].items()]
    age_rows.append([f"joined {ages['joined']['newest']}", ages["joined"]["age_hours"]])
    calibration_table = (
        _table(["segment", "impressions", "clicks", "O/E", "ECE", "gated"], rows)
        if rows
        else "<p>no labelled impression yet</p>"
    )
    bundle = f"{html.escape(stats['bundle'])} (trained for {html.escape(stats['trained_on'])})"
    images = "".join(f'<img src="{html.escape(p)}" alt="{html.escape(p)}">' for p in plots)
    title = f"pctr monitor {html.escape(stats['hour'])}"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:2em}} td,th{{padding:2px 8px;text-align:left}}
.bad{{color:#b00}} .ok{{color:#070}} img{{max-width:48%;margin:4px}}</style></head><body>
<h1>{title}</h1>
<p>served impressions {html.escape(stats["window"][0])} to {html.escape(stats["window"][1])}:
{stats["served_impressions"]}; live bundle {bundle};
labels known until {html.escape(stats["labels_known_until"])}</p>
{verdict}
{images}
<h2>Feature drift (served vs the live model's training set)</h2>{drift}
<h2>Calibration of served pCTRs (closed attribution windows)</h2>
{calibration_table}
<h2>Staleness (hours)</h2>{_table(["what", "age"], age_rows)}
</body></html>
"""
