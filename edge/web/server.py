"""The live view's Flask app and its HTTP server (the optional ``web`` extra: ``pip install '.[web]'``).

Contract for blueprints (the labelling pages, ``edge.web.labelling.make_blueprint(store)``,
mounted under ``/labels``), and for every page of this app:

- ``create_app(hub, controls, auth, blueprints=())`` registers each extra blueprint as it is
  (a run passes them through ``edge.app.live.start_live_view(..., blueprints=...)``).
  Their templates and static files are their own, with names prefixed ``labels``.
- **Authentication** is enforced on EVERY route, blueprints and static files included, in one
  ``before_request``: with a token (``[web] token`` / ``token_file``; required for a non-local
  bind) a request needs the session cookie set by ``/login`` (an MJPEG ``<img>`` cannot send
  headers) or ``Authorization: Bearer <token>``; otherwise it gets 401 (an HTML page: the login
  form). Only ``/login`` itself is reachable without it. Wrong tokens (a login form or a Bearer
  header) are counted per client address: after ``LOGIN_FAILURES`` within ``LOGIN_WINDOW_S`` that
  address gets 429 with ``Retry-After`` on every token check until the oldest failure is that old
  (a browser already logged in keeps its cookie and is not affected).
- **CSRF** is enforced app-wide on every request whose method is not GET or HEAD (OPTIONS
  included): the token is in ``<meta name="csrf-token" content="...">`` on every page
  (the Jinja context processor ``csrf_token`` gives it: write
  ``<meta name="csrf-token" content="{{ csrf_token }}">`` in a blueprint's page head) and
  must come back as the header ``X-CSRF-Token`` or the form field ``csrf_token``; otherwise
  403. The token is an HMAC of a per-browser random cookie (``wd_csrf``, SameSite=Strict) under a
  per-process secret: another site can neither read nor compute it.
- Everything a page shows from outside (labels, file names) goes through Jinja's autoescape
  (or ``textContent`` in the page's script): never ``|safe``, never ``innerHTML``.
- GET handlers change nothing; every page asset is served from this package (no CDN).
- **Refusals are JSON** ``{"ok": false, "error": ..., "fix": ...}``, werkzeug's own included (no route:
  404, a method the route does not take: 405, a body over 64 KB: 413): a blueprint raises its own
  errors, the app answers the requests no route takes.
- Responses carry ``Content-Security-Policy: default-src 'self'`` (no inline script or style),
  ``X-Frame-Options: DENY`` and ``Cache-Control: no-store``.

The token travels over plain HTTP unless the page is put behind TLS (docs/live-view.md).
``WebServer`` runs the app in werkzeug's threaded server, in a thread; ``close()`` shuts it down.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import hmac
import logging
import secrets
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Callable, Iterable

from flask import Blueprint, Flask, Response, g, jsonify, redirect, render_template, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound, RequestEntityTooLarge
from werkzeug.serving import make_server

from edge.core.clock import SYSTEM_CLOCK, Clock
from edge.core.errors import ConfigError, WeedDetectorError
from edge.core.text import one_line
from edge.web.hub import BOUNDARY, LiveHub

log = logging.getLogger(__name__)

SESSION_COOKIE = "wd_session"
CSRF_COOKIE = "wd_csrf"
SAFE_METHODS = ("GET", "HEAD")
OPEN_ENDPOINTS = ("login",)  # reachable without the token (still CSRF-checked when posted)
LOGIN_FAILURES = 5  # wrong tokens from one address ...
LOGIN_WINDOW_S = 60.0  # ... within this long, then that address waits (429)
LOGIN_ADDRESSES = 1024  # addresses remembered at most (the oldest forgotten first)
MAX_BODY_BYTES = 64 * 1024  # every request body: the API takes small JSON objects and login forms


class LoginLimiter:
    """Wrong tokens per client address on a monotonic ``clock``: ``wait_s(address)`` is 0 while fewer than
    ``failures`` fell within the last ``window_s``, otherwise the seconds until the oldest of them is that old.
    Thread-safe (werkzeug serves each request in its own thread); remembers at most ``addresses`` addresses."""

    def __init__(self, failures: int = LOGIN_FAILURES, window_s: float = LOGIN_WINDOW_S, clock: Clock = SYSTEM_CLOCK,
                 addresses: int = LOGIN_ADDRESSES):
        self.failures, self.window_ns, self.clock, self.addresses = failures, int(window_s * 1e9), clock, addresses
        self._failed: OrderedDict[str, deque[int]] = OrderedDict()
        self._said: OrderedDict[str, int] = OrderedDict()  # address -> end of the lock-out last logged
        self._lock = threading.Lock()

    def _recent(self, address: str, now: int) -> deque[int]:
        times = self._failed.get(address, deque())
        while times and now - times[0] >= self.window_ns:
            times.popleft()
        return times

    def wait_s(self, address: str) -> float:
        with self._lock:
            now = self.clock.now_ns()
            times = self._recent(address, now)
            if len(times) < self.failures:
                return 0.0
            return (times[-self.failures] + self.window_ns - now) / 1e9

    def first_refusal(self, address: str, wait_s: float) -> bool:
        """Whether a refusal of ``address`` (locked out for ``wait_s`` more) is the first of its lock-out: logged
        once, not once per request (300 wrong Bearer requests were 300 log lines and pushed the page's last
        events out)."""
        with self._lock:
            now = self.clock.now_ns()
            first = now >= self._said.get(address, 0)
            self._said[address] = now + int(wait_s * 1e9)
            self._said.move_to_end(address)
            while len(self._said) > self.addresses:
                self._said.popitem(last=False)
            return first

    def failed(self, address: str) -> None:
        with self._lock:
            now = self.clock.now_ns()
            times = self._recent(address, now)
            times.append(now)
            while len(times) > self.failures:
                times.popleft()
            self._failed[address] = times
            self._failed.move_to_end(address)
            while len(self._failed) > self.addresses:
                self._failed.popitem(last=False)


@dataclass(frozen=True)
class Controls:
    """What the page may change, wired by ``edge.app.live``: each returns a message for the page (or raises
    ``WeedDetectorError`` with what is wrong and how to fix it). ``state()`` is what is in force now."""

    state: Callable[[], dict]
    tune: Callable[[float | None, str | None], str]
    pause: Callable[[], str]
    resume: Callable[[], str]
    save: Callable[[], str]


def same_secret(given: str, secret: str) -> bool:
    """``given == secret`` in constant time, for any text a client sends (``hmac.compare_digest`` refuses a str
    that is not ASCII: a cookie or header holding one byte above 127 was a 500 and a logged traceback)."""
    return hmac.compare_digest(given.encode("utf-8", "backslashreplace"), secret.encode("utf-8", "backslashreplace"))


class Auth:
    """The token check, its rate limit and the CSRF tokens (see the module docstring). ``token`` None: no login
    needed."""

    def __init__(self, token: str | None, limiter: LoginLimiter | None = None):
        if token is not None and not token:
            raise ValueError("an empty token would match an empty Bearer header: give a token or None")
        self.token = token
        self.limiter = limiter or LoginLimiter()
        self._secret = secrets.token_bytes(32)
        self.session = None if token is None else self._mac("session", token)

    def _mac(self, what: str, value: str) -> str:
        return hmac.new(self._secret, f"{what}:{value}".encode("utf-8", "backslashreplace"), hashlib.sha256).hexdigest()

    def authenticated(self) -> bool:
        """The session cookie, or a Bearer header holding the token (a wrong one counts as a failure)."""
        if self.token is None or self.has_session():
            return True
        bearer = _bearer()
        return bearer is not None and self.token_matches(bearer)

    def has_session(self) -> bool:
        cookie = request.cookies.get(SESSION_COOKIE, "")
        return bool(cookie) and self.session is not None and same_secret(cookie, self.session)

    def token_matches(self, given: str) -> bool:
        """Whether ``given`` is the token; a wrong one is counted against the client's address."""
        if self.token is not None and given and same_secret(given, self.token):
            return True
        self.limiter.failed(self.address())
        return False

    def wait_s(self) -> float:
        """How long this client must wait before its next token is checked (0: now)."""
        return self.limiter.wait_s(self.address())

    @staticmethod
    def address() -> str:
        return request.remote_addr or "?"

    def csrf_for(self, seed: str) -> str:
        return self._mac("csrf", seed)

    def csrf_ok(self) -> bool:
        seed = request.cookies.get(CSRF_COOKIE, "")
        given = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token", "")
        return bool(seed) and bool(given) and same_secret(given, self.csrf_for(seed))


def create_app(hub: LiveHub, controls: Controls, auth: Auth, *, status: Callable[[], dict],
               blueprints: Iterable[Blueprint] = ()) -> Flask:
    """The live view's app; ``status()`` is the page's figures (``edge.app.live``). See the module docstring."""
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=MAX_BODY_BYTES, TEMPLATES_AUTO_RELOAD=False)
    for bp in blueprints:
        app.register_blueprint(bp)

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException):  # werkzeug's refusals (no route, wrong method, too large) as JSON, not HTML
        resp = _refuse(e.code or 500, *_http_refusal(e))
        resp.headers.update((k, v) for k, v in e.get_headers() if k.lower() != "content-type")  # 405's Allow
        return resp

    @app.errorhandler(RecursionError)
    def _too_deep(_e):  # a JSON body nested thousands deep (request.get_json)
        return _refuse(400, "the request body nests too deeply", "send a flat JSON object")

    @app.before_request
    def _guard():
        if auth.token is None and not _local_host(request.host):
            # no token: only this machine may use it, so a page elsewhere must not reach it through a DNS name that
            # resolves to 127.0.0.1 (DNS rebinding: the browser would send that name as Host)
            return _refuse(403, f"this live view has no token and answers only to 127.0.0.1/localhost, not "
                                f"{one_line(request.host or request.headers.get('Host', ''))[:80]!r}",
                           "open http://127.0.0.1:PORT/, or set [web] token_file")
        g.csrf_seed = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
        g.new_csrf = CSRF_COOKIE not in request.cookies
        if request.method not in SAFE_METHODS and not auth.csrf_ok():
            return _refuse(403, "missing or wrong CSRF token",
                           "reload the page; scripts send the page's csrf-token as the X-CSRF-Token header")
        if request.endpoint not in OPEN_ENDPOINTS and not auth.has_session() and _bearer() is not None \
                and auth.wait_s() > 0:
            return _too_many(auth, auth.wait_s())
        if request.endpoint not in OPEN_ENDPOINTS and not auth.authenticated():
            if request.method == "GET" and request.accept_mimetypes.accept_html and request.path == "/":
                return Response(render_template("login.html", problem=""), 401)
            return _refuse(401, "login needed", "log in at /login, or send Authorization: Bearer <token>")
        return None

    @app.after_request
    def _headers(resp: Response) -> Response:
        if getattr(g, "new_csrf", False):
            resp.set_cookie(CSRF_COOKIE, g.csrf_seed, httponly=True, samesite="Strict")
        resp.headers["Content-Security-Policy"] = ("default-src 'self'; img-src 'self' data:; "
                                                   "frame-ancestors 'none'; form-action 'self'")
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers.setdefault("Cache-Control", "no-store")
        return resp

    @app.context_processor
    def _csrf():
        return {"csrf_token": auth.csrf_for(g.csrf_seed)}

    @app.route("/login", methods=["GET", "POST"])
    def login():
        if auth.token is None:
            return redirect("/")
        if request.method == "GET":
            return render_template("login.html", problem="")
        if auth.wait_s() > 0:
            return _too_many(auth, auth.wait_s(), page=True)
        if not auth.token_matches(request.form.get("token", "")):
            log.warning("live view: a wrong token from %s", request.remote_addr)
            return Response(render_template("login.html", problem="wrong token"), 401)
        resp = redirect("/")
        resp.set_cookie(SESSION_COOKIE, auth.session or "", httponly=True, samesite="Strict")
        return resp

    @app.post("/logout")
    def logout():
        resp = redirect("/login")
        resp.delete_cookie(SESSION_COOKIE)
        return resp

    @app.get("/")
    def live():
        return render_template("live.html", cfg=hub.cfg, login=auth.token is not None)

    @app.get("/stream.mjpg")
    def stream():
        return Response(hub.stream(), mimetype=f"multipart/x-mixed-replace; boundary={BOUNDARY.decode()}",
                        headers={"Cache-Control": "no-store"})

    @app.get("/frame.jpg")
    def frame():
        """The newest encoded frame (one picture; made only while a stream is watched)."""
        jpeg = hub.jpeg()
        if jpeg is None:
            return _refuse(404, "no frame encoded yet", "open the live page (/) or the stream (/stream.mjpg)")
        return Response(jpeg[1], mimetype="image/jpeg")

    @app.get("/api/status")
    def api_status():
        return jsonify(status())

    @app.post("/api/tuning")
    def api_tuning():
        body = request.get_json(silent=True) if request.is_json else request.form.to_dict()
        if isinstance(body, dict) and not request.is_json:
            body.pop("csrf_token", None)  # a form carries its CSRF token as a field (docs/live-view.md)
        if not isinstance(body, dict) or not body or set(body) - {"threshold", "sensitivity"}:
            return _refuse(400, "send a JSON object with threshold and/or sensitivity",
                           'e.g. {"threshold": 0.6} or {"sensitivity": "medium"}')
        threshold = body.get("threshold")
        try:
            if isinstance(threshold, bool):
                raise TypeError
            threshold = None if threshold in (None, "") else float(threshold)
        except (TypeError, ValueError, OverflowError):
            return _refuse(400, f"threshold {one_line(str(threshold))[:40]!r} is not a number",
                           "give a probability, e.g. 0.5")
        sensitivity = body.get("sensitivity")
        if sensitivity is not None and not isinstance(sensitivity, str):  # 0, false, []: not "no change"
            return _refuse(400, f"sensitivity {one_line(repr(sensitivity))[:40]} is not a preset name",
                           "use low, medium or high")
        sensitivity = sensitivity or None  # a form's empty field: not given
        if threshold is None and sensitivity is None:
            return _refuse(400, "nothing to apply: threshold and sensitivity are both empty",
                           'e.g. {"threshold": 0.6} or {"sensitivity": "medium"}')
        return _act(lambda: controls.tune(threshold, sensitivity))

    @app.post("/api/tuning/save")
    def api_save():
        return _act(controls.save)

    @app.post("/api/pause")
    def api_pause():
        return _act(controls.pause)

    @app.post("/api/resume")
    def api_resume():
        return _act(controls.resume)

    def _act(fn: Callable[[], str]):
        try:
            return jsonify({"ok": True, "message": fn(), "state": controls.state()})
        except WeedDetectorError as e:
            return _refuse(400, e.what, e.fix)

    return app


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def _local_host(host: str) -> bool:
    """Whether a request's Host header (``name[:port]``, ``[v6][:port]``) names this machine."""
    name = host.rsplit("]", 1)[0].lstrip("[") if host.startswith("[") else host.rsplit(":", 1)[0]
    return name.lower() in LOCAL_HOSTS


def _bearer() -> str | None:
    """The token of this request's ``Authorization: Bearer`` header (None without one)."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None  # the scheme is case-insensitive (RFC 9110)


def _too_many(auth: Auth, wait_s: float, page: bool = False) -> Response:
    """429 for a client that sent too many wrong tokens, with ``Retry-After`` (whole seconds, rounded up); logged
    once per lock-out."""
    seconds = max(1, int(-(-wait_s // 1)))
    if auth.limiter.first_refusal(auth.address(), wait_s):
        log.warning("live view: too many wrong tokens from %s; refused for %d s", request.remote_addr, seconds)
    what = f"too many wrong tokens from this address: wait {seconds} s"
    resp = (Response(render_template("login.html", problem=what), 429) if page
            else _refuse(429, what, "check the token (the first line of [web] token_file), then try again"))
    resp.headers["Retry-After"] = str(seconds)
    return resp


def _http_refusal(e: HTTPException) -> tuple[str, str]:
    """What was wrong and how to fix it, for an HTTP error werkzeug or a route raised."""
    path = one_line(request.path)[:200]
    if isinstance(e, NotFound):
        where = "API address" if "/api/" in path else "address"
        return f"no such {where}: {path!r}", "the live view is at /, its figures at /api/status (docs/live-view.md)"
    if isinstance(e, MethodNotAllowed):
        allowed = sorted(set(e.valid_methods or ()) - {"HEAD", "OPTIONS"})
        return f"{one_line(request.method)[:20]} is not taken at {path!r}", f"use {' or '.join(allowed) or 'GET'}"
    if isinstance(e, RequestEntityTooLarge):
        return f"the request body is larger than {MAX_BODY_BYTES // 1024} KB", "send a small JSON object"
    return f"{e.name}: {one_line(e.description or '')[:200]}", "see docs/live-view.md"


def _refuse(code: int, what: str, fix: str) -> Response:
    resp = jsonify({"ok": False, "error": what, "fix": fix})
    resp.status_code = code
    return resp


class WebServer:
    """``app`` served on ``host:port`` by werkzeug's threaded server, in a thread (``start``); ``close()`` shuts
    it down (idempotent). A port that cannot be bound is a ``ConfigError`` (exit 3)."""

    def __init__(self, app: Flask, host: str, port: int):
        said = io.StringIO()  # werkzeug prints its own lines, then exits, on a port in use: one line of ours instead
        try:
            with contextlib.redirect_stderr(said):
                self._server = make_server(host, port, app, threaded=True)
        except (OSError, SystemExit) as e:
            reason = (e.strerror if isinstance(e, OSError) and e.strerror else None) or \
                next((ln.strip() for ln in said.getvalue().splitlines() if ln.strip()), None) or str(e)
            raise ConfigError(f"[web] listen {host}:{port}: cannot listen ({reason})",
                              "choose another port (--web PORT) or stop what uses it") from None
        self._server.daemon_threads = True
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request in the journal
        self.host, self.port = host, self._server.server_port
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> "WebServer":
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="live-view-http", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> "WebServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
