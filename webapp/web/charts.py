"""The overview's charts: a plotly figure and the same numbers as a table, per chart.

Figures are plain dicts in plotly's figure schema, turned into JSON with the
standard library; the tests check every figure against plotly's own
validation. Validating at request time would cost a quarter of a second for
the day-by-minute volume chart alone (14,400 points), well over the 100 ms a
chart endpoint may take. The browser draws them with the plotly.js that ships
in the same package.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from markupsafe import Markup, escape
from sqlalchemy.orm import Session

from webapp.domain import monitoring
from webapp.domain.monitoring import TimeRange
from webapp.observability import FEED_QUERY, RECORD_EVENTS, TIMELINE_QUERY

# Okabe–Ito: told apart by people with any common colour blindness.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000",
           "#999999")
OPERATION_LABELS = {
    RECORD_EVENTS: "Recording events",
    TIMELINE_QUERY: "Timeline page",
    FEED_QUERY: "Feed page",
}
QUANTILE_DASH = {0.5: "solid", 0.95: "dash", 0.99: "dot"}
# Numbers, dates, times and durations as formatted here: nothing to escape.
_PLAIN = re.compile(r"[0-9A-Za-z ,.:%—_-]*")


@dataclass(frozen=True)
class Chart:
    """One chart as served: its figure and its numbers as a table."""

    name: str
    title: str
    figure: dict[str, Any]
    columns: list[str]
    rows: list[list[str]]
    caption: str = ""
    summary: list[tuple[str, str]] = field(default_factory=list)

    @property
    def table_body(self) -> Markup:
        """The table's rows as HTML, the first cell of each a row header.

        Built here rather than in a template loop: the day-by-minute volume table
        has 1,440 rows, and Jinja would take longer over them than the rest of the
        request. Cells are escaped unless they are plainly a number or a time.
        """
        if not self.rows:
            return Markup(f'<tr><td colspan="{len(self.columns)}" class="text-muted">No data in this range.</td></tr>')
        html = []
        for row in self.rows:
            cells = [cell if _PLAIN.fullmatch(cell) else str(escape(cell)) for cell in row]
            html.append(f'<tr><th scope="row">{cells[0]}</th><td>{"</td><td>".join(cells[1:])}</td></tr>')
        return Markup("".join(html))

    @property
    def figure_json(self) -> str:
        # Inside <script type="application/json">, "</" could end the block early.
        return json.dumps(self.figure, separators=(",", ":")).replace("</", "<\\/")


@dataclass(frozen=True)
class ChartSpec:
    name: str
    title: str
    build: Callable[..., Chart]
    # Latency, backfill progress and table size are how the system runs: engineering's charts.
    engineering: bool = False


def _layout(**extra: Any) -> dict[str, Any]:
    layout = {
        "height": 320,
        "margin": {"l": 56, "r": 16, "t": 16, "b": 40},
        "legend": {"orientation": "h", "y": -0.2},
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "rgba(0,0,0,0)",
        "hovermode": "x unified",
    }
    layout.update(extra)
    return layout


def _iso(moments: list[datetime]) -> list[str]:
    return [moment.strftime("%Y-%m-%d %H:%M") for moment in moments]


def _span_of(trend: monitoring.DriftSeries, pad: timedelta = timedelta()) -> list[str]:
    """The x range of the whole time range, so one run does not fill the chart."""
    return [(trend.start - pad).strftime("%Y-%m-%d %H:%M"), (trend.end + pad).strftime("%Y-%m-%d %H:%M")]


def _when(moment: datetime, span: TimeRange) -> str:
    return moment.strftime("%Y-%m-%d %H:%M" if span.grain == "minute" else "%Y-%m-%d")


def _number(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    if not digits and isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def _regular_x(span: TimeRange, times: list[datetime]) -> dict[str, Any]:
    """A trace's x as a start and a step: every bucket of a range is evenly spaced."""
    step_ms = (60 if span.grain == "minute" else 86_400) * 1000
    return {"x0": times[0].strftime("%Y-%m-%d %H:%M"), "dx": step_ms}


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def _bytes(n: int | None) -> str:
    if n is None:
        return "—"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:,.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    raise AssertionError("unreachable")


_BYTE_UNITS = (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024))


def _empty(message: str) -> dict[str, Any]:
    return {
        "data": [],
        "layout": _layout(
            xaxis={"visible": False}, yaxis={"visible": False},
            annotations=[{"text": message, "showarrow": False, "xref": "paper", "yref": "paper",
                          "x": 0.5, "y": 0.5}],
        ),
    }


def volume_chart(session: Session, span: TimeRange, **_: Any) -> Chart:
    """Events recorded per bucket, stacked by type."""
    series = monitoring.event_volume(session, span)
    x = _regular_x(span, series.times)
    data = [
        {"type": "scatter", "mode": "lines", "stackgroup": "volume", "name": event_type, **x,
         "y": counts, "line": {"width": 0.5, "color": PALETTE[index % len(PALETTE)]}}
        for index, (event_type, counts) in enumerate(series.by_type.items())
    ]
    figure = {"data": data, "layout": _layout(yaxis={"title": {"text": "events"}, "rangemode": "tozero"})} \
        if data else _empty("No events recorded in this range")
    types = list(series.by_type)
    thousands = "{:,}".format
    rows = [[_when(moment, span), *map(thousands, counts), thousands(total)]
            for moment, counts, total in series.rows()]
    rows.reverse()
    return Chart(
        "volume", "Event volume by type", figure, ["Time (UTC)", *types, "Total"], rows,
        caption=f"{span.label}, newest first; {'minutes' if span.grain == 'minute' else 'days'} without events "
                "left out.",
        summary=[("Events in range", _number(series.total))],
    )


def drift_chart(session: Session, span: TimeRange, **_: Any) -> Chart:
    """Players drifted per reconciliation run, with the 7-day average."""
    trend = monitoring.drift_trend(session, span)
    points = trend.points
    x = [p.started_at.strftime("%Y-%m-%d %H:%M") for p in points]
    figure = {
        "data": [
            {"type": "scatter", "mode": "lines+markers", "name": "Players drifted", "x": x,
             "y": [p.players_drifted for p in points], "marker": {"color": PALETTE[0]}},
            {"type": "scatter", "mode": "lines", "name": "7-day average", "x": x,
             "y": [round(p.rolling_mean, 2) for p in points], "line": {"color": PALETTE[1], "dash": "dash"}},
        ],
        "layout": _layout(yaxis={"title": {"text": "players"}, "rangemode": "tozero"},
                          xaxis={"type": "date", "range": _span_of(trend)}),
    } if points else _empty("No reconciliation run in this range")
    rows = [[str(p.run_id), p.started_at.strftime("%Y-%m-%d %H:%M"), _number(p.players_checked),
             _number(p.players_drifted), _number(p.rolling_mean, 1)] for p in reversed(points)]
    return Chart(
        "drift", "Stats drift per reconciliation run", figure,
        ["Run", "Started (UTC)", "Players checked", "Players drifted", "7-day average"], rows,
        caption="Successful runs over all players, newest first.",
    )


def reconciliation_chart(session: Session, span: TimeRange, **_: Any) -> Chart:
    """Share of finished reconciliation runs that succeeded, per day."""
    trend = monitoring.drift_trend(session, span)
    days = trend.days
    figure = {
        "data": [{"type": "bar", "name": "Success rate", "x": [d.day.strftime("%Y-%m-%d") for d in days],
                  "y": [None if d.rate is None else round(d.rate, 1) for d in days],
                  "marker": {"color": PALETTE[2]}}],
        "layout": _layout(yaxis={"title": {"text": "% succeeded"}, "range": [0, 100]},
                          xaxis={"type": "date", "range": _span_of(trend, pad=timedelta(hours=12))}),
    } if days else _empty("No reconciliation finished in this range")
    rows = [[d.day.strftime("%Y-%m-%d"), _number(d.succeeded), _number(d.failed), _number(d.rate, 1)]
            for d in reversed(days)]
    return Chart(
        "reconciliation", "Reconciliation success rate", figure,
        ["Day (UTC)", "Succeeded", "Failed", "Success rate (%)"], rows,
        caption="Finished whole-population runs per day, newest first.",
        summary=[("Success rate in range", f"{_number(trend.success_rate, 1)} %")],
    )


def latency_chart(session: Session, span: TimeRange, **_: Any) -> Chart:
    """P50/P95/P99 of recording and of timeline and feed reads."""
    series = monitoring.latency(session, span)
    x = _iso(series.times)  # points are not evenly spaced on the last, partial step
    data = []
    for index, (operation, by_quantile) in enumerate(series.by_operation.items()):
        if not any(series.counts[operation]):
            continue
        for q, values in by_quantile.items():
            data.append({
                # Markers too: a time with no timed neighbour (the first day of a
                # deployment, an isolated busy minute) has no line to draw.
                "type": "scatter", "mode": "lines+markers", "connectgaps": False, "x": x, "y": values,
                "name": f"{OPERATION_LABELS.get(operation, operation)} P{round(q * 100)}",
                "line": {"color": PALETTE[index % len(PALETTE)], "dash": QUANTILE_DASH[q]},
                "marker": {"size": 5},
            })
    figure = {"data": data, "layout": _layout(yaxis={"title": {"text": "ms"}, "type": "log"})} \
        if data else _empty("Nothing timed in this range")
    rows = []
    for index, moment in reversed(list(enumerate(series.times))):
        for operation, by_quantile in series.by_operation.items():
            count = series.counts[operation][index]
            if count:
                rows.append([_when(moment, span), OPERATION_LABELS.get(operation, operation), _number(count),
                             *(_number(by_quantile[q][index], 1) for q in monitoring.QUANTILES)])
    step = "10 minutes" if span.grain == "minute" else "day"
    return Chart(
        "latency", "Latency of recording and of timeline and feed reads", figure,
        ["From (UTC)", "Operation", "Count", "P50 (ms)", "P95 (ms)", "P99 (ms)"], rows,
        caption=f"Per {step}, from histograms of every process; newest first.",
    )


def backfill_chart(session: Session, span: TimeRange, **_: Any) -> Chart:
    """A gauge of events created against expected per running backfill."""
    gauges = monitoring.backfill_gauges(session)
    if gauges:
        width = 1 / len(gauges)
        data = [
            {"type": "indicator", "mode": "gauge+number", "value": g.events_created,
             "title": {"text": f"Run {g.run_id}"},
             "domain": {"x": [i * width + 0.02, (i + 1) * width - 0.02], "y": [0, 1]},
             "gauge": {"axis": {"range": [0, max(g.events_expected or 0, g.events_created, 1)]},
                       "bar": {"color": PALETTE[0]}}}
            for i, g in enumerate(gauges)
        ]
        figure = {"data": data, "layout": _layout(height=260)}
    else:
        figure = _empty("No backfill is running")
    rows = [[str(g.run_id), _number(g.events_created), _number(g.events_expected), _number(g.percent, 1),
             _number(g.events_per_second, 1), _duration(g.seconds_left)] for g in gauges]
    return Chart(
        "backfill", "Backfill progress", figure,
        ["Run", "Events created", "Events expected", "Done (%)", "Events/s", "Time left"], rows,
        caption="Running backfills; expected events are extrapolated from the share of records read.",
    )


def size_chart(session: Session, span: TimeRange, *, alert_bytes: int | None = None,
               archive_after_days: int = 0, **_: Any) -> Chart:
    """The hot event table's bytes against the archival threshold, and its rows."""
    size = monitoring.table_size(session, alert_bytes=alert_bytes, archive_after_days=archive_after_days)
    # The gauge reads in the unit of the threshold, as staff set it (GiB by default).
    unit_name, unit = next(((name, factor) for name, factor in _BYTE_UNITS if (alert_bytes or size.bytes) >= factor),
                           ("B", 1))
    limit = max(alert_bytes or 0, size.bytes) * 1.1 / unit or 1
    gauge: dict[str, Any] = {"axis": {"range": [0, limit]}, "bar": {"color": PALETTE[0]}}
    if alert_bytes:
        gauge["threshold"] = {"line": {"color": PALETTE[5], "width": 4}, "thickness": 0.9,
                              "value": alert_bytes / unit}
    figure = {
        "data": [
            {"type": "indicator", "mode": "gauge+number", "value": size.bytes / unit,
             "number": {"valueformat": ",.2f", "suffix": f" {unit_name}"},
             "title": {"text": f"Size ({size.bytes_scope})"}, "gauge": gauge,
             "domain": {"x": [0, 0.6], "y": [0, 1]}},
            {"type": "indicator", "mode": "number", "value": size.rows, "number": {"valueformat": ","},
             "title": {"text": "Rows (estimate)" if not size.rows_exact else "Rows"},
             "domain": {"x": [0.65, 1], "y": [0, 1]}},
        ],
        "layout": _layout(height=260),
    }
    rows = [
        ["Rows in the hot table", _number(size.rows) + ("" if size.rows_exact else " (estimate)")],
        [f"Bytes ({size.bytes_scope})", _bytes(size.bytes)],
        ["Archival alert threshold", _bytes(alert_bytes)],
        ["Share of the threshold", f"{_number(size.share_of_threshold, 1)} %"],
        ["Events archived after", f"{archive_after_days} days"],
    ]
    return Chart("size", "Event table size", figure, ["Measure", "Value"], rows,
                 caption="Now, whatever the range.")


CHARTS: dict[str, ChartSpec] = {
    spec.name: spec
    for spec in (
        ChartSpec("volume", "Event volume by type", volume_chart),
        ChartSpec("drift", "Stats drift per reconciliation run", drift_chart),
        ChartSpec("reconciliation", "Reconciliation success rate", reconciliation_chart),
        ChartSpec("latency", "Latency", latency_chart, engineering=True),
        ChartSpec("backfill", "Backfill progress", backfill_chart, engineering=True),
        ChartSpec("size", "Event table size", size_chart, engineering=True),
    )
}
