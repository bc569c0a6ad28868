"""The nightly report: one HTML file on the nights from A to D, plots embedded (PNG data URIs, no script, no
external link), so it opens offline from a mail attachment or a shared drive.

    attnrec report --date D [--from-date A] [--warehouse W] [--out reports/attnrec-D.html]

It shows, per night: the steps' outcome, rows per night, the quarantine by reason, the gate's NDCG@10 (candidate,
published, popularity), the next-day hit rate (how often the top-10 served on night d held an item the user
interacted with on d+1, against the popularity list of d), the training curves, the score distribution of the
last night and a few users' recommendations with their history and the "because" items.

Everything is read from the tables (pipeline_runs, model_registry, recommendations, events, user_sequences,
item_index) through delta-rs + pyarrow: no Spark. The next-day hit rate reads the evaluated users' events only
(users active on d+1 with recommendations of d) plus the item column of the popularity window.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import os
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from attnmodel import registry as reg
from attnmodel import runlog
from attnmodel.columns import (
    AS_OF_DATE,
    BECAUSE,
    EVENTS_TABLE,
    ITEM_ID,
    ITEM_IDX,
    ITEM_INDEX_TABLE,
    MODEL_VERSION,
    RANK,
    RECOMMENDATIONS_TABLE,
    SCORE,
    USER_ID,
    USER_SEQUENCES_TABLE,
)
from attnmodel.delta_io import TableMissing, read_delta, read_files, warehouse_table

REPORT_NIGHTS = 14  # nights shown when --from-date is not given
HIT_K = 10
POPULARITY_DAYS = 30  # the scoring job's default popularity window (--popularity-days)


# ---------------------------------------------------------------- pure figures

def hits_at_k(recommended: dict[str, list[str]], next_items: dict[str, set[str]], k: int = HIT_K) -> tuple[int, int]:
    """(users whose top-k held an item they interacted with next day, users evaluated). Evaluated: users with
    events next day and a recommendation list."""
    users = [u for u in next_items if u in recommended]
    return sum(1 for u in users if next_items[u] & set(recommended[u][:k])), len(users)


def popularity_lists(ranking: list[str], seen: dict[str, set[str]], users, k: int = HIT_K) -> dict[str, list[str]]:
    """Each user's top-k of the popularity ranking (most popular first) minus the items they have seen, the
    same exclusion the model's lists get."""
    out = {}
    for u in users:
        s = seen.get(u, set())
        out[u] = [i for i in ranking if i not in s][:k] if s else ranking[:k]
    return out


@dataclass
class Night:
    date: dt.date
    steps: dict  # step -> its last pipeline_runs row
    hit_rate: float | None = None  # published model's next-day hit rate @10
    popularity_hit_rate: float | None = None
    evaluated_users: int = 0
    trained_model: str | None = None  # model trained that night (registry candidate)
    history: list = field(default_factory=list)  # that model's per-epoch training history

    def step(self, name: str) -> dict:
        return self.steps.get(name) or {}

    @property
    def failed_steps(self) -> list[str]:
        return sorted(s for s, r in self.steps.items() if r.get("status") != runlog.SUCCESS)

    @property
    def quarantined(self) -> dict:
        q = self.step("ingest").get("quarantined")
        return json.loads(q) if q else {}


@dataclass
class ReportData:
    first: dt.date
    last: dt.date
    nights: list[Night]
    scores: list[float]  # model scores (rank <= HIT_K) of the last night with recommendations
    scores_date: dt.date | None
    samples: list[dict]  # {user_id, history: [item_id], recs: [(rank, item_id, score, because)]}


# ---------------------------------------------------------------- reading the tables

def _read(table_path: str, filters: list, columns: list[str], row_filter=None) -> pa.Table:
    try:
        return read_files(table_path, filters, columns, row_filter)
    except TableMissing:
        return pa.table({c: pa.array([], pa.string()) for c in columns})


def _pairs(table: pa.Table) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for u, i in zip(table.column(USER_ID).to_pylist(), table.column(ITEM_ID).to_pylist()):
        out.setdefault(u, set()).add(i)
    return out


def next_day_hit_rates(warehouse: str, day: dt.date) -> tuple[float, float, int] | None:
    """(published model's hit rate @10, popularity's, users evaluated) of night `day` against the events of
    day + 1; None when day + 1 has no events yet or `day` has no recommendations."""
    events, recs = warehouse_table(warehouse, EVENTS_TABLE), warehouse_table(warehouse, RECOMMENDATIONS_TABLE)
    nxt = _read(events, [("event_date", "=", (day + dt.timedelta(days=1)).isoformat())], [USER_ID, ITEM_ID])
    if nxt.num_rows == 0:
        return None
    active = pc.unique(nxt.column(USER_ID))
    top = _read(recs, [(AS_OF_DATE, "=", day.isoformat())], [USER_ID, RANK, ITEM_ID],
                row_filter=[(RANK, "<=", HIT_K)])
    if top.num_rows == 0:
        return None
    top = top.filter(pc.is_in(top.column(USER_ID), value_set=active)).sort_by([(USER_ID, "ascending"), (RANK, "ascending")])
    recommended: dict[str, list[str]] = {}
    for u, i in zip(top.column(USER_ID).to_pylist(), top.column(ITEM_ID).to_pylist()):
        recommended.setdefault(u, []).append(i)
    next_items = _pairs(nxt)
    model_hits, users = hits_at_k(recommended, next_items)
    if users == 0:
        return None
    evaluated = pa.array(sorted(u for u in next_items if u in recommended))
    window = _read(events, [("event_date", ">", (day - dt.timedelta(days=POPULARITY_DAYS)).isoformat()),
                            ("event_date", "<=", day.isoformat())], [ITEM_ID])
    counts = Counter(window.column(ITEM_ID).to_pylist())
    ranking = [i for i, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    seen = _pairs(_read(events, [("event_date", "<=", day.isoformat())], [USER_ID, ITEM_ID],
                        row_filter=[(USER_ID, "in", evaluated.to_pylist())]))
    pop_hits, _ = hits_at_k(popularity_lists(ranking, seen, recommended), next_items)
    return model_hits / users, pop_hits / users, users


def _history(models_dir: str | None) -> list:
    path = os.path.join(models_dir or "", "history.json")
    if not models_dir or not os.path.exists(path):
        return []
    with open(path) as fh:
        return json.load(fh)


def _last_night_details(warehouse: str, day: dt.date, n_users: int) -> tuple[list[float], list[dict]]:
    recs_path = warehouse_table(warehouse, RECOMMENDATIONS_TABLE)
    recs = _read(recs_path, [(AS_OF_DATE, "=", day.isoformat())], [USER_ID, RANK, ITEM_ID, SCORE, MODEL_VERSION, BECAUSE])
    if recs.num_rows == 0:
        return [], []
    from_model = pc.invert(pc.starts_with(recs.column(MODEL_VERSION), "popularity"))
    top = recs.filter(pc.and_(from_model, pc.less_equal(recs.column(RANK), HIT_K)))
    scores = top.column(SCORE).to_pylist()
    try:
        seqs = read_delta(warehouse_table(warehouse, USER_SEQUENCES_TABLE), columns=[USER_ID, ITEM_IDX],
                          where=(AS_OF_DATE, day))
        index = read_delta(warehouse_table(warehouse, ITEM_INDEX_TABLE), columns=[ITEM_IDX, ITEM_ID])
    except TableMissing:
        return scores, []
    ids = dict(zip(index.column(ITEM_IDX).to_pylist(), index.column(ITEM_ID).to_pylist()))
    histories = {u: h for u, h in zip(seqs.column(USER_ID).to_pylist(), seqs.column(ITEM_IDX).to_pylist())
                 if h and len(h) >= 3}
    users = sorted(set(top.column(USER_ID).to_pylist()) & set(histories))
    picked = [users[round(j * (len(users) - 1) / max(n_users - 1, 1))] for j in range(min(n_users, len(users)))]
    samples = []
    for u in dict.fromkeys(picked):
        mine = top.filter(pc.equal(top.column(USER_ID), u)).sort_by(RANK).to_pylist()
        samples.append({"user_id": u, "history": [ids.get(i, f"#{i}") for i in reversed(histories[u][-10:])],
                        "history_length": len(histories[u]),
                        "recs": [(r[RANK], r[ITEM_ID], r[SCORE], list(r[BECAUSE] or [])) for r in mine]})
    return scores, samples


def collect(warehouse: str, first: dt.date, last: dt.date, sample_users: int = 3) -> ReportData:
    runs = runlog.read_runs(warehouse)
    registry = reg.read_registry(warehouse)
    nights = []
    for k in range((last - first).days + 1):
        d = first + dt.timedelta(days=k)
        steps = runlog.latest_per_step(runs, d)
        if not steps:
            continue
        night = Night(d, steps)
        trained = [r for r in registry if r["data_date"] == d and r["status"] == reg.CANDIDATE]
        if trained:
            night.trained_model = trained[-1]["model_version"]
            night.history = _history(trained[-1]["model_dir"])
        rates = next_day_hit_rates(warehouse, d)
        if rates is not None:
            night.hit_rate, night.popularity_hit_rate, night.evaluated_users = rates
        nights.append(night)
    scored = [n.date for n in nights if n.step("score").get("status") == runlog.SUCCESS]
    scores, samples = _last_night_details(warehouse, scored[-1], sample_users) if scored else ([], [])
    return ReportData(first, last, nights, scores, scored[-1] if scored else None, samples)


def pooled_hit_rates(data: ReportData) -> tuple[float, float, int] | None:
    """Hit rates pooled over the nights (weighted by users evaluated): (model, popularity, users)."""
    n = sum(x.evaluated_users for x in data.nights if x.hit_rate is not None)
    if n == 0:
        return None
    model = sum(x.hit_rate * x.evaluated_users for x in data.nights if x.hit_rate is not None) / n
    pop = sum(x.popularity_hit_rate * x.evaluated_users for x in data.nights if x.hit_rate is not None) / n
    return model, pop, n


# ---------------------------------------------------------------- plots and HTML

def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(width=7.0, height=3.2, ncols=1):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=(width, height))


def _no_data(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} in these nights", ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _dates(nights: list[Night]) -> list[str]:
    return [n.date.strftime("%m-%d") for n in nights]


def _step_lines(ax, nights: list[Night], series) -> None:
    """One line per (step, pipeline_runs column, label) over the nights; a missing figure is a gap."""
    x = _dates(nights)
    for step, key, label in series:
        ys = [n.step(step).get(key) for n in nights]
        ax.plot(x, [float("nan") if y is None else y for y in ys], marker="o", label=label)


def plots(data: ReportData) -> dict[str, str]:
    """title -> PNG data URI, in the report's order."""
    out = {}
    nights = data.nights

    fig, (ax1, ax2) = _figure(9.0, 3.4, ncols=2)
    trained = [n for n in nights if n.history]
    for n in trained:
        ep = [h["epoch"] for h in n.history]
        ax1.plot(ep, [h["loss"] for h in n.history], marker=".", label=n.date.strftime("%m-%d"))
        ev = [h for h in n.history if "valid_ndcg@10" in h]
        ax2.plot([h["epoch"] for h in ev], [h["valid_ndcg@10"] for h in ev], marker=".", label=n.date.strftime("%m-%d"))
    if trained:
        ax1.set(xlabel="epoch", ylabel="train loss", title="training loss (one line per night's model)")
        ax2.set(xlabel="epoch", ylabel="valid NDCG@10", title="validation NDCG@10")
        ax2.legend(fontsize=7, ncol=2)
    else:
        _no_data(ax1, "trained model")
        _no_data(ax2, "trained model")
    out["Training curve"] = _png(fig)

    fig, ax = _figure()
    gated = [n for n in nights if n.step("gate").get("gate_candidate_ndcg10") is not None]
    if gated:
        x = _dates(gated)
        _step_lines(ax, gated, [("gate", "gate_candidate_ndcg10", "candidate"),
                                ("gate", "gate_published_ndcg10", "published"),
                                ("gate", "gate_popularity_ndcg10", "popularity")])
        for xi, n in zip(x, gated):
            if n.step("gate").get("gate_decision") == reg.REJECTED:
                ax.annotate("rejected", (xi, n.step("gate")["gate_candidate_ndcg10"]), color="red", fontsize=8)
        ax.set(ylabel="NDCG@10 on the night's last events", title="the gate's NDCG@10 per night")
        ax.legend(fontsize=8)
    else:
        _no_data(ax, "gate figures")
    out["NDCG@10 per night"] = _png(fig)

    fig, ax = _figure()
    rated = [n for n in nights if n.hit_rate is not None]
    if rated:
        x = _dates(rated)
        ax.plot(x, [n.hit_rate for n in rated], marker="o", label="published model")
        ax.plot(x, [n.popularity_hit_rate for n in rated], marker="o", label="popularity")
        ax.set(ylabel=f"hit rate@{HIT_K} on day d+1", title="next-day hit rate per night (night d's lists vs d+1's events)")
        ax.legend(fontsize=8)
    else:
        _no_data(ax, "night with a next day")
    out["Next-day hit rate per night"] = _png(fig)

    fig, ax = _figure()
    reasons = sorted({r for n in nights for r in n.quarantined})
    if reasons:
        x, bottom = _dates(nights), [0] * len(nights)
        for r in reasons:
            ys = [n.quarantined.get(r, 0) for n in nights]
            ax.bar(x, ys, bottom=bottom, label=r)
            bottom = [b + y for b, y in zip(bottom, ys)]
        ax.set(ylabel="records", title="quarantine by reason per night")
        ax.legend(fontsize=7, ncol=2)
    else:
        _no_data(ax, "quarantined record")
    out["Quarantine by reason per night"] = _png(fig)

    fig, ax = _figure()
    if nights:
        _step_lines(ax, nights, [("ingest", "rows_written", "events accepted"),
                                 ("sequences", "rows_written", "users in snapshot"),
                                 ("score", "rows_read", "users scored")])
        ax.set(ylabel="rows", title="rows per night")
        ax.legend(fontsize=8)
    else:
        _no_data(ax, "night")
    out["Rows per night"] = _png(fig)

    fig, ax = _figure()
    if data.scores:
        ax.hist(data.scores, bins=40, color="tab:purple")
        ax.set(xlabel=f"score (ranks 1-{HIT_K})", ylabel="recommendations",
               title=f"score distribution, {data.scores_date} ({len(data.scores):,} model scores)")
    else:
        _no_data(ax, "model score")
    out["Score distribution"] = _png(fig)
    return out


_CSS = """body{font-family:sans-serif;margin:1.5em;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 7px;font-size:13px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.bad{color:#b00;font-weight:bold}.ok{color:#080}
img{max-width:100%;display:block;margin:.3em 0 1.2em}.user{display:inline-block;vertical-align:top;margin-right:1.5em}"""


def _fmt(x, digits=4) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return f"{x:,}" if isinstance(x, int) else html.escape(str(x))


def render_html(data: ReportData) -> str:
    e = html.escape
    pooled = pooled_hit_rates(data)
    rows = []
    for n in data.nights:
        g, sc = n.step("gate"), n.step("score")
        state = (f'<span class="bad">FAILED: {e(", ".join(n.failed_steps))}</span>' if n.failed_steps
                 else '<span class="ok">OK</span>')
        rows.append(
            f"<tr><td class=l>{n.date}</td><td class=l>{state}</td><td>{_fmt(n.step('ingest').get('rows_written'))}</td>"
            f"<td>{_fmt(sum(n.quarantined.values()))}</td><td>{_fmt(n.step('sequences').get('rows_written'))}</td>"
            f"<td>{_fmt(g.get('gate_candidate_ndcg10'))}</td><td>{_fmt(g.get('gate_published_ndcg10'))}</td>"
            f"<td>{_fmt(g.get('gate_popularity_ndcg10'))}</td><td class=l>{_fmt(g.get('gate_decision'))}</td>"
            f"<td class=l>{_fmt(sc.get('model_version'))}</td><td>{_fmt(sc.get('rows_read'))}</td>"
            f"<td>{_fmt(n.hit_rate)}</td><td>{_fmt(n.popularity_hit_rate)}</td><td>{_fmt(n.evaluated_users or None)}</td></tr>")
    failures = [(n.date, s, n.step(s).get("message")) for n in data.nights for s in n.failed_steps]
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>attnrec nightly report {data.first} .. {data.last}</title><style>{_CSS}</style></head><body>",
        f"<h1>attnrec nightly report: {data.first} .. {data.last}</h1>",
        f"<p>{len(data.nights)} nights with run records. "
        + (f"Next-day hit rate@{HIT_K} pooled over {pooled[2]:,} user-nights: published model "
           f"<b>{pooled[0]:.4f}</b>, popularity <b>{pooled[1]:.4f}</b>." if pooled else "No night has a next day yet.")
        + "</p>",
        "<table><tr><th class=l>night</th><th class=l>status</th><th>events</th><th>quarantined</th><th>users</th>"
        "<th>candidate NDCG@10</th><th>published</th><th>popularity</th><th class=l>gate</th><th class=l>model served</th>"
        f"<th>users scored</th><th>hit@{HIT_K} next day</th><th>popularity</th><th>users evaluated</th></tr>",
        *rows, "</table>",
    ]
    if failures:
        parts.append("<h2>Failed steps</h2><ul>" + "".join(
            f"<li>{d} <b>{e(s)}</b>: {e(m or 'no message')}</li>" for d, s, m in failures) + "</ul>")
    for title, uri in plots(data).items():
        parts.append(f"<h2>{e(title)}</h2><img alt=\"{e(title)}\" src=\"{uri}\">")
    parts.append(f"<h2>A few users' recommendations ({data.scores_date})</h2>")
    if not data.samples:
        parts.append("<p>No user with recommendations and a history of 3 or more items.</p>")
    for s in data.samples:
        parts.append(f'<div class="user"><h3>user {e(s["user_id"])}</h3>'
                     f'<p>history ({s["history_length"]} items, newest first): {e(", ".join(s["history"]))}</p>'
                     "<table><tr><th>rank</th><th class=l>item</th><th>score</th><th class=l>because</th></tr>"
                     + "".join(f"<tr><td>{r}</td><td class=l>{e(i)}</td><td>{sc:.3f}</td><td class=l>{e(', '.join(b))}</td></tr>"
                               for r, i, sc, b in s["recs"]) + "</table></div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(warehouse: str, last: dt.date, out: str, first: dt.date | None = None) -> tuple[str, ReportData]:
    """Collect, render and write the report atomically (a reader never sees half a file)."""
    first = first or last - dt.timedelta(days=REPORT_NIGHTS - 1)
    data = collect(warehouse, first, last)
    text = render_html(data)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = f"{out}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, out)
    return os.path.abspath(out), data


def report_path(reports_dir: str, day: dt.date) -> str:
    return os.path.join(reports_dir, f"attnrec-{day.isoformat()}.html")


def report_main(argv: list[str] | None = None, prog: str = "attnrec report") -> int:
    import argparse
    import sys

    p = argparse.ArgumentParser(prog=prog, description="Write the HTML report on the nights from --from-date to --date.")
    p.add_argument("--date", type=dt.date.fromisoformat, required=True, help="the last night shown")
    p.add_argument("--from-date", type=dt.date.fromisoformat, default=None,
                   help=f"the first night shown (default: the {REPORT_NIGHTS} nights ending on --date)")
    p.add_argument("--warehouse", default=os.environ.get("ATTNREC_WAREHOUSE", "warehouse"))
    p.add_argument("--out", default=None, help="the HTML file (default REPORTS/attnrec-DATE.html)")
    p.add_argument("--reports", default=os.environ.get("ATTNREC_REPORTS", "reports"))
    a = p.parse_args(argv)
    if a.from_date and a.from_date > a.date:
        print("error: --from-date is after --date", file=sys.stderr)
        return 2
    path, data = write_report(a.warehouse, a.date, a.out or report_path(a.reports, a.date), a.from_date)
    pooled = pooled_hit_rates(data)
    print(f"report: {path} ({len(data.nights)} nights"
          + (f"; next-day hit@{HIT_K} model {pooled[0]:.4f} vs popularity {pooled[1]:.4f} over {pooled[2]:,} user-nights"
             if pooled else "") + ")")
    return 0
