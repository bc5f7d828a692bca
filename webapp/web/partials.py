"""Render a page, or only the named block of it that an htmx request asks for."""

from __future__ import annotations

from collections.abc import Callable

from flask import Response, current_app, render_template, request
from jinja2_fragments.flask import render_block


def render_page_or_block(
    template: str,
    block: str,
    *,
    render: Callable[..., str] = render_template,
    status: int = 200,
    **context,
) -> Response:
    """Render the whole page with ``render``, or only ``block`` of it for an htmx request.

    A history restore asks for the whole page even though htmx sends it, and
    the response varies on ``HX-Request`` so no cache hands one for the other.
    """
    if request.headers.get("HX-Request") and not request.headers.get("HX-History-Restore-Request"):
        body = render_block(template, block, **context)
    else:
        body = render(template, **context)
    response = current_app.make_response((body, status))
    response.vary.add("HX-Request")
    return response
