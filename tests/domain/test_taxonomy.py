"""The event taxonomy: one table, documented, with reversals that undo exactly."""

from pathlib import Path

import pytest

from webapp.domain.errors import Invalid
from webapp.domain.taxonomy import EVENT_TYPES, event_type, taxonomy_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "taxonomy.md"


def test_the_documented_taxonomy_is_the_one_in_the_code():
    assert DOC.read_text() == taxonomy_markdown(), "regenerate docs/taxonomy.md from taxonomy_markdown()"


@pytest.mark.parametrize("name", [n for n, t in EVENT_TYPES.items() if t.reverses])
def test_a_reversal_cancels_its_original_for_solo_and_team_events(name):
    reversal = EVENT_TYPES[name]
    original = EVENT_TYPES[reversal.reverses]
    for is_team in (False, True):
        combined = dict(original.deltas_for(is_team))
        for stat, delta in reversal.deltas_for(is_team).items():
            combined[stat] = combined.get(stat, 0) + delta
        assert not any(combined.values())


def test_forfeits_never_count_as_matches_won_lost_or_played():
    for name in ("match_forfeit_won", "match_forfeit_lost"):
        deltas = EVENT_TYPES[name].deltas_for(False)
        assert not {"matches_won", "matches_lost", "matches_played"} & set(deltas)


def test_the_required_event_types_exist():
    required = {
        "match_won", "match_lost", "match_forfeit_won", "match_forfeit_lost", "tournament_registered",
        "tournament_checked_in", "tournament_completed", "tournament_won", "match_won_reversed",
        "match_lost_reversed", "tournament_won_reversed",
    }
    assert required <= set(EVENT_TYPES)


def test_an_unknown_type_is_refused_by_name():
    with pytest.raises(Invalid, match="unknown event type 'match_tied'"):
        event_type("match_tied")
