"""The JSON API the platform calls: player feeds and stats, and live results.

Authentication
    Every request carries ``Authorization: Bearer <token>`` with a token that
    an admin created on the dashboard. A missing, malformed, unknown or
    revoked token gets 401 with ``WWW-Authenticate: Bearer``; a token without
    the endpoint's scope (``read`` for feeds and stats, ``write`` for results)
    gets 403. No cookie is read or set, so the API is exempt from CSRF.

The viewing player
    The platform passes who is looking as ``?viewer=<public id>``; without it
    (or with it empty) the visitor is anonymous. The visibility policy is
    ``webapp.domain.privacy``: a feed is visible to its owner, and to everyone
    else only when the owner made it public; others see opponents by public
    id and private tournaments as "[Private Tournament]".

    A feed the viewer may not see answers 403 ``{"error": "this player's feed
    is private"}``, the same whether it holds events or not; an unknown player
    answers 404. Stats are shown to anyone: the owner gets both scopes
    (``all`` and ``public``), everyone else only ``public``, which leaves out
    private tournaments.

Paging
    A feed page holds up to 50 events, newest first; ``next_cursor`` is
    passed back as ``?cursor=`` for the next page and is null on the last.

Live results
    ``POST /api/results/matches`` and ``POST /api/results/tournaments`` take
    the JSON of ``MatchReport`` and ``TournamentReport``
    (``webapp.domain.live_results``). A tournament is named by the platform's
    reference (``tournament_ref``, our ``Tournament.external_ref``) and must
    already be stored; a match is created by its first report, under its
    ``match_ref``. A new result answers 201 ``{"status": "recorded", ...}``,
    the same report again 200 ``{"status": "duplicate", ...}``.

Disputes
    ``POST /api/matches/<match_ref>/disputes`` (``write`` scope) takes
    ``{"reporter": ..., "reason": ...}`` and marks the played match disputed,
    opening a case for trust and safety, or adds the report to the case
    already open: 201 ``{"status": "opened" | "added", "dispute_id", ...}``.
    An unknown match is 404; a match not played yet, or a missing reason, 422.

Errors
    Always JSON: ``{"error": message, "field": path or null}``. A body that is
    not JSON is 400 (415 if not sent as JSON, 413 if too large); a body that
    is JSON but breaks the schema or a rule is 422, with ``field`` naming the
    first field at fault (``side_a.player``) and ``errors`` listing every one;
    a report that contradicts a decided result is 409. A refused report
    writes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Blueprint, Flask, g, jsonify, request
from flask.sessions import SecureCookieSessionInterface
from pydantic import BaseModel, ValidationError
from sqlalchemy import bindparam, or_, select
from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException

from webapp.domain.api_tokens import (
    TokenGrant,
    authenticate_token,
    note_token_use,
    use_is_due,
)
from webapp.domain.audit import Actor
from webapp.domain.disputes import PlatformReport, match_by_reference, report_dispute
from webapp.domain.errors import Conflict, DomainError, Forbidden, Invalid, NotFound
from webapp.domain.live_results import (
    InvalidReport,
    MatchReport,
    ReportOutcome,
    ReportStatus,
    TournamentReport,
    report_match,
    report_tournament_result,
)
from webapp.domain.privacy import Viewer, present_player, present_stats
from webapp.domain.timeline import DEFAULT_LIMIT, feed_page
from webapp.extensions import csrf, db
from webapp.models.players import Player
from webapp.models.stats import STAT_NAMES, PlayerStats
from webapp.transaction import DatabaseUnavailable, unit_of_work

log = logging.getLogger(__name__)

bp = Blueprint("api", __name__, url_prefix="/api")
# Tokens, not cookies: a browser cannot be tricked into sending a bearer token.
csrf.exempt(bp)

PAGE_SIZE = DEFAULT_LIMIT
REALM = 'Bearer realm="activity-ops"'
PRIVATE_FEED = "this player's feed is private"
MAX_BODY_BYTES = 256 * 1024


class ApiError(Exception):
    """An error answered as JSON with ``status``."""

    def __init__(
        self,
        status: int,
        message: str,
        field: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        errors: list[dict[str, Any]] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = headers or {}
        self.errors = errors


class _NoSessionForTheApi(SecureCookieSessionInterface):
    """The dashboard's signed session cookie, neither read nor set by API requests.

    The platform calls the API with a token. A request that also carries a
    staff member's cookie (a browser on the same host) must not renew that
    sign-in's idle timeout, nor pay for verifying and signing it again.
    """

    def open_session(self, app: Flask, request):
        if request.path.startswith(bp.url_prefix + "/"):
            return self.null_session_class()
        return super().open_session(app, request)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.session_interface = _NoSessionForTheApi()


def requires_scope(scope: str) -> Callable:
    """Let through only requests with a live token that has ``scope``."""

    def decorator(view):
        @wraps(view)
        def wrapped(*args, **kwargs):
            g.api_grant = _authenticate(scope)
            return view(*args, **kwargs)

        return wrapped

    return decorator


def _authenticate(scope: str) -> TokenGrant:
    header = request.headers.get("Authorization")
    if not header:
        raise ApiError(
            401,
            "an Authorization: Bearer <token> header is required",
            headers={"WWW-Authenticate": REALM},
        )
    scheme, _, credentials = header.partition(" ")
    invalid = {"WWW-Authenticate": f'{REALM}, error="invalid_token"'}
    if scheme.lower() != "bearer" or not credentials.strip():
        raise ApiError(401, "the Authorization header must be: Bearer <token>", headers=invalid)
    grant = authenticate_token(db.session(), credentials.strip())
    if grant is None:
        raise ApiError(401, "the API token is not valid: unknown or revoked", headers=invalid)
    if not grant.allows(scope):
        raise ApiError(
            403,
            f"this token does not have the {scope} scope",
            headers={"WWW-Authenticate": f'{REALM}, error="insufficient_scope", scope="{scope}"'},
        )
    return grant


def _note_use(session: Session) -> None:
    """Note the token's use in the caller's unit of work, at most once a minute."""
    grant: TokenGrant = g.api_grant
    if use_is_due(grant.last_used_at):
        note_token_use(session, grant.token_id)


def _note_use_on_read(session: Session) -> None:
    """Note a read's token use in a transaction of its own; if that fails, the read goes on."""
    if not use_is_due(g.api_grant.last_used_at):
        return
    try:
        with unit_of_work(session):
            _note_use(session)
    except DomainError:
        log.warning("could not note the use of API token %s", g.api_grant.token_id, exc_info=True)


# Reads: the feed's player and the viewer in one statement, then the feed or the stats.

_players = Player.__table__
_PLAYERS = select(
    _players.c.id,
    _players.c.public_id,
    _players.c.username,
    _players.c.display_name,
    _players.c.email,
    _players.c.feed_visibility,
)
_FEED_PLAYER_AND_VIEWER = _PLAYERS.where(
    or_(_players.c.public_id == bindparam("feed"), _players.c.public_id == bindparam("viewer"))
)
_stats = PlayerStats.__table__
_STATS = select(_stats.c.scope, *(_stats.c[name] for name in STAT_NAMES)).where(
    _stats.c.player_id == bindparam("player_id")
)


def _player_and_viewer(session: Session, public_id: str):
    viewer_id = request.args.get("viewer", "").strip() or None
    rows = {
        row.public_id: row
        for row in session.execute(
            _FEED_PLAYER_AND_VIEWER, {"feed": public_id, "viewer": viewer_id or public_id}
        )
    }
    player = rows.get(public_id)
    if player is None:
        raise ApiError(404, "no player has this public id", "public_id")
    if viewer_id is None:
        return player, Viewer.public()
    viewing = rows.get(viewer_id)
    if viewing is None:
        raise ApiError(400, "no player has the viewer's public id", "viewer")
    return player, Viewer.platform(viewing.id, player.id)


@bp.get("/players/<public_id>/activity")
@requires_scope("read")
def player_activity(public_id: str):
    session = db.session()
    _note_use_on_read(session)
    player, viewer = _player_and_viewer(session, public_id)
    try:
        page = feed_page(
            session, player, viewer, cursor=request.args.get("cursor") or None, limit=PAGE_SIZE
        )
    except Forbidden:
        raise ApiError(403, PRIVATE_FEED) from None
    except Invalid as error:  # the cursor is the only input feed_page can refuse here
        raise ApiError(400, str(error), "cursor") from None
    return jsonify(
        player=present_player(player, viewer), items=page.items, next_cursor=page.next_cursor
    )


@bp.get("/players/<public_id>/stats")
@requires_scope("read")
def player_stats(public_id: str):
    session = db.session()
    _note_use_on_read(session)
    player, viewer = _player_and_viewer(session, public_id)
    scopes = {row.scope: row._mapping for row in session.execute(_STATS, {"player_id": player.id})}
    stats = present_stats(scopes.get("all"), scopes.get("public"), viewer, player_id=player.id)
    return jsonify(player=present_player(player, viewer), stats=stats)


# Writes: live results, through the result services, in one unit of work each.


def _report(model: type[BaseModel]):
    """Return the request body parsed as ``model``, or raise 400/415/422 naming the field."""
    if not request.is_json:
        raise ApiError(415, "send the report as JSON (Content-Type: application/json)")
    # Werkzeug refuses a longer body with 413 before reading it, chunked or not.
    request.max_content_length = MAX_BODY_BYTES
    body = request.get_data(cache=False)
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        problems = error.errors(include_url=False, include_input=False, include_context=False)
        if any(problem["type"] == "json_invalid" for problem in problems):
            raise ApiError(400, "the body is not valid JSON") from None
        errors = [
            {"field": ".".join(map(str, problem["loc"])) or None, "message": problem["msg"]}
            for problem in problems
        ]
        first = errors[0]
        message = first["message"] if first["field"] else "the body must be a JSON object"
        raise ApiError(422, message, first["field"], errors=errors) from None


def _recorded(outcome: ReportOutcome) -> tuple[Any, int]:
    status = 201 if outcome.status is ReportStatus.RECORDED else 200
    return jsonify(outcome.as_json()), status


@bp.post("/results/matches")
@requires_scope("write")
def post_match_result():
    report = _report(MatchReport)
    session = db.session()
    with unit_of_work(session):
        _note_use(session)
        outcome = report_match(session, report)
    return _recorded(outcome)


@bp.post("/results/tournaments")
@requires_scope("write")
def post_tournament_result():
    report = _report(TournamentReport)
    session = db.session()
    with unit_of_work(session):
        _note_use(session)
        outcome = report_tournament_result(session, report)
    return _recorded(outcome)


@bp.post("/matches/<match_ref>/disputes")
@requires_scope("write")
def post_match_dispute(match_ref: str):
    """A player disputes a match: the case opens (201, ``opened``) or the report joins it (201, ``added``)."""
    report = _report(PlatformReport)
    session = db.session()
    with unit_of_work(session):
        _note_use(session)
        match = match_by_reference(session, match_ref)
        outcome = report_dispute(session, Actor(None, request.remote_addr), match.id, report.reason,
                                 reporter=report.reporter, source="platform")
        body = {
            "status": "opened" if outcome.opened else "added",
            "dispute_id": outcome.dispute.id,
            "report_id": outcome.report.id,
            "match_ref": match.external_ref,
            "match_state": match.state,
        }
    return jsonify(body), 201


# Errors: JSON, never the dashboard's pages.


def _error_response(
    status: int,
    message: str,
    field: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    errors: list | None = None,
):
    body: dict[str, Any] = {"error": message, "field": field}
    if errors is not None:
        body["errors"] = errors
    response = jsonify(body)
    response.status_code = status
    response.headers.update(headers or {})
    return response


@bp.errorhandler(ApiError)
def _api_error(error: ApiError):
    return _error_response(
        error.status, error.message, error.field, headers=error.headers, errors=error.errors
    )


@bp.errorhandler(DomainError)
def _domain_error(error: DomainError):
    if isinstance(error, InvalidReport):
        return _error_response(422, str(error), error.field)
    for kind, status in (
        (Invalid, 422),
        (NotFound, 404),
        (Conflict, 409),
        (Forbidden, 403),
        (DatabaseUnavailable, 503),
    ):
        if isinstance(error, kind):
            return _error_response(status, str(error))
    return _error_response(500, "the request could not be completed")


@bp.errorhandler(HTTPException)
def _http_error(error: HTTPException):
    return _error_response(error.code or 500, error.description or error.name)


@bp.after_request
def _not_cached(response):
    # Feeds differ by viewer and token: no cache may keep or share them.
    response.headers["Cache-Control"] = "no-store"
    return response
