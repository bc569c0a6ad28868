"""The nightly report: its figures (next-day hit rate, popularity's), computed from real Delta tables with
known answers, and its HTML opened in a real headless browser."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from attnmodel import report
from attnmodel.report import Night, ReportData, hits_at_k, popularity_lists

D = dt.date(2026, 3, 10)


def test_hits_count_users_with_a_next_day_item_in_their_top_k():
    recommended = {"a": ["1", "2", "3"], "b": ["4", "5"], "c": ["9"]}
    next_items = {"a": {"3"}, "b": {"6"}, "d": {"1"}}  # d has no list: not evaluated; c was not active
    assert hits_at_k(recommended, next_items, k=3) == (1, 2)
    assert hits_at_k(recommended, next_items, k=2) == (0, 2)  # a's hit is at rank 3


def test_popularity_lists_skip_what_each_user_has_seen():
    ranking = ["p1", "p2", "p3", "p4"]
    lists = popularity_lists(ranking, {"a": {"p1", "p3"}}, ["a", "b"], k=2)
    assert lists == {"a": ["p2", "p4"], "b": ["p1", "p2"]}


def _write(path, rows: list[dict], schema: pa.Schema, partition: str) -> None:
    from deltalake import write_deltalake

    write_deltalake(str(path), pa.Table.from_pylist(rows, schema=schema), partition_by=[partition], mode="append")


def test_next_day_hit_rates_from_delta_tables(tmp_path):
    events_schema = pa.schema([("user_id", pa.string()), ("item_id", pa.string()), ("event_date", pa.date32())])
    day0, nxt = D - dt.timedelta(days=1), D + dt.timedelta(days=1)
    old = D - dt.timedelta(days=report.POPULARITY_DAYS + 5)  # outside the popularity window
    events = ([{"user_id": f"o{k}", "item_id": "stale", "event_date": old} for k in range(50)]
              + [{"user_id": f"x{k}", "item_id": "pop1", "event_date": day0} for k in range(5)]
              + [{"user_id": f"x{k}", "item_id": "pop2", "event_date": D} for k in range(4)]
              + [{"user_id": f"x{k}", "item_id": f"pop{k + 3}", "event_date": D} for k in range(10)]
              + [{"user_id": "u1", "item_id": "pop1", "event_date": day0},  # u1 has seen pop1
                 {"user_id": "u1", "item_id": "m2", "event_date": nxt},  # the model's rank-2 item: a hit
                 {"user_id": "u2", "item_id": "pop2", "event_date": nxt},  # popularity's: u2 saw nothing
                 {"user_id": "u3", "item_id": "zzz", "event_date": nxt},  # nobody's hit
                 {"user_id": "u9", "item_id": "pop1", "event_date": nxt}])  # no list for u9: not evaluated
    _write(tmp_path / "events", events, events_schema, "event_date")
    recs_schema = pa.schema([("user_id", pa.string()), ("rank", pa.int32()), ("item_id", pa.string()),
                             ("as_of_date", pa.date32())])
    recs = [{"user_id": u, "rank": r, "item_id": f"m{r}", "as_of_date": D} for u in ("u1", "u2", "u3")
            for r in range(1, 21)]
    recs += [{"user_id": "u3", "rank": 1, "item_id": "zzz", "as_of_date": D - dt.timedelta(days=1)}]  # another night
    _write(tmp_path / "recommendations", recs, recs_schema, "as_of_date")

    model, popularity, users = report.next_day_hit_rates(str(tmp_path), D)
    assert users == 3  # u1, u2, u3
    assert model == pytest.approx(1 / 3)
    # popularity of D: pop1 (5, in the window), pop2 (4), then pop3.. (1 each); 'stale' is outside the window.
    # u1 saw pop1 -> gets pop2..; u2 gets pop1, pop2..: u2 hits; u3 misses.
    assert popularity == pytest.approx(1 / 3)
    assert report.next_day_hit_rates(str(tmp_path), nxt) is None  # no events after it yet


def _night(k: int, *, failed: bool = False) -> Night:
    d = D + dt.timedelta(days=k)
    ok = {"status": "success", "message": None}
    steps = {
        "ingest": {**ok, "rows_written": 1000 + 10 * k, "quarantined": '{"invalid_json": 3, "bad_id": %d}' % k},
        "sequences": {**ok, "rows_written": 300 + k},
        "gate": {**ok, "gate_candidate_ndcg10": 0.30 + k / 100, "gate_published_ndcg10": 0.29 if k else None,
                 "gate_popularity_ndcg10": 0.12, "gate_decision": "published"},
        "score": {**ok, "rows_read": 300 + k, "model_version": f"m{k}"},
    }
    if failed:
        steps = {"ingest": steps["ingest"], "sequences": steps["sequences"],
                 "check": {"status": "failed", "message": "quarantine share 0.5 above 0.1"}}
    history = [{"epoch": e, "loss": 7 - e / 2, "valid_ndcg@10": 0.1 + e / 50} for e in range(1, 5)]
    return Night(d, steps, hit_rate=None if failed else 0.2 + k / 100, popularity_hit_rate=None if failed else 0.1,
                 evaluated_users=0 if failed else 100, trained_model=None if failed else f"m{k}",
                 history=[] if failed else history)


def test_report_renders_in_a_real_browser(tmp_path):
    from tests.browser import chromium_paths, open_page

    if None in chromium_paths():
        pytest.fail("chromium / chromedriver missing: `make test` installs them (infra/services.sh install)")
    data = ReportData(D, D + dt.timedelta(days=3), [_night(0), _night(1), _night(2, failed=True), _night(3)],
                      scores=[0.5 + i / 100 for i in range(200)], scores_date=D + dt.timedelta(days=3),
                      samples=[{"user_id": "u<1>", "history": ["i1", "i2"], "history_length": 2,
                                "recs": [(1, "i9", 3.25, ["i1"]), (2, "i8", 3.0, ["i2", "i1"])]}])
    out = tmp_path / "report.html"
    out.write_text(report.render_html(data), encoding="utf-8")

    page = open_page(out)
    assert page["title"].startswith("attnrec nightly report")
    assert page["headings"][:7] == ["Failed steps", *report.plots(data)]
    assert len(page["images"]) == 6
    for image in page["images"]:
        assert image["decoded"] and image["width"] > 100 and image["height"] > 100, image
    assert [m for m in page["console"] if m["level"] in ("SEVERE", "WARNING")] == []
    assert "FAILED: check" in page["text"] and "quarantine share 0.5 above 0.1" in page["text"]
    assert "u<1>" in page["text"]  # escaped, shown as text
    assert "pooled over 300 user-nights" in page["text"]
