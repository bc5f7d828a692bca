"""Benchmark feed and timeline pages against the raw keyset query.

One run, per backend, on a scratch database built by the real migrations and
loaded through the raw driver with ``--events`` activity events (6,000,000 by
default) spread over ``--players`` players:

1. ``raw``: the keyset query alone, written by hand and run through sqlite3 or
   psycopg, rows fetched; on SQLite also ``raw_decoded``, the same with the
   times and JSON decoded (psycopg decodes them itself): the floor;
2. ``timeline_page``: our keyset query as the product runs it (an unfiltered
   page: compiled once, on the driver's cursor, rows decoded into events;
   must stay within 2x of the floor);
3. ``feed_page``: what the API serves for one page: the keyset query, the one
   lookup of names and reversal links, and the presentation of every event
   for a public viewer (p95 must stay under 10 ms), timed as a request
   (rollback, pool checkout with its ping, BEGIN, statements) and, as
   ``feed_page_open``, inside an already open transaction;
4. ``search_players``: a first page of a prefix search by username, display
   name, public id or email.

Half the samples read a player's first page, half a page after a cursor at a
random depth. Every sample starts a fresh transaction, as a request would.

    .venv/bin/python benchmarks/bench_timeline.py [--backend sqlite|postgresql] [--reuse]

``--reuse`` keeps the loaded databases (in /tmp and on the local PostgreSQL)
and loads them only when they are missing or hold a different count.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg
import sqlalchemy as sa

from benchmarks._support import migrated_app, scratch_database, sqlite_time
from benchmarks._support import percentiles as latency_percentiles
from webapp import create_app
from webapp.config import TestConfig
from webapp.domain.players import search_players
from webapp.domain.privacy import Viewer
from webapp.domain.timeline import feed_page, timeline_page
from webapp.extensions import db
from webapp.models import Player

SQLITE_PATH = Path("/tmp/activity-ops-bench-timeline.sqlite3")
PG_NAME = "activity_ops_bench_timeline"
START = datetime(2019, 1, 1, tzinfo=UTC)

RAW_SQL = (
    "SELECT id, player_id, event_type, occurred_at, recorded_at, source_model, source_id, origin,"
    " origin_id, team_id, tournament_id, is_private, metadata, reverses_event_id"
    " FROM activity_events WHERE player_id = {p} AND (occurred_at, id) < ({p}, {p})"
    " ORDER BY occurred_at DESC, id DESC LIMIT {p}"
)
RAW_FIRST_SQL = (
    "SELECT id, player_id, event_type, occurred_at, recorded_at, source_model, source_id, origin,"
    " origin_id, team_id, tournament_id, is_private, metadata, reverses_event_id"
    " FROM activity_events WHERE player_id = {p} ORDER BY occurred_at DESC, id DESC LIMIT {p}"
)


def generate_events(
    events: int, players: int, tournaments: int, teams: int, seed: int
) -> Iterator[tuple]:
    """Yield event rows player by player, in timeline order, as the raw loaders want them."""
    rng = random.Random(seed)
    per_player = events // players
    event_id = 0
    for player_id in range(1, players + 1):
        count = per_player + (events - per_player * players if player_id == players else 0)
        at = START + timedelta(minutes=rng.randrange(60 * 24 * 30))
        for n in range(count):
            event_id += 1
            # Bursts of events share one instant, as a tournament result does.
            if rng.random() < 0.7:
                at += timedelta(minutes=rng.randrange(1, 600))
            tournament_id = rng.randrange(1, tournaments + 1)
            private = tournament_id % 10 == 0
            kind = rng.choice(
                ("match_won", "match_lost", "match_won", "match_lost", "tournament_checked_in")
            )
            if kind.startswith("match"):
                opponents = [rng.randrange(1, players + 1) for _ in range(rng.choice((1, 1, 1, 3)))]
                metadata = {
                    "round": f"R{rng.randrange(1, 7)}",
                    "side": "a",
                    "opponent_player_ids": opponents,
                }
                if len(opponents) > 1:
                    metadata["opponent_team_id"] = rng.randrange(1, teams + 1)
                source_model, source_id = "match", event_id
            else:
                metadata = {"registration_id": event_id}
                source_model, source_id = "registration", event_id
            origin = "backfill" if n % 3 == 0 else "live"
            yield (
                event_id,
                player_id,
                kind,
                at,
                at,
                source_model,
                source_id,
                origin,
                7 if origin == "backfill" else None,
                None,
                tournament_id,
                private,
                json.dumps(metadata),
                None,
            )


def load_postgres(url: str, args) -> None:
    with psycopg.connect(url, autocommit=False) as conn:
        with conn.cursor() as cur:
            with cur.copy(
                "COPY players (id, public_id, username, display_name, email, feed_visibility, "
                "created_at) FROM STDIN"
            ) as copy:
                for n in range(1, args.players + 1):
                    copy.write_row(
                        (
                            n,
                            f"DC-25-{n:06d}",
                            f"player{n}",
                            f"Player {n}",
                            f"p{n}@example.test",
                            "public",
                            START,
                        )
                    )
            with cur.copy("COPY teams (id, name, created_at) FROM STDIN") as copy:
                for n in range(1, args.teams + 1):
                    copy.write_row((n, f"Team {n}", START))
            with cur.copy(
                "COPY tournaments (id, name, is_private, is_team_based, awards_winner, starts_at, "
                "ends_at, created_at) FROM STDIN"
            ) as copy:
                for n in range(1, args.tournaments + 1):
                    copy.write_row((n, f"Cup {n}", n % 10 == 0, False, True, START, START, START))
            started = time.perf_counter()
            with cur.copy(
                "COPY activity_events (id, player_id, event_type, occurred_at, recorded_at, "
                "source_model, source_id, origin, origin_id, team_id, tournament_id, is_private, "
                "metadata, reverses_event_id) FROM STDIN"
            ) as copy:
                for row in generate_events(
                    args.events, args.players, args.tournaments, args.teams, args.seed
                ):
                    copy.write_row(row)
            for table in ("players", "teams", "tournaments", "activity_events"):
                cur.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"
                )
        conn.commit()
        print(
            f"  loaded {args.events:,} events in {time.perf_counter() - started:.0f} s", flush=True
        )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def load_sqlite(path: Path, args) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO players (id, public_id, username, display_name, email, feed_visibility, created_at)"
        " VALUES (?, ?, ?, ?, ?, 'public', ?)",
        (
            (
                n,
                f"DC-25-{n:06d}",
                f"player{n}",
                f"Player {n}",
                f"p{n}@example.test",
                sqlite_time(START),
            )
            for n in range(1, args.players + 1)
        ),
    )
    conn.executemany(
        "INSERT INTO teams (id, name, created_at) VALUES (?, ?, ?)",
        ((n, f"Team {n}", sqlite_time(START)) for n in range(1, args.teams + 1)),
    )
    conn.executemany(
        "INSERT INTO tournaments (id, name, is_private, is_team_based, awards_winner, starts_at, ends_at,"
        " created_at) VALUES (?, ?, ?, 0, 1, ?, ?, ?)",
        (
            (
                n,
                f"Cup {n}",
                int(n % 10 == 0),
                sqlite_time(START),
                sqlite_time(START),
                sqlite_time(START),
            )
            for n in range(1, args.tournaments + 1)
        ),
    )
    started = time.perf_counter()
    conn.executemany(
        "INSERT INTO activity_events (id, player_id, event_type, occurred_at, recorded_at, source_model,"
        " source_id, origin, origin_id, team_id, tournament_id, is_private, metadata, reverses_event_id)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            (
                r[0],
                r[1],
                r[2],
                sqlite_time(r[3]),
                sqlite_time(r[4]),
                *r[5:11],
                int(r[11]),
                r[12],
                r[13],
            )
            for r in generate_events(
                args.events, args.players, args.tournaments, args.teams, args.seed
            )
        ),
    )
    conn.execute("COMMIT")
    print(f"  loaded {args.events:,} events in {time.perf_counter() - started:.0f} s", flush=True)
    conn.execute("ANALYZE")
    conn.close()


def prepare(backend: str, args) -> str:
    """Return the URL of a loaded database, loading it if needed."""
    url = scratch_database(backend, SQLITE_PATH, PG_NAME, reuse=args.reuse)
    _app, count = migrated_app(url)
    if count != args.events:
        if count:
            raise SystemExit(
                f"{backend}: the scratch database holds {count:,} events; run without --reuse"
            )
        print(
            f"{backend}: loading {args.events:,} events over {args.players:,} players", flush=True
        )
        if backend == "sqlite":
            load_sqlite(SQLITE_PATH, args)
        else:
            load_postgres(url.replace("+psycopg", ""), args)
    return url


def percentiles(samples: list[float]) -> dict[str, float]:
    """Return the latency percentiles of ``samples`` with the CPU time per page last measured."""
    return {**latency_percentiles(samples), "cpu": cpu_per_page[-1] * 1000}


def sample_positions(backend: str, url: str, args) -> list[tuple[int, tuple[datetime, int] | None]]:
    rng = random.Random(args.seed + 1)
    positions = []
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        for _ in range(args.samples):
            player_id = rng.randrange(1, args.players + 1)
            if rng.random() < 0.5:
                positions.append((player_id, None))
                continue
            per_player = args.events // args.players
            row = conn.execute(
                sa.text(
                    "SELECT occurred_at, id FROM activity_events WHERE player_id = :p"
                    " ORDER BY occurred_at DESC, id DESC LIMIT 1 OFFSET :o"
                ),
                {"p": player_id, "o": rng.randrange(per_player)},
            ).one()
            at = row.occurred_at
            if isinstance(at, str):
                at = datetime.fromisoformat(at).replace(tzinfo=UTC)
            positions.append((player_id, (at.astimezone(UTC), row.id)))
    engine.dispose()
    return positions


def cursor_for(position: tuple[datetime, int] | None) -> str | None:
    from webapp.domain.cursors import encode_cursor

    if position is None:
        return None
    return encode_cursor({"occurred_at": position[0].isoformat(), "id": position[1]})


cpu_per_page: list[float] = []


def measure(
    run: Callable[[int, tuple | None], int],
    positions,
    rounds: int,
    between: Callable[[], object] | None = None,
) -> list[float]:
    """Time ``run`` over every position; ``between`` runs untimed before each call."""
    between = between or (lambda: None)
    for player_id, position in positions[:20]:  # warm caches and connections
        between()
        run(player_id, position)
    times = []
    cpu_started = time.process_time()
    for _ in range(rounds):
        for player_id, position in positions:
            between()
            started = time.perf_counter()
            rows = run(player_id, position)
            times.append(time.perf_counter() - started)
            assert rows > 0
    # This process's CPU per page: what the code costs, whatever else the machine runs.
    cpu_per_page.append((time.process_time() - cpu_started) / len(times))
    return times


BENCH_STAFF = "bench-viewer@bench.test"
BENCH_PASSWORD = "bench-password-long-enough"


def measure_requests(app, session, players, positions, cursors, rounds: int) -> dict:
    """Time whole requests through the app: the API feed page and the dashboard's timeline.

    In-process requests (the test client, no sockets), so the figures are the
    server's share: routing, authentication, the queries, rendering. The API is
    read as its owner sees it (a feed is private unless made public); the
    dashboard as a ``viewer``, whose redacted pages write no audit entries.
    """
    import re

    from webapp.domain.api_tokens import create_token
    from webapp.domain.audit import SYSTEM, Actor
    from webapp.domain.staff import create_staff
    from webapp.models import StaffUser
    from webapp.transaction import unit_of_work

    with unit_of_work(session):
        staff = session.scalar(sa.select(StaffUser).where(StaffUser.email == BENCH_STAFF))
        if staff is None:
            staff = create_staff(session, SYSTEM, BENCH_STAFF, ["viewer"], BENCH_PASSWORD).staff
        token = create_token(session, Actor(staff_id=staff.id), "bench", ["read"])
        plaintext = token.plaintext
    public_ids = {pid: player.public_id for pid, player in players.items()}
    client = app.test_client()
    form = client.get("/auth/sign-in").text
    csrf = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', form).group(1)
    signed_in = client.post(
        "/auth/sign-in", data={"email": BENCH_STAFF, "password": BENCH_PASSWORD, "csrf_token": csrf}
    )
    assert signed_in.status_code == 302, signed_in.status_code
    bearer = {"Authorization": f"Bearer {plaintext}"}

    def api(player_id, position):
        public_id = public_ids[player_id]
        query = f"?viewer={public_id}" + (f"&cursor={cursors[position]}" if position else "")
        response = client.get(f"/api/players/{public_id}/activity{query}", headers=bearer)
        assert response.status_code == 200, response.status_code
        return len(response.get_json()["items"])

    def page(player_id, position):
        public_id = public_ids[player_id]
        if position is None:  # the first page: the whole player page
            response = client.get(f"/admin/players/{public_id}")
        else:  # "load more": the htmx fragment of the next rows
            response = client.get(
                f"/admin/players/{public_id}/timeline?cursor={cursors[position]}",
                headers={"HX-Request": "true"},
            )
        assert response.status_code == 200, response.status_code
        return response.data.count(b'data-testid="event"')

    first = [p for p in positions if p[1] is None]
    following = [p for p in positions if p[1] is not None]
    return {
        "api_feed_request": percentiles(measure(api, positions, rounds)),
        "timeline_page_rendered_first": percentiles(measure(page, first, rounds)),
        "timeline_page_rendered_next": percentiles(measure(page, following, rounds)),
    }


def bench(backend: str, args) -> dict:
    url = prepare(backend, args)
    positions = sample_positions(backend, url, args)
    limit = args.limit
    results = {}

    if backend == "sqlite":
        raw = sqlite3.connect(SQLITE_PATH, isolation_level=None)
        first_sql, after_sql = RAW_FIRST_SQL.format(p="?"), RAW_SQL.format(p="?")

        def raw_page(player_id, position):
            if position is None:
                rows = raw.execute(first_sql, (player_id, limit + 1)).fetchall()
            else:
                rows = raw.execute(
                    after_sql, (player_id, sqlite_time(position[0]), position[1], limit + 1)
                ).fetchall()
            return len(rows)

        def raw_decoded_page(player_id, position):
            # sqlite3 hands back times and JSON as text; any caller must decode them,
            # as psycopg does on PostgreSQL, so this is the like-for-like floor.
            if position is None:
                rows = raw.execute(first_sql, (player_id, limit + 1)).fetchall()
            else:
                rows = raw.execute(
                    after_sql, (player_id, sqlite_time(position[0]), position[1], limit + 1)
                ).fetchall()
            for row in rows:
                datetime.fromisoformat(row[3]).replace(tzinfo=UTC)
                datetime.fromisoformat(row[4]).replace(tzinfo=UTC)
                json.loads(row[12])
            return len(rows)

        def between():
            if raw.in_transaction:
                raw.execute("COMMIT")
            raw.execute("BEGIN")

        results["raw_decoded"] = percentiles(
            measure(raw_decoded_page, positions, args.rounds, between)
        )
    else:
        raw = psycopg.connect(url.replace("+psycopg", ""))
        first_sql, after_sql = RAW_FIRST_SQL.format(p="%s"), RAW_SQL.format(p="%s")

        def raw_page(player_id, position):
            with raw.cursor() as cur:
                if position is None:
                    cur.execute(first_sql, (player_id, limit + 1))
                else:
                    cur.execute(after_sql, (player_id, position[0], position[1], limit + 1))
                rows = cur.fetchall()
            return len(rows)

        def between():
            raw.rollback()
            raw.execute("SELECT 1")

    results["raw"] = percentiles(measure(raw_page, positions, args.rounds, between))
    raw.close()

    # One client asks for thousands of pages: the API's per-token rate limit would answer 429.
    app = create_app(TestConfig(), overrides={"SQLALCHEMY_DATABASE_URI": url, "RATELIMIT_ENABLED": False})
    with app.app_context():
        session = db.session()
        cursors = {position: cursor_for(position) for _, position in positions}
        players = {
            p.id: p
            for p in session.scalars(
                sa.select(Player).where(
                    Player.id.in_(sorted({player_id for player_id, _ in positions}))
                )
            )
        }
        session.expunge_all()

        def ours(player_id, position):
            return len(
                timeline_page(session, player_id, cursor=cursors[position], limit=limit).events
            )

        def api(player_id, position):
            session.rollback()
            page = feed_page(
                session, players[player_id], Viewer.public(), cursor=cursors[position], limit=limit
            )
            return len(page.items)

        def begun():
            # As for the raw query: transaction open, connection checked out (and pinged).
            session.rollback()
            session.connection().exec_driver_sql("SELECT 1")

        # The query alone, like for like with the raw one; the API and search figures
        # below time a whole request's share: checkout, ping, BEGIN and every statement.
        results["timeline_page"] = percentiles(measure(ours, positions, args.rounds, begun))
        results["feed_page"] = percentiles(measure(api, positions, args.rounds))

        def api_in_transaction(player_id, position):
            page = feed_page(
                session, players[player_id], Viewer.public(), cursor=cursors[position], limit=limit
            )
            return len(page.items)

        results["feed_page_open"] = percentiles(
            measure(api_in_transaction, positions, args.rounds, begun)
        )

        results.update(measure_requests(app, session, players, positions, cursors, args.rounds))

        rng = random.Random(args.seed + 2)
        queries = {}
        for player_id, _ in positions:
            n = rng.randrange(1, args.players + 1)
            queries[player_id] = rng.choice(
                (f"player{n}", f"PLAYER {n}", f"dc-25-{n:06d}"[:-2], f"p{n}@")
            )

        def search(player_id, _position):
            session.rollback()
            return len(search_players(session, queries[player_id]).players)

        results["search_players"] = percentiles(measure(search, positions, args.rounds))
        session.rollback()
        db.session.remove()
        db.engine.dispose()
    floor = results.get("raw_decoded", results["raw"])
    results["ratio_p50"] = results["timeline_page"]["p50"] / floor["p50"]
    results["ratio_p95"] = results["timeline_page"]["p95"] / floor["p95"]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), action="append")
    parser.add_argument("--events", type=int, default=6_000_000)
    parser.add_argument("--players", type=int, default=60_000)
    parser.add_argument("--tournaments", type=int, default=20_000)
    parser.add_argument("--teams", type=int, default=5_000)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--seed", type=int, default=20261124)
    parser.add_argument("--reuse", action="store_true")
    args = parser.parse_args()
    for backend in args.backend or ("sqlite", "postgresql"):
        results = bench(backend, args)
        print(
            f"\n{backend}: {args.events:,} events, {args.players:,} players, page of {args.limit}"
        )
        for name in (
            "raw",
            "raw_decoded",
            "timeline_page",
            "feed_page_open",
            "feed_page",
            "api_feed_request",
            "timeline_page_rendered_first",
            "timeline_page_rendered_next",
            "search_players",
        ):
            if name not in results:
                continue
            r = results[name]
            print(
                f"  {name:28s} p50 {r['p50']:6.2f} ms  p95 {r['p95']:6.2f} ms  p99 {r['p99']:6.2f} ms"
                f"  (client CPU {r['cpu']:.2f} ms/page)"
            )
        print(
            f"  timeline_page / decoded raw: p50 {results['ratio_p50']:.2f}x, p95 {results['ratio_p95']:.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
