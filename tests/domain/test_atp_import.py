"""Importing the ATP match files: records, score markers, pairs, team competitions, skipped rows, reruns."""

from __future__ import annotations

import csv
import gzip
import io
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from webapp.domain import backfill, jobs
from webapp.domain.atp_import import (
    ABANDONED,
    DEFAULTED,
    PARTLY_UNKNOWN_SCORE,
    PLAYED,
    RETIRED,
    UNKNOWN_SCORE,
    WALKOVER,
    atp_username,
    classify_score,
    default_data_dir,
    import_atp,
    pair_name,
)
from webapp.domain.audit import SYSTEM
from webapp.domain.backfill import BackfillScope, Safeguards
from webapp.domain.errors import Invalid
from webapp.domain.reconciliation import find_drift
from webapp.domain.results import TeamRoster
from webapp.jobs.runner import execute_run
from webapp.models import (
    ActivityEvent,
    AuditEntry,
    JobRun,
    Match,
    Player,
    Registration,
    Team,
    TeamMembership,
    Tournament,
    TournamentResult,
)
from webapp.transaction import unit_of_work


def header(line: str) -> list[str]:
    """Return the column names of a header line as the data writes it."""
    return line.split(",")


SINGLES_HEADER = header(
    "tourney_id,tourney_name,surface,draw_size,tourney_level,tourney_date,match_num,winner_id,winner_seed,"
    "winner_entry,winner_name,winner_hand,winner_ht,winner_ioc,winner_age,loser_id,loser_seed,loser_entry,"
    "loser_name,loser_hand,loser_ht,loser_ioc,loser_age,score,best_of,round,minutes,w_ace,w_df,w_svpt,"
    "w_1stIn,w_1stWon,w_2ndWon,w_SvGms,w_bpSaved,w_bpFaced,l_ace,l_df,l_svpt,l_1stIn,l_1stWon,l_2ndWon,"
    "l_SvGms,l_bpSaved,l_bpFaced,winner_rank,winner_rank_points,loser_rank,loser_rank_points"
)
DOUBLES_HEADER = header(
    "tourney_id,tourney_name,surface,draw_size,tourney_level,tourney_date,match_num,winner1_id,winner2_id,"
    "winner_seed,winner_entry,loser1_id,loser2_id,loser_seed,loser_entry,score,best_of,round,winner1_name,"
    "winner1_hand,winner1_ht,winner1_ioc,winner1_age,winner2_name,winner2_hand,winner2_ht,winner2_ioc,"
    "winner2_age,loser1_name,loser1_hand,loser1_ht,loser1_ioc,loser1_age,loser2_name,loser2_hand,loser2_ht,"
    "loser2_ioc,loser2_age,winner1_rank,winner1_rank_points,winner2_rank,winner2_rank_points,loser1_rank,"
    "loser1_rank_points,loser2_rank,loser2_rank_points,minutes,w_ace,w_df,w_svpt,w_1stIn,w_1stWon,w_2ndWon,"
    "w_SvGms,w_bpSaved,w_bpFaced,l_ace,l_df,l_svpt,l_1stIn,l_1stWon,l_2ndWon,l_SvGms,l_bpSaved,l_bpFaced"
)
PLAYERS_HEADER = header("player_id,name_first,name_last,hand,dob,ioc,height,wikidata_id")

PEOPLE = {
    101: ("Ana", "Ace"), 102: ("Ben", "Baseline"), 103: ("Cy", "Chip"), 104: ("Dee", "Drop"),
    105: ("Eli", "Volley"), 106: ("Fay", "Lob"), 107: ("Gus", "Slice"), 108: ("Hal", "Smash"),
    199999: ("U", "Unknown"), 200816: ("", "Bye1"), 300: ("", ""),
}
MONDAY = "20190107"


def singles(tourney_id="2019-001", match_num=1, winner=101, loser=102, score="6-3 6-4", round="F",
            name="Harbour Open", level="A", date=MONDAY, **extra) -> dict:
    return {"tourney_id": tourney_id, "tourney_name": name, "tourney_level": level, "tourney_date": date,
            "match_num": str(match_num), "winner_id": str(winner), "loser_id": str(loser), "score": score,
            "round": round, **extra}


def doubles(tourney_id="2019-001", match_num=1, winners=(101, 102), losers=(103, 104), score="6-3 6-4",
            round="F", name="Harbour Open", level="A", date=MONDAY) -> dict:
    return {"tourney_id": tourney_id, "tourney_name": name, "tourney_level": level, "tourney_date": date,
            "match_num": str(match_num), "winner1_id": str(winners[0]), "winner2_id": str(winners[1]),
            "loser1_id": str(losers[0]), "loser2_id": str(losers[1]), "score": score, "round": round}


def write_gzip_csv(path: Path, header: list[str], rows: list[dict | list | str], *, trailing: int = 0) -> None:
    """Write rows like the data's: dicts by header name, or raw field lists and lines as given."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        if isinstance(row, str):
            text.write(row + "\n")
        elif isinstance(row, list):
            writer.writerow(row)
        else:
            writer.writerow([row.get(column, "") for column in header] + [""] * trailing)
    with gzip.open(path, "wt", encoding="utf-8", newline="") as handle:
        handle.write(text.getvalue())


@pytest.fixture
def data_dir(tmp_path):
    """A data folder holding atp_players.csv.gz; tests add the match files they need."""
    folder = tmp_path / "atp"
    folder.mkdir()
    write_gzip_csv(folder / "atp_players.csv.gz", PLAYERS_HEADER, [
        [str(i), first, last, "R", "", "USA", "", ""] for i, (first, last) in PEOPLE.items()
    ])
    return folder


def write_singles(folder: Path, year: int, rows: list) -> None:
    write_gzip_csv(folder / f"atp_matches_{year}.csv.gz", SINGLES_HEADER, rows)


def write_doubles(folder: Path, year: int, rows: list) -> None:
    # Every doubles row of the real files carries empty fields past the header.
    write_gzip_csv(folder / f"atp_matches_doubles_{year}.csv.gz", DOUBLES_HEADER, rows, trailing=1)


def run_import(session, folder: Path, **options):
    with unit_of_work(session):
        return import_atp(session, folder, **options)


def player(session, atp_id: int) -> Player:
    return session.scalars(select(Player).where(Player.username == atp_username(atp_id))).one()


def tournament(session, ref: str) -> Tournament:
    return session.scalars(select(Tournament).where(Tournament.external_ref == ref)).one()


def match(session, ref: str) -> Match:
    return session.scalars(select(Match).where(Match.external_ref == ref)).one()


def count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


def record_counts(session) -> dict[str, int]:
    models = (Player, Team, TeamMembership, Tournament, Registration, Match, TournamentResult)
    return {model.__tablename__: count(session, model) for model in models}


@pytest.mark.parametrize(
    ("score", "category"),
    [
        ("6-3 6-4", PLAYED),
        ("6-3 6-7(2) (10-3)", PLAYED),
        ("W/O", WALKOVER),
        (" W/O", WALKOVER),
        ("Walkover", WALKOVER),
        ("6-3 2-1 RET", RETIRED),
        ("[6-7] RET", RETIRED),
        ("DEF", DEFAULTED),
        ("6-5 DEF", DEFAULTED),
        ("6-0 4-4 Def.", DEFAULTED),
        ("6-2 3-3 Default", DEFAULTED),
        ("6-4 3-3 ABD", ABANDONED),
        ("6-4 Played and abandoned", ABANDONED),
        ("7-5 2-2 Played and unfinished", ABANDONED),
        ("", UNKNOWN_SCORE),
        ("UNK", UNKNOWN_SCORE),
        ("NA", UNKNOWN_SCORE),
        ("6-2 ?-?", PARTLY_UNKNOWN_SCORE),
    ],
)
def test_every_score_marker_of_the_readme_has_its_category(score, category):
    assert classify_score(score) == category


def test_score_markers_give_match_states_and_are_counted(session, data_dir):
    scores = ["6-3 6-4", "W/O", "Walkover", "6-3 2-1 RET", "DEF", "6-0 4-4 Def.", "6-4 3-3 ABD",
              "6-4 Played and abandoned", "UNK", "", "NA", "6-2 ?-?"]
    write_singles(data_dir, 2019, [
        singles(match_num=n, score=score, round="R32") for n, score in enumerate(scores, start=1)
    ])
    report = run_import(session, data_dir)

    states = {n: match(session, f"atp:2019-001:{n}") for n in range(1, len(scores) + 1)}
    assert states[1].state == "completed" and states[1].winner_side == "a"
    assert states[2].state == states[3].state == "forfeit"
    assert states[2].winner_side == states[3].winner_side == "a"
    assert all(states[n].state == "completed" and states[n].winner_side == "a" for n in (4, 5, 6, 9, 10, 11, 12))
    assert [(states[n].state, states[n].winner_side, states[n].completed_at) for n in (7, 8)] == [
        ("void", None, None), ("void", None, None)
    ]
    assert states[1].side_a_player_id == player(session, 101).id
    assert states[1].side_b_player_id == player(session, 102).id
    assert report.scores == {PLAYED: 1, WALKOVER: 2, RETIRED: 1, DEFAULTED: 2, ABANDONED: 2,
                             UNKNOWN_SCORE: 3, PARTLY_UNKNOWN_SCORE: 1}


def test_players_are_imported_with_a_deterministic_identity_only_when_a_match_needs_them(session, data_dir):
    write_singles(data_dir, 2019, [
        singles(match_num=1, winner=101, loser=199999, round="SF"),
        singles(match_num=2, winner=102, loser=300, round="SF"),
    ])
    report = run_import(session, data_dir)

    ana = player(session, 101)
    assert (ana.public_id, ana.display_name, ana.email, ana.feed_visibility) == (
        "DC-68-000101", "Ana Ace", "atp101@players.atp.invalid", "private"
    )
    assert player(session, 199999).display_name == "U Unknown", "a placeholder a match refers to is kept"
    assert player(session, 300).display_name == "ATP player 300", "a nameless player still has a name"
    assert count(session, Player) == 4
    assert report.inserted["players"] == 4
    assert report.players_in_file == len(PEOPLE)


def test_the_final_decides_the_winner_and_rounds_are_ordered_in_time(session, data_dir):
    write_singles(data_dir, 2019, [
        singles(match_num=1, winner=101, loser=102, round="F"),
        singles(match_num=2, winner=101, loser=103, round="SF"),
        singles(match_num=3, winner=102, loser=104, round="SF"),
        singles(match_num=4, winner=103, loser=105, round="QF"),
        singles(match_num=5, winner=101, loser=106, round="R32"),
    ])
    run_import(session, data_dir)

    event = tournament(session, "atp:2019-001")
    starts = datetime(2019, 1, 7, tzinfo=UTC)
    assert (event.name, event.starts_at, event.ends_at) == ("Harbour Open", starts, starts + timedelta(days=7))
    assert event.awards_winner and not event.is_team_based
    times = [match(session, f"atp:2019-001:{n}").completed_at for n in (5, 4, 2, 1)]
    assert times == sorted(times) and len(set(times)) == 4, "R32 < QF < SF < F"
    assert all(starts <= at < event.ends_at for at in times)
    final = match(session, "atp:2019-001:1")
    assert final.is_final and not match(session, "atp:2019-001:2").is_final
    result = session.scalars(select(TournamentResult)).one()
    assert (result.tournament_id, result.winner_player_id, result.decided_at) == (
        event.id, player(session, 101).id, final.completed_at
    )
    registrations = session.scalars(select(Registration).where(Registration.tournament_id == event.id)).all()
    assert sorted(r.player_id for r in registrations) == sorted(player(session, i).id for i in range(101, 107))
    assert {r.registered_at for r in registrations} == {starts - timedelta(days=1)}


def test_a_final_won_by_walkover_still_decides_the_winner(session, data_dir):
    write_singles(data_dir, 2019, [singles(match_num=1, winner=101, loser=102, round="F", score="W/O")])
    run_import(session, data_dir)

    assert session.scalars(select(TournamentResult)).one().winner_player_id == player(session, 101).id


def test_team_competitions_count_their_matches_but_nobody_wins_them(session, data_dir):
    write_singles(data_dir, 2019, [
        singles(tourney_id="2019-M-DC-2019-WG-M-SWE-AUS-01", name="Davis Cup WG QF: SWE vs AUS", level="D",
                round="RR", match_num=1),
        singles(tourney_id="2019-615", name="Dusseldorf", round="F", match_num=1, winner=101, loser=102),
        singles(tourney_id="2019-615", name="Dusseldorf", round="F", match_num=2, winner=103, loser=104),
        singles(tourney_id="2019-8888", name="Atp Cup", round="F", match_num=1),
        singles(tourney_id="2019-9210", name="Laver Cup", round="F", match_num=1),
        singles(tourney_id="2019-9900", name="United Cup", round="F", match_num=1),
        singles(tourney_id="2019-T161", name="Kings Cup Final", round="F", match_num=1),
        singles(tourney_id="2019-9296", name="WCT World Cup", round="F", match_num=1),
        singles(tourney_id="2019-002", name="Harbour Open", round="F", match_num=1),
    ])
    write_doubles(data_dir, 2019, [doubles(tourney_id="2019-615", name="Dusseldorf", round="F")])
    report = run_import(session, data_dir)

    cups = session.scalars(select(Tournament).where(Tournament.external_ref != "atp:2019-002")).all()
    assert len(cups) == 8
    assert not any(cup.awards_winner for cup in cups)
    assert count(session, Match) == 10, "their matches count"
    open_event = tournament(session, "atp:2019-002")
    assert [m.tournament_id for m in session.scalars(select(Match).where(Match.is_final))] == [open_event.id]
    assert [r.tournament_id for r in session.scalars(select(TournamentResult))] == [open_event.id]
    assert report.tournaments["team competition: nobody wins"] == 8


def test_doubles_pairs_become_two_player_teams_whose_results_reach_both(session, data_dir):
    write_singles(data_dir, 2019, [singles(tourney_id="2019-001", winner=101, loser=103)])
    write_doubles(data_dir, 2019, [
        doubles(tourney_id="2019-001", match_num=1, winners=(102, 101), losers=(104, 103), round="F"),
        doubles(tourney_id="2019-001", match_num=2, winners=(101, 102), losers=(105, 106), round="SF"),
        doubles(tourney_id="2019-009", match_num=1, winners=(103, 104), losers=(101, 102), round="F",
                date="20190311"),
    ])
    run_import(session, data_dir)

    singles_event, doubles_event = tournament(session, "atp:2019-001"), tournament(session, "atp-doubles:2019-001")
    assert singles_event.id != doubles_event.id, "singles and doubles are separate competitions"
    assert doubles_event.is_team_based and doubles_event.name == "Harbour Open (doubles)"
    pair = session.scalars(select(Team).where(Team.name == pair_name(101, 102))).one()
    assert pair.name == "ATP pair 101/102"
    assert count(session, Team) == 3
    members = session.scalars(select(TeamMembership).where(TeamMembership.team_id == pair.id)).all()
    assert sorted(m.player_id for m in members) == sorted([player(session, 101).id, player(session, 102).id])
    assert {(m.joined_at, m.left_at) for m in members} == {(datetime(2019, 1, 6, tzinfo=UTC), None)}

    final = match(session, "atp-doubles:2019-001:F:1")
    assert (final.side_a_team_id, final.side_a_player_id) == (pair.id, None)
    roster = TeamRoster.load(session, session.scalars(select(Team.id)).all())
    for m in session.scalars(select(Match).where(Match.side_a_team_id.is_not(None))):
        assert len(roster.members(m.side_a_team_id, m.completed_at)) == 2
        assert len(roster.members(m.side_b_team_id, m.completed_at)) == 2
    assert roster.members(pair.id, final.completed_at) == sorted(m.player_id for m in members)
    registration = session.scalars(select(Registration).where(
        Registration.tournament_id == doubles_event.id, Registration.team_id == pair.id)).one()
    assert registration.player_id is None and registration.status == "completed"
    assert roster.members(pair.id, registration.registered_at) != []
    result = session.scalars(select(TournamentResult).where(TournamentResult.tournament_id == doubles_event.id)).one()
    assert (result.winner_team_id, result.winner_player_id) == (pair.id, None)


def test_a_pair_seen_earlier_in_a_later_run_has_its_membership_start_earlier(session, data_dir):
    write_doubles(data_dir, 2020, [doubles(tourney_id="2020-001", date="20200106")])
    write_doubles(data_dir, 2019, [doubles(tourney_id="2019-001", date="20190107")])
    run_import(session, data_dir, years=[2020])
    report = run_import(session, data_dir, years=[2019])

    pair = session.scalars(select(Team).where(Team.name == pair_name(101, 102))).one()
    joined = session.scalars(select(TeamMembership.joined_at).where(TeamMembership.team_id == pair.id)).all()
    assert joined == [datetime(2019, 1, 6, tzinfo=UTC)] * 2
    assert report.updated["team_memberships"] == 4, "both pairs of the 2019 final"
    assert count(session, TeamMembership) == 4, "moved, not duplicated"


def test_a_walkover_loser_who_never_played_there_withdrew(session, data_dir):
    write_singles(data_dir, 2019, [
        singles(match_num=1, winner=101, loser=102, round="R32", score="W/O"),  # 102 withdrew
        singles(match_num=2, winner=103, loser=104, round="R32"),
        singles(match_num=3, winner=101, loser=103, round="R16", score="W/O"),  # 103 played, then withdrew
        singles(match_num=4, winner=105, loser=106, round="R32", score="W/O"),
        singles(match_num=5, winner=107, loser=105, round="R16", score="W/O"),  # 105 never played
    ])
    run_import(session, data_dir)

    status = {
        r.player_id: r.status for r in session.scalars(select(Registration))
    }
    assert {i: status[player(session, i).id] for i in range(101, 108)} == {
        101: "completed", 102: "withdrawn", 103: "completed", 104: "completed", 105: "withdrawn",
        106: "withdrawn", 107: "completed",
    }


def test_rows_it_cannot_use_are_counted_by_reason(session, data_dir):
    write_singles(data_dir, 2019, [
        singles(match_num=1, winner=101, loser=200816, score=""),  # a bye
        singles(match_num=2, winner=101, loser=999),  # not in atp_players.csv
        singles(match_num=3, winner=199999, loser=199999, score="UNK"),
        singles(match_num=4, winner=101, loser=102),
    ])
    write_doubles(data_dir, 2019, [
        doubles(match_num=1, winners=(101, 102), losers=(103, "")),
        doubles(match_num=2, winners=(101, 102), losers=(103, 900017)),
        doubles(match_num=3, winners=(101, 101), losers=(103, 104)),
        doubles(match_num=4, winners=(101, 102), losers=(103, 104)),
    ])
    report = run_import(session, data_dir)

    assert report.skipped == {"bye": 1, "unknown_player": 2, "same_player_both_sides": 1,
                              "missing_player_id": 1, "same_player_twice_in_pair": 1}
    assert report.examples["unknown_player"] == ["atp_matches_2019.csv.gz:3", "atp_matches_doubles_2019.csv.gz:3"]
    assert report.rows_read == 8
    assert report.inserted["matches"] == count(session, Match) == 2
    assert report.rows_read == report.rows_skipped + report.inserted["matches"]
    assert count(session, Player) == 4, "no player for a bye or an unknown id"


def test_malformed_rows_are_counted_and_the_rest_imported(session, data_dir):
    good = singles(match_num=1)
    fields = [good.get(column, "") for column in SINGLES_HEADER]
    write_singles(data_dir, 2019, [
        fields[:20],  # too few fields
        fields + ["surprise"],  # a non-empty field beyond the header
        "",  # a blank line
        singles(match_num=2, date="2019-01-07"),
        singles(match_num=3, date="20190231"),
        singles(match_num="three"),
        singles(match_num=4, round="R3"),
        singles(match_num=5, tourney_id=""),
        singles(match_num=6, winner="abc"),
        good,
    ])
    report = run_import(session, data_dir)

    assert report.skipped == {
        "too_few_fields": 1, "extra_fields": 1, "blank_line": 1, "bad_tourney_date": 2, "bad_match_num": 1,
        "unknown_round": 1, "missing_tourney_id": 1, "bad_player_id": 1,
    }
    assert [m.external_ref for m in session.scalars(select(Match))] == ["atp:2019-001:1"]


def test_a_file_without_a_needed_column_is_refused_and_nothing_is_written(session, data_dir):
    write_gzip_csv(data_dir / "atp_matches_2019.csv.gz", [c for c in SINGLES_HEADER if c != "round"],
                   [singles()])

    with pytest.raises(Invalid, match="no column round"):
        run_import(session, data_dir)
    assert record_counts(session) == dict.fromkeys(record_counts(session), 0)


def test_running_it_again_writes_nothing_new(session, data_dir):
    write_singles(data_dir, 2019, [
        singles(match_num=1, round="F"), singles(match_num=2, winner=101, loser=103, round="SF", score="W/O"),
    ])
    write_doubles(data_dir, 2019, [doubles(round="F")])
    first = run_import(session, data_dir)
    before = record_counts(session)

    again = run_import(session, data_dir)

    assert record_counts(session) == before
    assert sum(again.inserted.values()) == 0 and sum(again.updated.values()) == 0
    assert again.existing["matches"] == first.inserted["matches"] == 3
    assert again.existing["registrations"] == first.inserted["registrations"]
    assert again.existing["tournament_results"] == 2


def test_a_tournament_split_across_chunks_gets_the_records_of_a_whole_one(session, data_dir):
    # The tournament is split across chunks, its final first and the walkover that decides a status last.
    write_singles(data_dir, 2019, [
        singles(match_num=1, winner=101, loser=103, round="F"),
        singles(match_num=2, winner=104, loser=105, round="R32"),
        singles(match_num=3, winner=102, loser=106, round="R32", score="W/O"),
        singles(tourney_id="2019-002", match_num=1, winner=107, loser=108, round="F"),
        singles(match_num=4, winner=101, loser=102, round="R16", score="W/O"),
    ])
    report = run_import(session, data_dir, chunk_size=2)

    status = {r.player_id: r.status for r in session.scalars(select(Registration))}
    assert status[player(session, 102).id] == "withdrawn", "won by walkover, then withdrew: never played"
    assert status[player(session, 106).id] == "withdrawn"
    assert status[player(session, 101).id] == status[player(session, 103).id] == "completed"
    assert count(session, Registration) == 8 and count(session, Match) == 5
    assert count(session, TournamentResult) == 2
    assert report.inserted["registrations"] == 8 and report.inserted["matches"] == 5
    assert report.updated["registrations"] == 1, "102 completed after the first chunks, withdrawn after the last"
    assert report.existing == {"matches": 0, "tournaments": 0, "registrations": 1, "tournament_results": 0}


def test_the_import_runs_as_a_job_committing_chunk_by_chunk(session, data_dir):
    write_singles(data_dir, 2019, [singles(match_num=n, round="R32") for n in range(1, 8)])
    with unit_of_work(session):
        run_id = jobs.queue_run(session, SYSTEM, "import_atp",
                                {"data_dir": str(data_dir), "years": "2019", "chunk_size": 3}).id

    run = execute_run(session, run_id)

    assert run.status == "succeeded", run.error
    assert run.result["inserted"]["matches"] == 7
    assert (run.progress_done, run.progress_total) == (1, 1)
    assert count(session, Match) == 7


def test_the_cli_prints_the_report_and_refuses_a_missing_folder(runner, session, data_dir, tmp_path):
    write_singles(data_dir, 2019, [singles(), singles(match_num=2, winner=101, loser=999)])

    result = runner.invoke(args=["import-atp", "--data-dir", str(data_dir), "--years", "2019"])

    assert result.exit_code == 0, result.output
    assert "2 match rows, 1 skipped" in result.output
    assert "a player id is not in atp_players.csv (e.g. atp_matches_2019.csv.gz:3)" in result.output
    assert count(session, Match) == 1
    missing = runner.invoke(args=["import-atp", "--data-dir", str(tmp_path / "nowhere")])
    assert missing.exit_code == 1 and "is not a folder" in missing.output
    backwards = runner.invoke(args=["import-atp", "--data-dir", str(data_dir), "--years", "2020-2019"])
    assert backwards.exit_code == 2
    assert count(session, JobRun) == 1, "a refused import stores no run"


def test_the_cli_import_is_a_stored_run_that_can_be_handed_to_the_workers(runner, session, data_dir):
    write_singles(data_dir, 2019, [singles(match_num=n, round="R32") for n in range(1, 4)])

    here = runner.invoke(args=["import-atp", "--data-dir", str(data_dir), "--years", "2019"])

    assert here.exit_code == 0, here.output
    run = session.scalars(select(JobRun)).one()
    assert (run.kind, run.status, run.progress_done, run.progress_total) == ("import_atp", "succeeded", 1, 1)
    assert run.params == {"data_dir": str(data_dir.resolve()), "years": "2019-2019",
                          "include_doubles": True, "chunk_size": 5_000}
    assert run.result["inserted"]["matches"] == 3
    assert f"import run {run.id} succeeded" in here.output and "3 match rows, 0 skipped" in here.output
    assert session.scalars(select(AuditEntry.action).where(AuditEntry.target_id == run.id)).all() == [
        "job.import_atp.queue"
    ]
    session.rollback()

    queued = runner.invoke(args=["import-atp", "--data-dir", str(data_dir), "--queue"])
    assert queued.exit_code == 0, queued.output
    later = session.scalars(select(JobRun).order_by(JobRun.id.desc())).first()
    assert later.status == "queued" and f"import run {later.id} queued" in queued.output
    session.rollback()

    refused = runner.invoke(args=["import-atp", "--data-dir", str(data_dir)])
    assert refused.exit_code == 1
    assert f"import run {later.id} is queued; wait for it to end or cancel it" in refused.output
    assert count(session, JobRun) == 2


def test_a_cancelled_import_is_not_resumed_while_another_import_is_queued(runner, session, data_dir):
    write_singles(data_dir, 2019, [singles()])
    assert runner.invoke(args=["import-atp", "--data-dir", str(data_dir), "--queue"]).exit_code == 0
    first = session.scalars(select(JobRun)).one()
    session.rollback()
    assert runner.invoke(args=["jobs", "cancel", str(first.id)]).exit_code == 0
    assert runner.invoke(args=["import-atp", "--data-dir", str(data_dir), "--queue"]).exit_code == 0
    session.rollback()

    refused = runner.invoke(args=["jobs", "resume", str(first.id), "--queue"])

    assert refused.exit_code == 1
    assert f"import run {first.id + 1} is queued; wait for it to end or cancel it" in refused.output
    session.rollback()
    assert session.get(JobRun, first.id).status == "cancelled"


def run_backfill(session):
    """Turn the imported records into events, as ``flask backfill run`` does."""
    with unit_of_work(session):
        run_id = backfill.start_backfill(
            session, SYSTEM, BackfillScope(), safeguards=Safeguards(now=datetime(2026, 3, 3, 3, 0, tzinfo=UTC)),
            batch_size=500, pause_seconds=0,
        ).id
    run = execute_run(session, run_id)
    session.rollback()
    return run


def event_types(session, atp_id: int) -> list[str]:
    return sorted(session.scalars(
        select(ActivityEvent.event_type).where(ActivityEvent.player_id == player(session, atp_id).id)
    ))


def test_the_backfill_turns_the_imported_records_into_events(session, data_dir):
    write_singles(data_dir, 2019, [
        singles(match_num=1, winner=101, loser=102, round="F"),
        singles(match_num=2, winner=101, loser=103, round="SF", score="W/O"),  # 103 withdrew
        singles(match_num=3, winner=102, loser=104, round="SF", score="6-4 3-3 ABD"),
        singles(tourney_id="2019-M-DC-2019-WG-M-SWE-AUS-01", name="Davis Cup WG QF: SWE vs AUS", level="D",
                round="RR", match_num=1, winner=105, loser=106),
    ])
    write_doubles(data_dir, 2019, [doubles(winners=(107, 108), losers=(101, 102), round="F")])
    run_import(session, data_dir)

    run = run_backfill(session)

    assert run.status == "succeeded", run.error
    assert run.result["failed"] == 0 and run.result["parity_ok"], run.result["parity_flags"]
    assert event_types(session, 103) == ["match_forfeit_lost", "tournament_registered"]
    assert event_types(session, 104) == [
        "tournament_checked_in", "tournament_completed", "tournament_registered"
    ], "an abandoned match gives no result"
    assert event_types(session, 105) == [
        "match_won", "tournament_checked_in", "tournament_registered"
    ], "a Davis Cup tie counts its matches, but has no result to win or complete"
    for atp_id in (107, 108):
        assert event_types(session, atp_id) == [
            "match_won", "tournament_checked_in", "tournament_completed", "tournament_registered",
            "tournament_won",
        ], "the pair's results reach both players"
    assert event_types(session, 101).count("tournament_won") == 1, "singles only"
    assert find_drift(session).drifts == []


REAL_DATA = default_data_dir()


@pytest.fixture
def real_data(tmp_path):
    """The 2024 singles and 2020 doubles files of the real data, beside its players file."""
    files = ("atp_players.csv.gz", "atp_matches_2024.csv.gz", "atp_matches_doubles_2020.csv.gz")
    if not all((REAL_DATA / name).is_file() for name in files):
        message = f"the ATP data is not at {REAL_DATA}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}, and CI=true has it beside the repository")
        pytest.skip(message)
    folder = tmp_path / "real"
    folder.mkdir()
    for name in files:
        (folder / name).symlink_to(REAL_DATA / name)
    return folder


@pytest.mark.slow
def test_a_real_season_of_singles_and_of_doubles(session, real_data):
    report = run_import(session, real_data)

    # Row counts as the data's README gives them: 3,076 singles rows in 2024, 270 doubles rows in 2020.
    assert report.rows_read == 3_076 + 270
    assert report.rows_read == report.rows_skipped + report.inserted["matches"]
    assert report.inserted["matches"] == count(session, Match)
    sinner = player(session, 206173)
    assert sinner.display_name == "Jannik Sinner"
    australian_open = tournament(session, "atp:2024-580")
    result = session.scalars(
        select(TournamentResult).where(TournamentResult.tournament_id == australian_open.id)
    ).one()
    assert result.winner_player_id == sinner.id
    assert not tournament(session, "atp:2024-9900").awards_winner, "United Cup"
    assert not tournament(session, "atp:2024-9210").awards_winner, "Laver Cup"
    assert tournament(session, "atp-doubles:2020-0301").is_team_based, "Auckland doubles"
    decided = session.scalar(select(func.count()).select_from(Tournament).where(Tournament.awards_winner))
    assert count(session, TournamentResult) + report.tournaments["no final in the data: no winner"] == decided
    # Team results must reach both members at the time of every match.
    team_ids = session.scalars(select(Team.id)).all()
    roster = TeamRoster.load(session, team_ids)
    for m in session.scalars(select(Match).where(Match.side_a_team_id.is_not(None))):
        assert len(roster.members(m.side_a_team_id, m.scheduled_at)) == 2
        assert len(roster.members(m.side_b_team_id, m.scheduled_at)) == 2

    run = run_backfill(session)

    assert run.status == "succeeded", run.error
    assert run.result["failed"] == 0 and run.result["parity_ok"], run.result["parity_flags"]
    assert "tournament_won" in event_types(session, 206173)
