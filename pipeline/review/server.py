"""The review server: the standard library's ThreadingHTTPServer on 127.0.0.1 only.

Security, route by route: every request must carry the session's token (``?token=`` in the URL
the command prints, or the ``X-Review-Token`` header the page's script sends), compared in
constant time; the Host header must name the loopback address (no DNS rebinding). Routes are a
fixed table matched exactly (a page, two assets, a JSON API, images by row number), so no
request path ever becomes a file path: ``..``, encoded or not, is a 404. The page builds its DOM
with textContent from JSON (never innerHTML, never eval), and the Content-Security-Policy lets
it run only the server's own script.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .assets import APP_CSS, APP_JS, page_html
from .service import FILTERS, RequestError, ReviewSession

HOST = "127.0.0.1"
MAX_BODY = 16 << 20  # a bulk request naming 20,000 row ids is well under 1 MiB
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
IMAGE_ROUTE = re.compile(r"^/img/(out|src)/([0-9]{1,9})$")


class ReviewServer:
    """A running review server (``start_review_server`` makes one); ``close()`` stops it."""

    def __init__(self, session: ReviewSession, port: int = 0, token: str | None = None) -> None:
        self.session = session
        self.token = token or secrets.token_urlsafe(32)
        self.httpd = ThreadingHTTPServer((HOST, port), _handler_for(self))
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/?token={self.token}"

    def token_ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def start(self) -> ReviewServer:
        """Serve in a background thread (tests, embedding)."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join()
        self.httpd.server_close()


def start_review_server(session: ReviewSession, port: int = 0) -> ReviewServer:
    return ReviewServer(session, port).start()


def _handler_for(server: ReviewServer) -> type[BaseHTTPRequestHandler]:
    class Handler(_ReviewHandler):
        review = server
    return Handler


class _ReviewHandler(BaseHTTPRequestHandler):
    review: ReviewServer
    server_version = "kontext-review"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (BaseHTTPRequestHandler's name)
        pass  # a request line per image is noise on the reviewer's terminal

    # -- plumbing -----------------------------------------------------------------------
    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the browser dropped the request (a reload, the next page): nothing to tell

    def _json(self, status: int, value: Any) -> None:
        self._send(status, json.dumps(value, ensure_ascii=False).encode("utf-8"),
                   "application/json; charset=utf-8")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def _allowed(self) -> tuple[str, dict[str, list[str]]] | None:
        """(path, query) of an authorised request; None after answering a refused one."""
        parts = urlsplit(self.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
        if host not in (HOST, "localhost"):
            self._error(HTTPStatus.FORBIDDEN, "this server answers on 127.0.0.1 only")
            return None
        token = self.headers.get("X-Review-Token") or (query.get("token") or [None])[0]
        if not self.review.token_ok(token):
            self._error(HTTPStatus.FORBIDDEN, "missing or wrong token: open the URL that "
                                              "`kontext-batch review` printed")
            return None
        return parts.path, query

    # -- routes -------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        allowed = self._allowed()
        if allowed is None:
            return
        path, query = allowed
        session = self.review.session
        try:
            if path == "/":
                self._send(200, page_html(session.target.run_id, self.review.token).encode("utf-8"),
                           "text/html; charset=utf-8")
            elif path == "/app.js":
                self._send(200, APP_JS.encode("utf-8"), "text/javascript; charset=utf-8")
            elif path == "/app.css":
                self._send(200, APP_CSS.encode("utf-8"), "text/css; charset=utf-8")
            elif path == "/api/meta":
                self._json(200, session.meta())
            elif path == "/api/rows":
                self._rows(query)
            elif (match := IMAGE_ROUTE.match(path)) is not None:
                self._image(match.group(1), int(match.group(2)))
            else:
                self._error(HTTPStatus.NOT_FOUND, f"no such page {path!r}")
        except RequestError as exc:
            self._error(HTTPStatus.BAD_REQUEST, str(exc))

    do_HEAD = do_GET

    def _rows(self, query: dict[str, list[str]]) -> None:
        filters = {name: query[name][0] for name in FILTERS if name in query}
        try:
            offset = int((query.get("offset") or ["0"])[0])
            limit = int((query.get("limit") or ["100"])[0])
        except ValueError:
            raise RequestError("offset and limit must be whole numbers") from None
        self._json(200, self.review.session.query(filters, offset, limit))

    def _image(self, kind: str, index: int) -> None:
        session = self.review.session
        try:
            data, content_type = (session.output_image(index) if kind == "out"
                                  else session.source_image(index))
        except LookupError:
            self._error(HTTPStatus.NOT_FOUND, f"row {index} has no {kind} image to show")
            return
        self._send(200, data, content_type)

    def do_POST(self) -> None:  # noqa: N802
        allowed = self._allowed()
        if allowed is None:
            return
        path, _ = allowed
        if path != "/api/decisions":
            self._error(HTTPStatus.NOT_FOUND, f"no such endpoint {path!r}")
            return
        body = self._body()
        if body is None:
            return
        try:
            result = self.review.session.decide(
                body.get("decision"), note=body.get("note") or "", row_ids=body.get("rows"),
                filters=body.get("filter"))
        except RequestError as exc:
            self._error(HTTPStatus.BAD_REQUEST, str(exc))
            return
        except OSError as exc:  # the log could not be written: say so, the page keeps its state
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"decision not recorded: cannot write "
                        f"{self.review.session.log.path} ({exc.strerror or exc})")
            return
        self._json(200, result)

    def _body(self) -> dict[str, Any] | None:
        if (self.headers.get("Content-Type") or "").split(";")[0].strip() != "application/json":
            self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the decision as application/json")
            return None
        try:
            length = int(self.headers.get("Content-Length") or "")
        except ValueError:
            self._error(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required")
            return None
        if not 0 < length <= MAX_BODY:
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"a request body is 1..{MAX_BODY} bytes")
            return None
        try:
            body = json.loads(self.rfile.read(length))
        except (ValueError, UnicodeDecodeError):
            self._error(HTTPStatus.BAD_REQUEST, "the body is not valid JSON")
            return None
        if not isinstance(body, dict) or not isinstance(body.get("decision"), str):
            self._error(HTTPStatus.BAD_REQUEST, 'the body must be a JSON object with "decision" '
                                                'and either "rows" or "filter"')
            return None
        if body.get("filter") is not None and not isinstance(body["filter"], dict):
            self._error(HTTPStatus.BAD_REQUEST, '"filter" must be an object')
            return None
        return body


def serve(session: ReviewSession, port: int = 0) -> int:
    """Serve until Ctrl-C, printing the URL first (the command's body)."""
    server = ReviewServer(session, port)
    print(f"review page for run {session.target.run_id} (reviewer {session.reviewer}):\n"
          f"  {server.url}\ndecisions go to {session.log.path}; Ctrl-C stops the server",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("review server stopped", file=sys.stderr)
    finally:
        server.httpd.server_close()
    return 0
