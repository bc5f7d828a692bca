"""Requests no API route answers still get the API's JSON errors, never the dashboard's pages."""

from __future__ import annotations

import pytest


def assert_api_error(response, status: int) -> dict:
    assert response.status_code == status
    assert response.mimetype == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert set(body) == {"error", "field"}
    assert body["field"] is None
    return body


@pytest.mark.parametrize("url", ["/api/nothing-here", "/api/players", "/api/results/matches/7"])
def test_an_unknown_api_url_is_a_json_404(client, url):
    body = assert_api_error(client.get(url), 404)
    assert body["error"] == f"there is no API endpoint at {url}"


def test_a_wrong_method_on_an_api_url_is_a_json_405_naming_the_allowed_ones(client):
    response = client.get("/api/results/matches")
    body = assert_api_error(response, 405)
    assert body["error"] == "GET is not allowed on /api/results/matches; use OPTIONS, POST"
    assert response.headers["Allow"] == "OPTIONS, POST"
    assert assert_api_error(client.delete("/api/players/P-1/stats"), 405)["error"].startswith(
        "DELETE is not allowed"
    )


@pytest.mark.parametrize("url", ["/nothing-here", "/apiary", "/admin/nothing-here"])
def test_an_unknown_url_outside_the_api_keeps_the_html_page(client, url):
    response = client.get(url)
    assert response.status_code == 404
    assert response.mimetype == "text/html"
    assert "There is nothing here." in response.get_data(as_text=True)
