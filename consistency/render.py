"""The readable forms of a report: the terminal summary table and the Markdown or HTML file."""

from __future__ import annotations

import html
import json
from typing import Any

from consistency.report import Report
from consistency.rules import RULES, rule_ref

_COLUMNS = (
    ("domain", "domain"),
    ("compared", "compared"),
    ("same", "same"),
    ("missingInActors", "missing in actors"),
    ("missingInLegacy", "missing in Redis"),
    ("differs", "differs"),
    ("unreadable", "unreadable"),
    ("expected", "expected"),
    ("settled", "settled"),
)


def _rows(report: Report) -> list[list[str]]:
    doc = report.to_json()
    rows = []
    for name, counts in [*doc["domains"].items(), ("total", doc["totals"])]:
        row = [name]
        for key, _ in _COLUMNS[1:]:
            value = counts[key]
            row.append(str(sum(value.values()) if isinstance(value, dict) else value))
        rows.append(row)
    return rows


def verdict(report: Report) -> str:
    if not report.complete:
        return f"INCOMPLETE: {report.incomplete_reason}"
    n = report.totals().differences
    return "CLEAN" if n == 0 else f"NOT CLEAN: {n} differences"


def terminal_table(report: Report) -> str:
    """The summary printed after a check."""
    header = [label for _, label in _COLUMNS]
    rows = _rows(report)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    out = [line(header), line(["-" * w for w in widths])]
    out += [line(r) for r in rows[:-1]]
    out += [line(["-" * w for w in widths]), line(rows[-1]), ""]
    totals = report.totals()
    for rule, n in sorted(totals.expected.items()):
        out.append(f"expected ({rule_ref(rule)}): {n} - {RULES[rule]}")
    out.append(verdict(report))
    for key in ("json", "markdown", "html"):
        if key in report.files:
            out.append(f"{key} report: {report.files[key]}")
    return "\n".join(out) + "\n"


def _value(v: Any) -> str:
    return json.dumps(v, indent=1, ensure_ascii=False, sort_keys=True)


def markdown(report: Report) -> str:
    """The Markdown report: verdict, per-domain counts, expected differences, samples."""
    doc = report.to_json()
    out = [
        f"# Consistency report {doc['runId']}",
        "",
        f"**{verdict(report)}**",
        "",
        f"- started {doc['startedAt']}, finished {doc['finishedAt']} ({doc['durationS']} s)",
        f"- scope: {json.dumps(doc['scope'])}",
        f"- re-check: {doc['recheck']['rounds']} rounds, {doc['recheck']['delayS']} s apart",
        f"- stores: {', '.join(f'{k}: {v}' for k, v in doc['stores'].items()) or '-'}",
        "",
        "## Per domain",
        "",
        "| " + " | ".join(label for _, label in _COLUMNS) + " |",
        "|" + "---|" * len(_COLUMNS),
    ]
    out += ["| " + " | ".join(r) + " |" for r in _rows(report)]
    if doc["expectedRules"]:
        out += ["", "## Expected differences (allowed by docs/mapping.md)", ""]
        out += [
            f"- `{r}` ({v['rule']}): {v['count']} - {v['description']}"
            for r, v in doc["expectedRules"].items()
        ]
    for title, samples in (
        ("Differences", doc["samples"]),
        ("Expected differences, samples", doc["expectedSamples"]),
    ):
        if not samples:
            continue
        out += ["", f"## {title}", ""]
        for s in samples:
            what = s["kind"] + (f" ({', '.join(s['fields'])})" if s["fields"] else "")
            rule = f", {s['rule']}" if s["rule"] else ""
            out += [
                f"### `{s['key']}`: {what}{rule}",
                "",
                "| Redis (legacy) | actors |",
                "|---|---|",
                "| " + _cell(s["legacy"]) + " | " + _cell(s["actors"]) + " |",
                "",
            ]
    if doc["samplesLeftOut"]:
        out += [f"{doc['samplesLeftOut']} more differences are counted above but not shown.", ""]
    return "\n".join(out) + "\n"


def _cell(v: Any) -> str:
    text = (
        "*absent*"
        if v is None
        else "<pre>" + html.escape(_value(v), quote=False).replace("\n", "<br>") + "</pre>"
    )
    return text.replace("|", "&#124;")


def html_page(report: Report) -> str:
    """The same content as an HTML page (the Markdown inside a `<pre>` would lose the tables)."""
    doc = report.to_json()
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in _rows(report))
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in _COLUMNS)
    samples = "".join(
        f"<h3>{html.escape(s['key'])}: {html.escape(s['kind'])} {html.escape(', '.join(s['fields']))} "
        f"{html.escape(s['rule'] or '')}</h3><table><tr><th>Redis (legacy)</th><th>actors</th></tr>"
        f"<tr><td><pre>{html.escape(_value(s['legacy']))}</pre></td>"
        f"<td><pre>{html.escape(_value(s['actors']))}</pre></td></tr></table>"
        for s in doc["samples"] + doc["expectedSamples"]
    )
    return (
        "<!doctype html><meta charset=utf-8>"
        f"<title>Consistency report {html.escape(doc['runId'])}</title>"
        f"<h1>Consistency report {html.escape(doc['runId'])}</h1><p><b>{html.escape(verdict(report))}</b></p>"
        f"<table border=1><tr>{head}</tr>{rows}</table>{samples}\n"
    )
