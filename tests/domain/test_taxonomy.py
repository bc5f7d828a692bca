"""The event taxonomy: one table, documented, with reversals that undo exactly."""

import re
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


# Metadata as every event type accepts it, with optional fields given at and away from their defaults.
METADATA_SAMPLES = {
    "match": [
        {"round": "F", "side": "a", "opponent_player_ids": [7, 8]},
        {"round": "SF1", "side": "b", "opponent_player_ids": [7], "opponent_team_id": None},
        {"round": "R128", "side": "a", "opponent_player_ids": [], "opponent_team_id": 12},
    ],
    "tournament": [{}, {"registration_id": None}, {"registration_id": 41}],
    "win": [{"is_team_win": False}, {"is_team_win": True, "placement": 1}, {"is_team_win": False, "placement": 2}],
    "reversal": [{}, {"match_id": 3}, {"tournament_id": 4, "match_id": None}],
}


def _samples_for(kind):
    fields = set(kind.metadata_model.model_fields)
    if "round" in fields:
        return METADATA_SAMPLES["match"]
    if "is_team_win" in fields:
        return METADATA_SAMPLES["win"]
    if "match_id" in fields:
        return METADATA_SAMPLES["reversal"]
    return METADATA_SAMPLES["tournament"]


@pytest.mark.parametrize("name", list(EVENT_TYPES))
def test_validated_metadata_is_stored_without_the_fields_left_at_their_defaults(name):
    kind = EVENT_TYPES[name]
    for metadata in _samples_for(kind):
        expected = kind.metadata_model.model_validate(metadata).model_dump(exclude_defaults=True)
        assert kind.validate_metadata(metadata) == expected
        assert not set(kind.validate_metadata(metadata)) - set(metadata), "nothing is added"


def test_metadata_given_as_another_mapping_is_validated_like_a_dict():
    from types import MappingProxyType

    kind = EVENT_TYPES["match_won"]
    given = {"round": "F", "side": "a", "opponent_player_ids": [7], "opponent_team_id": None}
    assert kind.validate_metadata(MappingProxyType(given)) == {"round": "F", "side": "a", "opponent_player_ids": [7]}


@pytest.mark.parametrize(
    ("metadata", "problem"),
    [
        ({"round": "F", "side": "a"}, "field 'opponent_player_ids': Field required"),
        ({"round": "F", "side": "a", "opponent_player_ids": ["7"]}, "field 'opponent_player_ids.0'"),
        ({"round": "F", "side": "a", "opponent_player_ids": [7], "opponent_name": "x"}, "field 'opponent_name'"),
        (["round", "F"], "metadata must be an object, not list"),
    ],
)
def test_bad_metadata_is_refused_naming_the_field(metadata, problem):
    with pytest.raises(Invalid, match=re.escape(problem)):
        EVENT_TYPES["match_won"].validate_metadata(metadata)
