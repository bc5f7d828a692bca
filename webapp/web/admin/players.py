"""Player pages: search, profile, stats and timeline, full data for a reason, feed preview.

Every view here reads the same way: load, check access, call the domain, render.
What a page shows of a player is decided by ``webapp.domain.privacy`` for the
viewer the request stands for, never by the templates.

Redacted and full views
-----------------------
All five roles may search and open player pages. They see the
``staff_redacted`` view: no email or username, opponents by public id only,
private tournaments masked, public-scope stats only. ``engineer`` works on the
system, not on players, so it gets the redacted view too.

``admin``, ``trust_safety`` and ``privacy`` (``UNREDACTED_ROLES``) may ask for
the ``staff_full`` view of one player by POSTing a reason (free text, or a
dispute or GDPR request reference). That grants the full view of that player,
to that staff member's session only, for ``GRANT_LIFETIME``; signing out ends
it, and losing the role ends it at the next request. The grant and every
later full page, timeline fragment or preview are written to the append-only
audit trail as ``player.view_unredacted`` with the reason, before any data is
read. Those are the only writes a GET makes here.

Search (a choice made here)
---------------------------
Searching by email is a lookup of personal data, and matching on a field that
is not shown would reveal it one guess at a time. So:

- redacted roles (``viewer``, ``engineer``) search by public id and display
  name, the two fields a result shows;
- ``UNREDACTED_ROLES`` also search by username and email: finding the account
  behind an address someone wrote in from is part of their work. The results
  still show only public id and display name, so a search never puts an email
  or username on screen; they appear on the player page after a reason.

A player's own display name is shown to every staff member (search results,
page heading) so that staff can tell accounts apart; other players appear by
public id unless the full view is granted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from flask import current_app, flash, g, redirect, request, session, url_for
from flask_admin import expose
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import StringField
from wtforms.validators import DataRequired, Length

from webapp.domain import players as players_domain
from webapp.domain.archive import ArchiveStorage, ArchiveVerificationFailed
from webapp.domain.audit import record_audit
from webapp.domain.cold_feed import ColdFeed, archived_feed
from webapp.domain.errors import Forbidden, Invalid
from webapp.domain.privacy import (
    SEARCH_FIELDS,
    Viewer,
    present_player,
    present_stats,
    preview_viewers,
)
from webapp.domain.taxonomy import EVENT_TYPES, MatchOutcomeMetadata
from webapp.domain.timeline import TimelineFilters, feed_page
from webapp.extensions import db
from webapp.models.activity import ORIGINS
from webapp.transaction import unit_of_work
from webapp.web.admin.base import ALL_ROLES, UNREDACTED_ROLES, SecureView
from webapp.web.auth import current_actor, roles_required
from webapp.web.partials import render_page_or_block

AUDIT_ACTION = "player.view_unredacted"
GRANT_LIFETIME = timedelta(minutes=15)
# Grants live in the signed session cookie, which must stay small.
MAX_GRANTS = 8
MAX_REASON_LENGTH = 500

REDACTED_SEARCH_FIELDS = ("public_id", "display_name")
SEARCH_PAGE_SIZE = 20
TIMELINE_PAGE_SIZE = 25
PREVIEW_PAGE_SIZE = 15
# The event types that name opponents: where the preview finds an opponent to look through.
MATCH_TYPES = tuple(
    name for name, kind in EVENT_TYPES.items() if kind.metadata_model is MatchOutcomeMetadata
)

_GRANTS_KEY = "player_grants"
# Digits that fit a BIGINT column, so a long one is a bad request rather than a database error.
_TOURNAMENT_ID = re.compile(r"[0-9]{1,18}")


class RevealForm(FlaskForm):
    reason = StringField(
        "Reason",
        validators=[
            DataRequired(
                message="Give a reason: what you are working on, or a dispute or request reference."
            ),
            Length(max=MAX_REASON_LENGTH),
        ],
    )


# Stands for the public id in a player page's URL built once per request.
_PUBLIC_ID_SLOT = "public-id-slot"


def player_page_url(public_id: str, **query: Any) -> str:
    """Return ``url_for("players.player", public_id=public_id, **query)``, the route built once per request.

    A timeline page links each of its rows' opponents and tournaments to a
    player page; werkzeug building every one of them afresh took a tenth of
    the page. The public id is quoted into the path as url_for would quote it.
    """
    base = g.get("player_page_url")
    if base is None:
        base = g.player_page_url = url_for("players.player", public_id=_PUBLIC_ID_SLOT)
    url = base.replace(_PUBLIC_ID_SLOT, quote(public_id, safe=""))
    return f"{url}?{urlencode(query)}" if query else url


@dataclass(frozen=True)
class Grant:
    """Full view of one player, given to this session for a reason until a time."""

    reason: str
    until: datetime


class PlayersView(SecureView):
    """Find a player, read their profile, stats and timeline, preview their feed."""

    allowed_roles = ALL_ROLES

    @expose("/")
    def index(self):
        query = request.args.get("q", "")
        fields = SEARCH_FIELDS if _may_reveal() else REDACTED_SEARCH_FIELDS
        results = players_domain.search_players(
            db.session(),
            query,
            fields=fields,
            cursor=request.args.get("cursor") or None,
            limit=SEARCH_PAGE_SIZE,
        )
        return render_page_or_block(
            "admin/players/search.html",
            "results",
            render=self.render,
            query=query.strip(),
            results=results,
            search_fields=fields,
        )

    @expose("/<public_id>")
    def player(self, public_id: str):
        """The player page; with htmx, only the timeline (the filters form asks for it).

        With ``include_archived=1`` the timeline ends with the player's archived
        events, read from cold storage for this request only.
        """
        archived = request.args.get("include_archived") == "1"
        return self._player_page(
            public_id, block="timeline", audit_view="page", include_archived=archived
        )

    @expose("/<public_id>/timeline")
    def timeline(self, public_id: str):
        """The next page of the timeline; with htmx, only its rows and a new "load more"."""
        return self._player_page(public_id, block="timeline_page", audit_view="timeline")

    @expose("/<public_id>/reveal", methods=("POST",))
    @roles_required(*UNREDACTED_ROLES)
    def reveal(self, public_id: str):
        profile = players_domain.player_profile(db.session(), public_id)
        form = RevealForm()
        if not form.validate_on_submit():
            context = self._player_context(profile, Viewer.staff_redacted(), None, reveal_form=form)
            return self.render("admin/players/player.html", **context), 400
        reason = form.reason.data.strip()
        if _names_the_player(reason, profile.player):
            # The reason goes into the append-only audit trail, which an erasure
            # cannot rewrite: it must never hold the player's identifiers.
            form.reason.errors = [
                "Leave the player's username, email and public id out of the reason: it is kept "
                "in the audit trail for good. Refer to a dispute or GDPR request instead."
            ]
            context = self._player_context(profile, Viewer.staff_redacted(), None, reveal_form=form)
            return self.render("admin/players/player.html", **context), 400
        player_id, player_public_id = profile.player.id, profile.player.public_id
        until = _now() + _grant_lifetime()
        _audit_unredacted(player_id, reason, "grant", granted_until=until.isoformat())
        _store_grant(player_id, Grant(reason, until))
        flash(f"Full data of {player_public_id} is shown to you until {until:%H:%M} UTC.", "info")
        return redirect(url_for(".player", public_id=player_public_id))

    @expose("/<public_id>/preview")
    def preview(self, public_id: str):
        """The player's feed as the public, an opponent and the owner would see it."""
        session_ = db.session()
        profile = players_domain.player_profile(session_, public_id)
        player_id = profile.player.id
        grant = _active_grant(player_id)
        if grant is not None:
            _audit_unredacted(player_id, grant.reason, "preview")
        opponents = _recent_opponents(profile.player)
        chosen = request.args.get("opponent", "").strip()
        if chosen:
            found = players_domain.player_profile(session_, chosen).player
            opponent = {"id": found.id, "public_id": found.public_id}
        else:
            opponent = opponents[0] if opponents else None
        if opponent is None:
            viewers = {
                "public": Viewer.public(),
                "opponent": None,
                "owner": Viewer.owner(player_id),
            }
        else:
            viewers = preview_viewers(player_id, opponent["id"])
        columns = [
            _preview_column(label, viewer, profile, grant) for label, viewer in viewers.items()
        ]
        return self.render(
            "admin/players/preview.html",
            subject=_subject(profile.player),
            columns=columns,
            opponents=opponents,
            opponent=opponent,
            grant=grant,
            may_reveal=_may_reveal(),
            reveal_form=RevealForm(),
            grant_minutes=_grant_minutes(),
        )

    def _player_page(
        self, public_id: str, *, block: str, audit_view: str, include_archived: bool = False
    ):
        profile = players_domain.player_profile(db.session(), public_id)
        filters, filter_args = _filters_from(request.args)
        grant = _active_grant(profile.player.id)
        if grant is None:
            viewer = Viewer.staff_redacted()
        else:
            viewer = Viewer.staff_full(grant.reason)
            details = {"include_archived": True} if include_archived else {}
            _audit_unredacted(profile.player.id, grant.reason, audit_view, **details)
        context = self._player_context(
            profile,
            viewer,
            grant,
            filters=filters,
            filter_args=filter_args,
            cursor=request.args.get("cursor") or None,
        )
        context["include_archived"] = include_archived
        if include_archived:
            context["archived"], context["archive_error"] = _archived(
                profile.player, viewer, filters
            )
        return render_page_or_block(
            "admin/players/player.html", block, render=self.render, **context
        )

    def _player_context(
        self,
        profile,
        viewer: Viewer,
        grant: Grant | None,
        *,
        filters: TimelineFilters | None = None,
        filter_args: dict | None = None,
        cursor: str | None = None,
        reveal_form: RevealForm | None = None,
    ) -> dict:
        player = profile.player
        page = feed_page(
            db.session(), player, viewer, filters=filters, cursor=cursor, limit=TIMELINE_PAGE_SIZE
        )
        return {
            "subject": _subject(player),
            "profile": present_player(player, viewer),
            "stats": present_stats(
                profile.stats_all, profile.stats_public, viewer, player_id=player.id
            ),
            "full": viewer.sees_everything_of(player.id),
            "grant": grant,
            "may_reveal": _may_reveal(),
            "reveal_form": reveal_form or RevealForm(),
            "grant_minutes": _grant_minutes(),
            "page": page,
            "filter_args": filter_args or {},
            "continued": cursor is not None,
            "event_types": tuple(EVENT_TYPES),
            "origins": ORIGINS,
        }


def _preview_column(
    label: str, viewer: Viewer | None, profile, grant: Grant | None
) -> dict[str, Any]:
    """One column of the preview: what ``viewer`` sees, or why the column is empty."""
    column: dict[str, Any] = {"label": label, "state": "shown"}
    if viewer is None:
        column["state"] = "no_opponent"
    elif viewer.sees_everything_of(profile.player.id) and grant is None:
        # The owner's view is the player's full data: the same reason as the full page.
        column["state"] = "needs_reason"
    else:
        player = profile.player
        column["player"] = present_player(player, viewer)
        column["stats"] = present_stats(
            profile.stats_all, profile.stats_public, viewer, player_id=player.id
        )
        try:
            column["feed"] = feed_page(db.session(), player, viewer, limit=PREVIEW_PAGE_SIZE)
        except Forbidden:
            column["state"] = "feed_private"
    return column


def _archived(player, viewer: Viewer, filters: TimelineFilters) -> tuple[ColdFeed | None, str]:
    """The player's archived events for the page, or why cold storage could not be read."""
    storage = ArchiveStorage(current_app.config["ARCHIVE_URL"])
    try:
        return archived_feed(db.session(), player, viewer, storage=storage, filters=filters), ""
    except ArchiveVerificationFailed as error:
        # The hot timeline above is still right: say what failed rather than lose the page.
        return None, str(error)


def _names_the_player(text: str, player) -> bool:
    """Whether ``text`` holds the player's username, email or public id as a word, in any case.

    The values a GDPR erasure's verification searches the whole database for
    (``webapp.domain.erasure``).
    """
    return any(
        re.search(rf"(?<!\w){re.escape(value)}(?!\w)", text, re.IGNORECASE)
        for value in (player.username, player.email, player.public_id) if value
    )


def _subject(player) -> dict[str, str]:
    """What every staff member sees of the player a page is about (see the module docstring)."""
    return {"public_id": player.public_id, "display_name": player.display_name}


def _may_reveal() -> bool:
    return current_user.has_any_role(UNREDACTED_ROLES)


def _now() -> datetime:
    return datetime.now(UTC)


def _grant_lifetime() -> timedelta:
    return current_app.config.get("UNREDACTED_GRANT_LIFETIME", GRANT_LIFETIME)


def _grant_minutes() -> int:
    return int(_grant_lifetime().total_seconds() // 60)


def _active_grant(player_id: int) -> Grant | None:
    """Return this session's current grant for ``player_id``, if the role still allows one."""
    if not _may_reveal():
        return None
    stored = session.get(_GRANTS_KEY, {}).get(str(player_id))
    if not stored:
        return None
    until = datetime.fromtimestamp(stored["until"], UTC)
    if until <= _now():
        return None
    return Grant(stored["reason"], until)


def _store_grant(player_id: int, grant: Grant) -> None:
    now = _now().timestamp()
    grants = {
        key: value for key, value in session.get(_GRANTS_KEY, {}).items() if value["until"] > now
    }
    grants[str(player_id)] = {"reason": grant.reason, "until": grant.until.timestamp()}
    # Keep the newest: drop an old grant rather than outgrow the browser's cookie limit.
    newest = sorted(grants.items(), key=lambda item: item[1]["until"])[-MAX_GRANTS:]
    session[_GRANTS_KEY] = dict(newest)


def _audit_unredacted(player_id: int, reason: str, view: str, **details: Any) -> None:
    """Write the unredacted view to the audit trail, in a transaction of its own."""
    with unit_of_work(db.session()):
        record_audit(
            db.session(),
            current_actor(),
            AUDIT_ACTION,
            target_type="player",
            target_id=player_id,
            reason=reason,
            view=view,
            **details,
        )


def _filters_from(args) -> tuple[TimelineFilters, dict[str, Any]]:
    """Read the timeline filters from the query string; return them and the args that repeat them.

    Dates are whole UTC days and both ends are included, as a person reads a
    range; the domain's upper bound is exclusive, so ``to`` becomes the next midnight.

    :raise Invalid: on an unknown type or origin, a malformed date or tournament id.
    """
    types = tuple(value for value in args.getlist("type") if value)
    origins = tuple(value for value in args.getlist("origin") if value)
    start, end = _day(args.get("from"), "from"), _day(args.get("to"), "to")
    tournament = (args.get("tournament") or "").strip()
    if tournament and not _TOURNAMENT_ID.fullmatch(tournament):
        raise Invalid(f"the tournament filter takes a tournament id, not {tournament!r}")
    filters = TimelineFilters(
        event_types=types,
        origins=origins,
        occurred_from=datetime.combine(start, time(), UTC) if start else None,
        occurred_to=(
            datetime.combine(end + timedelta(days=1), time(), UTC)
            if end and end < date.max
            else None
        ),
        tournament_id=int(tournament) if tournament else None,
    )
    repeated: dict[str, Any] = {"type": list(types), "origin": list(origins)}
    if start:
        repeated["from"] = start.isoformat()
    if end:
        repeated["to"] = end.isoformat()
    if tournament:
        repeated["tournament"] = tournament
    return filters, repeated


def _day(value: str | None, name: str) -> date | None:
    value = (value or "").strip()
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise Invalid(f"{name!r} must be a date like 2026-03-02, not {value!r}") from None


def _recent_opponents(player) -> list[dict[str, Any]]:
    """Opponents in the player's recent matches, newest first, as a redacted viewer knows them."""
    recent = feed_page(
        db.session(),
        player,
        Viewer.staff_redacted(),
        filters=TimelineFilters(event_types=MATCH_TYPES),
        limit=50,
    )
    seen: dict[int, dict[str, Any]] = {}
    for item in recent.items:
        for opponent in item["opponents"]:
            if opponent.get("public_id") and opponent["id"] not in seen:
                seen[opponent["id"]] = {"id": opponent["id"], "public_id": opponent["public_id"]}
    return list(seen.values())
