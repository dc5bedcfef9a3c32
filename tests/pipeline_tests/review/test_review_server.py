"""The review server: loopback only, token required (constant-time compare), fixed routes (no
path traversal), JSON API only, markup in manifest text never served as markup."""

from __future__ import annotations

import socket

import pytest
from review_helpers import SCRIPT, call, decision_lines, session, synthetic

from pipeline.review.server import ReviewServer, start_review_server


@pytest.fixture
def served(tmp_path):
    run = synthetic(tmp_path / "out", instructions={0: SCRIPT})
    server = start_review_server(session(run, reviewer="alice"))
    yield server, run
    server.close()


def test_binds_loopback_only_on_a_random_port(served):
    server, _ = served
    assert server.httpd.server_address[0] == "127.0.0.1"
    assert server.port > 0 and server.url == f"http://127.0.0.1:{server.port}/?token={server.token}"
    other = ReviewServer(server.session)
    try:
        assert other.port != server.port and other.token != server.token
    finally:
        other.httpd.server_close()
    addresses = {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    for address in addresses - {"127.0.0.1"}:  # not reachable on the machine's other addresses
        with pytest.raises(OSError):
            socket.create_connection((address, server.port), timeout=2).close()


@pytest.mark.parametrize("path", ["/", "/app.js", "/api/meta", "/api/rows", "/img/out/0"])
def test_every_route_needs_the_token(served, path):
    server, _ = served
    assert call(server.port, path)[0] == 403
    wrong = ("y" if server.token[0] == "x" else "x") + server.token[1:]  # one character off, never the token
    assert call(server.port, path, token=wrong)[0] == 403
    status, body, _ = call(server.port, path + ("&" if "?" in path else "?") + "token=" + server.token)
    assert status == 200


def test_posting_without_the_token_writes_nothing(served, tmp_path):
    server, _ = served
    status, body, _ = call(server.port, "/api/decisions", body={"decision": "approve", "rows": ["p0-v0"]})
    assert status == 403 and "token" in body["error"]
    assert not (tmp_path / "out" / "decisions.jsonl").exists()


@pytest.mark.parametrize("path", [
    "/../config.json", "/img/out/../../runs/run-synthetic/config.json", "/img/out/%2e%2e/x",
    "/app.js/../../etc/passwd", "/img/out/-1", "/img/out/0x1", "//etc/passwd", "/img/src/99",
    "/static/review.css", "/%2e%2e/%2e%2e/etc/passwd",
])
def test_path_traversal_and_unknown_routes_are_404(served, path):
    server, _ = served
    status, body, _ = call(server.port, path, token=server.token)
    assert status == 404 and "error" in body


def test_a_foreign_host_header_is_refused(served):
    server, _ = served
    status, body, _ = call(server.port, "/api/meta", token=server.token,
                           headers={"Host": f"evil.example:{server.port}"})
    assert status == 403 and "127.0.0.1 only" in body["error"]


def test_manifest_markup_is_only_ever_json_text(served):
    server, _ = served
    status, page, headers = call(server.port, "/", token=server.token)
    assert status == 200 and b"<script>document" not in page and b"pwned" not in page
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    scripts = page.count(b"<script")
    assert scripts == 1 and b'<script src="/app.js?token=' in page  # no inline script
    status, rows, headers = call(server.port, "/api/rows?limit=1", token=server.token)
    assert headers["Content-Type"].startswith("application/json")
    assert rows["rows"][0]["instruction"] == SCRIPT  # data, for textContent
    _, js, _ = call(server.port, "/app.js", token=server.token)
    assert b"innerHTML" not in js and b"eval(" not in js


def test_bad_posts_are_refused_with_the_reason_and_nothing_written(served, tmp_path):
    server, _ = served
    port, token = server.port, server.token
    cases = [
        ({"decision": "approve", "rows": ["ghost"]}, {}, 400, "unknown row id(s) 'ghost'"),
        ({"decision": "approve", "rows": ["p0-v1"]}, {}, 400, "row p0-v1 has no output to decide on"),
        ({"decision": "ship-it", "rows": ["p0-v0"]}, {}, 400, "decision 'ship-it' is unknown"),
        ({"decision": "approve"}, {}, 400, "give either rows"),
        ({"decision": "approve", "rows": ["p0-v0"]}, {"Content-Type": "text/plain"}, 415, "application/json"),
        (b"{not json", {}, 400, "not valid JSON"),
        ({"decision": "approve", "filter": "P000"}, {}, 400, '"filter" must be an object'),
    ]
    for body, headers, want_status, want_text in cases:
        status, answer, _ = call(port, "/api/decisions", token=token, body=body, headers=headers)
        assert (status, want_text in answer["error"]) == (want_status, True), answer
    assert not (tmp_path / "out" / "decisions.jsonl").exists()
    status, answer, _ = call(port, "/api/decisions", token=token,
                             body={"decision": "reject", "note": "crop", "rows": ["p0-v0"]})
    assert status == 200 and answer["recorded"] == 1
    assert decision_lines(tmp_path / "out")[0]["note"] == "crop"


def test_rows_are_paged_and_filtered_and_images_served(served):
    server, run = served
    port, token = server.port, server.token
    status, page, _ = call(port, "/api/rows?offset=10&limit=5", token=token)
    assert status == 200 and page["total"] == 12 and [r["row_id"] for r in page["rows"]] == ["p2-v2", "p2-v3"]
    _, failed, _ = call(port, "/api/rows?status=failed", token=token)
    assert [r["row_id"] for r in failed["rows"]] == ["p0-v1"] and not failed["rows"][0]["reviewable"]
    assert call(port, "/api/rows?limit=100000", token=token)[0] == 400
    status, data, headers = call(port, "/img/out/0", token=token)
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert data == open(run.rows[0]["output_uri"], "rb").read()
    status, data, headers = call(port, "/img/src/0", token=token)
    assert status == 200 and data[:8] == b"\x89PNG\r\n\x1a\n"
    assert call(port, "/img/out/1", token=token)[0] == 404  # the failed row has no output
