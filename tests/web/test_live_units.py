"""The live view's parts without a browser: [web] config, the hub (newest wins, a stuck client never
stalls the loop), authentication and CSRF on every route (blueprints too), tuning between frames,
the spray pause and the state directory. Manual clocks and direct calls; no sleeps."""

from __future__ import annotations

import json
import re
import socket
import threading

import numpy as np
import pytest

from edge.config import load_config
from edge.core.clock import ManualClock
from edge.core.errors import ConfigError
from edge.core.frame import Frame
from edge.decide.decider import Decider
from edge.inference import Classifier
from edge.inference.config import PRESETS, GateConfig
from edge.inference.vegetation import VegetationGate
from edge.inputs.pause import SprayPause
from edge.loop.actuator import Actuator
from edge.loop.runner import RunLoop
from edge.loop.tuning import Tuning
from edge.loop.whole_frame import WholeFrameProcessor
from edge.outputs.channels import OutputBlocked
from edge.outputs.dryrun import DryRunOutput
from edge.service.state import StateDir
from edge.web.config import WebConfig, parse_listen
from edge.web.hub import LiveHub
from tests.conftest import TOY_BUNDLE
from tests.edge.helpers import ScriptedSource

flask = pytest.importorskip("flask")

from edge.web.server import Auth, Controls, LoginLimiter, WebServer, create_app  # noqa: E402

TOKEN = "unit-test-token-0123456789"


# -- [web] config ------------------------------------------------------------------------
@pytest.mark.parametrize("text, address", [
    ("8080", ("127.0.0.1", 8080)),
    ("127.0.0.1:9000", ("127.0.0.1", 9000)),
    ("0.0.0.0:8080", ("0.0.0.0", 8080)),
    ("[::1]:8080", ("::1", 8080)),
    ("localhost:0", ("localhost", 0)),
])
def test_listen_addresses(text, address):
    assert parse_listen(text) == address


@pytest.mark.parametrize("web, words", [
    ({"listen": "0.0.0.0:8080"}, "needs a token: set [web] token_file"),
    ({"listen": "192.168.1.5:8080"}, "needs a token"),
    ({"listen": "fieldpc.local:8080"}, "needs a token"),
    ({"listen": "8080x"}, "is not [HOST:]PORT"),
    ({"listen": "1:99999"}, "is not [HOST:]PORT"),
    ({"listen": "8080", "token": "short"}, "at least 16"),
    ({"listen": "8080", "token": TOKEN, "token_file": "/x"}, "keep one"),
    ({"stream_fps": 100}, "[web] stream_fps"),
    ({"listne": "8080"}, "[web] listne: unknown key"),
])
def test_bad_web_sections_are_config_errors(web, words):
    with pytest.raises(ConfigError) as e:
        load_config(None, {"web": web})
    assert words in str(e.value)


def test_web_is_off_by_default_and_a_local_bind_needs_no_token():
    assert not load_config(None).web.enabled
    assert load_config(None, {"web": {"listen": "8080"}}).web.address() == ("127.0.0.1", 8080)
    assert load_config(None, {"web": {"listen": "0.0.0.0:8080", "token": TOKEN}}).web.address() == ("0.0.0.0", 8080)


# -- the hub -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def classifier():
    return Classifier(TOY_BUNDLE, num_threads=1)


def whole_frame_loop(classifier, script, clock, observer=None, maintain=(), vegetation=None):
    out = DryRunOutput(channels=2, clock=clock)
    proc = WholeFrameProcessor(classifier, Decider(classifier.labels, ["weed"], 0.5), Actuator(out, 10.0, clock),
                               clock=clock, vegetation=vegetation)
    loop = RunLoop(ScriptedSource(script, clock), proc, clock=clock, observer=observer, maintain=maintain)
    return loop, proc, out


def test_publish_keeps_the_newest_and_a_slow_client_skips_frames(classifier):
    clock = ManualClock()
    hub = LiveHub(WebConfig(), clock=clock)
    encoded = []
    loop, _, _ = whole_frame_loop(classifier, "SWW", clock, observer=hub.publish)
    loop.run()
    assert hub.newest().frame.frame_id == 3 and hub.stats() is not None
    assert hub.encode_newest() and not hub.encode_newest()  # only a new frame is encoded again
    client = hub.stream()
    first = next(client)
    assert first.startswith(b"--frame\r\nContent-Type: image/jpeg") and b"\xff\xd8" in first
    encoded.append(hub.jpeg()[0])
    # five more frames while the client is busy: it gets the newest, not the five
    loop2, _, _ = whole_frame_loop(classifier, "WWWWW", clock, observer=hub.publish)
    loop2.run()
    hub.encode_newest()
    assert hub.clients == 1
    second = next(client)
    assert hub.jpeg()[0] == encoded[0] + 5 and second.endswith(hub.jpeg()[1] + b"\r\n")
    client.close()
    assert hub.clients == 0
    assert [e.kind for e in hub.events.last()].count("spray") == 1  # one per start of spraying (W after W: none)


class NoiseSource:
    """``n`` frames of noise (JPEGs of ~100 kB each, so a client that does not read fills its socket at once)."""

    live, name, dropped = False, "noise", 0

    def __init__(self, n, clock):
        self.n, self.clock, self.i = n, clock, 0
        self.images = [np.random.default_rng(i).integers(0, 255, (240, 320, 3), np.uint8) for i in range(4)]

    def link(self):
        return None

    def read(self, timeout=None):
        if self.i >= self.n:
            return None
        self.i += 1
        self.clock.advance(0.05)
        return Frame(self.images[self.i % 4], self.i, self.clock.now_ns(), self.name)


def test_a_client_that_never_reads_never_stalls_the_loop(classifier):
    """A real server and a client that sends its request and then never reads: the loop runs every frame,
    the encoder (called here directly, as its thread would) keeps encoding."""
    clock = ManualClock()
    hub = LiveHub(WebConfig(jpeg_quality=95), clock=clock)
    controls = Controls(state=dict, tune=lambda *a: "", pause=str, resume=str, save=str)
    app = create_app(hub, controls, Auth(None), status=dict)
    frames = 120
    with WebServer(app, "127.0.0.1", 0) as server, socket.socket() as stuck:
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(("127.0.0.1", server.port))
        stuck.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        seen = []

        def observe(result, stats):
            hub.publish(result, stats)
            hub.encode_newest()
            seen.append(result.frame.frame_id)

        out = DryRunOutput(channels=1, clock=clock)
        proc = WholeFrameProcessor(classifier, Decider(classifier.labels, ["weed"], 0.5), Actuator(out, 10.0, clock),
                                   clock=clock)
        loop = RunLoop(NoiseSource(frames, clock), proc, clock=clock, observer=observe)
        done = threading.Event()
        t = threading.Thread(target=lambda: (loop.run(), done.set()), daemon=True)
        t.start()
        assert done.wait(120), "the loop stalled behind a client that does not read"
        assert len(seen) == frames and hub.encoded == frames
        assert hub.clients == 1  # the stuck client is still connected: its thread is blocked in its own write
        assert frames * len(hub.jpeg()[1]) > 8_000_000  # more than any socket buffers hold


# -- auth and CSRF ---------------------------------------------------------------------------
def make_app(token, blueprints=(), auth=None):
    clock = ManualClock()
    hub = LiveHub(WebConfig(), clock=clock)
    acted = []
    controls = Controls(state=lambda: {"n": len(acted)}, tune=lambda t, s: acted.append(("tune", t, s)) or "ok",
                        pause=lambda: acted.append("pause") or "paused", resume=lambda: acted.append("resume") or "",
                        save=lambda: acted.append("save") or "saved")
    app = create_app(hub, controls, auth or Auth(token), status=lambda: {"label": "<script>alert(1)</script>"},
                     blueprints=blueprints)
    app.testing = True
    return app, acted


def labels_blueprint():
    bp = flask.Blueprint("labels", __name__, url_prefix="/labels")

    @bp.get("/")
    def index():
        return flask.render_template_string("<meta name='csrf-token' content='{{ csrf_token }}'><p>{{ name }}</p>",
                                            name="<img src=x onerror=alert(1)>.jpg")

    @bp.post("/set")
    def change():
        return "changed"

    return bp


ROUTES = [("GET", "/"), ("GET", "/stream.mjpg"), ("GET", "/frame.jpg"), ("GET", "/api/status"),
          ("GET", "/static/live.js"), ("GET", "/labels/"), ("POST", "/api/pause"), ("POST", "/api/resume"),
          ("POST", "/api/tuning"), ("POST", "/api/tuning/save"), ("POST", "/labels/set"), ("POST", "/logout")]


@pytest.mark.parametrize("method, path", ROUTES)
def test_every_route_needs_the_token(method, path):
    app, acted = make_app(TOKEN, [labels_blueprint()])
    c = app.test_client()
    r = c.open(path, method=method)
    assert r.status_code in (401, 403), (path, r.status_code)
    assert acted == []


def csrf_of(client, path="/"):
    page = client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
    return re.search(r'name=.csrf-token. content=.([0-9a-f]+)', page.get_data(as_text=True)).group(1)


def test_login_sets_a_cookie_that_opens_every_route_and_posts_need_csrf():
    app, acted = make_app(TOKEN, [labels_blueprint()])
    c = app.test_client()
    login = c.get("/login")
    token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', login.get_data(as_text=True)).group(1)
    assert c.post("/login", data={"token": "wrong-token-0123456789", "csrf_token": token}).status_code == 401
    assert c.post("/login", data={"token": TOKEN}).status_code == 403  # no CSRF token: not even a login
    r = c.post("/login", data={"token": TOKEN, "csrf_token": token})
    assert r.status_code == 302 and "wd_session=" in r.headers["Set-Cookie"] and "HttpOnly" in r.headers["Set-Cookie"]
    for path in ("/", "/api/status", "/static/live.js", "/labels/"):
        assert c.get(path).status_code == 200, path
    assert c.post("/api/pause").status_code == 403  # logged in, but no CSRF token
    assert c.post("/labels/set", headers={"X-CSRF-Token": "0" * 64}).status_code == 403
    page_token = csrf_of(c)
    assert c.post("/api/pause", headers={"X-CSRF-Token": page_token}).get_json()["message"] == "paused"
    assert c.post("/labels/set", data={"csrf_token": page_token}).get_data() == b"changed"
    assert acted == ["pause"]


def test_secrets_holding_bytes_above_127_are_refused_not_a_server_error(caplog):
    """hmac.compare_digest refuses a non-ASCII str: a cookie or header byte above 127 was a 500 and a traceback."""
    app, acted = make_app(TOKEN, [labels_blueprint()])
    c = app.test_client()
    c.set_cookie("wd_session", "\xe9t\xe9")
    assert c.get("/api/status").status_code == 401
    assert c.get("/api/status", headers={"Authorization": "Bearer caf\xe9-0123456789abcdef"}).status_code == 401
    c.set_cookie("wd_csrf", "a")
    page_token = csrf_of(c)
    assert c.post("/api/pause", headers={"X-CSRF-Token": "\xe9", "Authorization": f"Bearer {TOKEN}"}).status_code == 403
    assert c.post("/login", data={"token": TOKEN, "csrf_token": "\xe9"}).status_code == 403
    assert acted == [] and page_token
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_bearer_token_and_escaping():
    app, _ = make_app(TOKEN, [labels_blueprint()])
    c = app.test_client()
    h = {"Authorization": f"Bearer {TOKEN}"}
    assert c.get("/api/status", headers={"Authorization": "Bearer nope"}).status_code == 401
    status = c.get("/api/status", headers=h)
    assert status.get_json() == {"label": "<script>alert(1)</script>"}  # data in JSON; the page uses textContent
    assert status.mimetype == "application/json" and status.headers["X-Content-Type-Options"] == "nosniff"
    page = c.get("/labels/", headers=h).get_data(as_text=True)
    assert "&lt;img src=x onerror=alert(1)&gt;.jpg" in page and "<img src=x" not in page
    live = c.get("/", headers=h)
    assert "default-src 'self'" in live.headers["Content-Security-Policy"] and live.headers["X-Frame-Options"] == "DENY"
    assert re.search(r"https?://", re.sub(r'http://(127\.0\.0\.1|localhost)', "", live.get_data(as_text=True))) is None


@pytest.mark.parametrize("content", ["", "\n", "\n" + TOKEN + "\n", "   \n" + TOKEN])
def test_a_token_file_without_a_token_on_its_first_line_is_refused(tmp_path, content):
    """An empty token would let any client in (an empty Bearer header matches it): refused, exit 3."""
    from edge.app.live import read_token

    tf = tmp_path / "token"
    tf.write_text(content)
    with pytest.raises(ConfigError, match="no token on its first line"):
        read_token(WebConfig(listen="0.0.0.0:8080", token_file=str(tf)))
    tf.write_text(TOKEN + "\n")
    assert read_token(WebConfig(listen="0.0.0.0:8080", token_file=str(tf))) == TOKEN


@pytest.mark.parametrize("token", ["short", "a" * 20 + "\x1b" + "b" * 5, "a" * 20 + "\x00" + "b" * 5])
def test_a_token_file_token_the_check_refuses_says_why(tmp_path, token):
    """Too short, or a control character in a long one: the message names both rules and the token's length."""
    from edge.app.live import read_token

    tf = tmp_path / "token"
    tf.write_text(token + "\n")
    with pytest.raises(ConfigError, match=f"at least 16 printable characters .no control characters., {len(token)} "):
        read_token(WebConfig(listen="0.0.0.0:8080", token_file=str(tf)))


def test_an_empty_bearer_never_matches_and_an_empty_token_is_refused():
    app, _ = make_app(TOKEN)
    c = app.test_client()
    for header in ("Bearer ", "Bearer", "bearer  "):
        assert c.get("/api/status", headers={"Authorization": header}).status_code == 401
    with pytest.raises(ValueError, match="empty token"):
        Auth("")


def test_a_port_in_use_is_one_line_of_ours(capsys):
    """werkzeug prints its own lines and exits on a port in use: a ConfigError (exit 3) saying why, nothing else."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        app, _ = make_app(TOKEN)
        with pytest.raises(ConfigError, match=r"cannot listen \(Address already in use\)"):
            WebServer(app, "127.0.0.1", busy.getsockname()[1])
    finally:
        busy.close()
    assert capsys.readouterr().err == ""


def test_a_form_post_carries_its_csrf_token_as_a_field():
    app, acted = make_app(TOKEN)
    c = app.test_client()
    token = csrf_of(c)
    r = c.post("/api/tuning", data={"csrf_token": token, "threshold": "0.6"},
               headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and acted == [("tune", 0.6, None)]


def test_without_a_token_no_login_but_still_csrf():
    app, acted = make_app(None)
    c = app.test_client()
    assert c.get("/api/status").status_code == 200
    assert c.post("/api/pause").status_code == 403
    assert c.post("/api/tuning", json={"threshold": 0.7}, headers={"X-CSRF-Token": csrf_of(c)}).status_code == 200
    assert acted == [("tune", 0.7, None)]


@pytest.mark.parametrize("host, code", [("127.0.0.1:8080", 200), ("localhost:8080", 200), ("[::1]:8080", 200),
                                        ("LOCALHOST", 200), ("rebind.attacker.example:8080", 403),
                                        ("127.0.0.1.nip.io:8080", 403), ("192.168.1.20:8080", 403)])
def test_without_a_token_only_this_machines_names_are_answered(host, code):
    """No token: a page elsewhere must not reach the live view through a name resolving to 127.0.0.1 (DNS
    rebinding sends that name as Host); with a token the token guards it, whatever the name."""
    app, _ = make_app(None)
    assert app.test_client().get("/api/status", headers={"Host": host}).status_code == code
    app, _ = make_app(TOKEN)
    assert app.test_client().get("/api/status", headers={"Host": host,
                                                          "Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_a_host_header_werkzeug_rejects_is_named_as_sent():
    """werkzeug gives request.host '' for such a header: the refusal said "not ''"."""
    app, _ = make_app(None)
    r = app.test_client().get("/api/status", headers={"Host": "evil.com:127.0.0.1"})
    assert r.status_code == 403 and "not 'evil.com:127.0.0.1'" in r.get_json()["error"]


@pytest.mark.parametrize("method, path, body, code, words, fix", [
    ("GET", "/no/such/page", None, 404, "no such address: '/no/such/page'", "the live view is at /"),
    ("GET", "/api/nope", None, 404, "no such API address: '/api/nope'", "/api/status"),
    ("GET", "/labels/api/x", None, 404, "no such API address: '/labels/api/x'", "/api/status"),  # no labelling here
    ("PUT", "/api/tuning", None, 405, "PUT is not taken at '/api/tuning'", "use POST"),
    ("POST", "/api/status", None, 405, "POST is not taken at '/api/status'", "use GET"),
    ("POST", "/api/tuning", "x" * (65 * 1024), 413, "the request body is larger than 64 KB", "send a small JSON"),
])
def test_werkzeugs_own_refusals_are_json_saying_what_to_do(method, path, body, code, words, fix):
    """No route, a method the route does not take, a body too large: werkzeug's HTML pages before."""
    app, acted = make_app(TOKEN)
    c = app.test_client()
    r = c.open(path, method=method, data=body, content_type="application/json",
               headers={"Authorization": f"Bearer {TOKEN}", "X-CSRF-Token": csrf_of(c)})
    assert r.status_code == code and r.mimetype == "application/json", (r.status_code, r.data[:80])
    got = r.get_json()
    assert got["ok"] is False and words in got["error"] and fix in got["fix"] and acted == []
    if code == 405:  # HTTP asks for the methods it does take
        assert set(r.headers["Allow"].replace(" ", "").split(",")) >= {fix.split()[-1]}
    stranger = app.test_client().open(path, method=method)
    assert stranger.status_code in (401, 403)  # without the token (and CSRF): refused before any route is looked up


@pytest.mark.parametrize("body, words", [
    ({"threshold": True}, "is not a number"),
    ({"threshold": 10 ** 400}, "is not a number"),
    ({"foo": 1}, "send a JSON object with threshold and/or sensitivity"),
    ({}, "send a JSON object with threshold and/or sensitivity"),
    ([1, 2], "send a JSON object with threshold and/or sensitivity"),
    (None, "send a JSON object with threshold and/or sensitivity"),
    ({"sensitivity": 0}, "is not a preset name"),  # these were 200 "nothing: applied"
    ({"sensitivity": False}, "is not a preset name"),
    ({"sensitivity": []}, "is not a preset name"),
    ({"threshold": None}, "nothing to apply"),
    ({"threshold": ""}, "nothing to apply"),
])
def test_a_tuning_body_that_is_not_one_is_a_400_saying_what_to_send(body, words):
    app, acted = make_app(TOKEN)
    c = app.test_client()
    h = {"Authorization": f"Bearer {TOKEN}", "X-CSRF-Token": csrf_of(c)}
    r = c.post("/api/tuning", json=body, headers=h)
    assert r.status_code == 400 and words in r.get_json()["error"] and acted == []
    deep = c.post("/api/tuning", data="[" * 30000 + "]" * 30000, content_type="application/json", headers=h)
    assert deep.status_code == 400 and "nests too deeply" in deep.get_json()["error"]


# -- tuning between frames ------------------------------------------------------------------
def test_tuning_is_applied_by_the_loop_between_frames(classifier):
    clock = ManualClock()
    gate = VegetationGate(GateConfig().params())
    loop, proc, _ = whole_frame_loop(classifier, "WW!WW", clock, vegetation=gate)
    tuning = Tuning(proc, "medium", gate_params=lambda s: GateConfig(sensitivity=s).params())
    loop.maintain = (tuning.apply,)
    seen = []
    loop.on_frame = lambda r: seen.append((r.frame.frame_id, proc.decider.threshold, gate.params))

    def request():  # from another thread, as the web does; nothing changes until the loop applies it
        t = threading.Thread(target=lambda: tuning.request(threshold=0.9, sensitivity="high"))
        t.start()
        t.join()
        assert proc.decider.threshold == 0.5 and tuning.state().posted == 1 and tuning.state().applied == 0

    loop.source.on_bang = request
    loop.run()
    # posted while frame 3 was being read: frame 3 is decided wholly by the old rule, frame 4 by the new one
    assert seen == [(1, 0.5, PRESETS["medium"]), (2, 0.5, PRESETS["medium"]), (3, 0.5, PRESETS["medium"]),
                    (4, 0.9, PRESETS["high"])]
    rule = proc.tuning()[0]
    assert rule.threshold == 0.9 and rule.weed_labels == ("weed",) and tuning.state().applied == 1


def test_posts_merged_between_two_frames_are_applied_together(classifier):
    """Three posts before one frame: one change (the last values win), and none left pending afterwards."""
    _, proc, _ = whole_frame_loop(classifier, "", ManualClock(), vegetation=VegetationGate(PRESETS["low"]))
    tuning = Tuning(proc, "low", gate_params=lambda s: PRESETS[s])
    for t in (0.6, 0.7, 0.8):
        tuning.request(threshold=t)
    tuning.request(sensitivity="high")
    assert (tuning.state().posted, tuning.state().applied) == (4, 0)
    tuning.apply()
    st = tuning.state()
    assert (st.threshold, st.sensitivity, st.posted - st.applied) == (0.8, "high", 0)


@pytest.mark.parametrize("kw, words", [
    ({"threshold": 1.5}, "not a probability from 0.05 to 0.95"),
    ({"threshold": 0.0}, "not a probability from 0.05 to 0.95"),  # would spray everything
    ({"threshold": 1.0}, "not a probability from 0.05 to 0.95"),  # would spray nothing
    ({"threshold": True}, "not a probability"),
    ({"sensitivity": "extreme"}, "not a preset"),
])
def test_bad_tuning_requests_say_what_to_do(classifier, kw, words):
    _, proc, _ = whole_frame_loop(classifier, "", ManualClock(), vegetation=VegetationGate(PRESETS["low"]))
    with pytest.raises(ConfigError, match=words):
        Tuning(proc, "low", gate_params=lambda s: PRESETS[s]).request(**kw)


def test_no_preset_switch_without_the_gate(classifier):
    _, proc, _ = whole_frame_loop(classifier, "", ManualClock())
    tuning = Tuning(proc, "medium", gate_params=lambda s: PRESETS[s])
    assert tuning.state().sensitivity is None
    with pytest.raises(ConfigError, match="gate is off"):
        tuning.request(sensitivity="high")


# -- the pause and the state directory ---------------------------------------------------------
class Switch:
    """An enable switch as the outputs see it (an Interlock), flipped by the test."""

    def __init__(self, on=True):
        self.on, self.listeners = on, []

    def is_on(self):
        return self.on

    def describe(self):
        return "enable switch (test)"

    def add_off_listener(self, cb):
        self.listeners.append(cb)

    def remove_off_listener(self, cb):
        self.listeners.remove(cb)

    def turn(self, on):
        self.on = on
        if not on:
            for cb in list(self.listeners):
                cb()


def test_pause_switches_off_persists_and_resume_never_overrides_the_switch(tmp_path):
    state = StateDir(tmp_path / "state")
    switch = Switch(on=True)
    pause = SprayPause(switch, save=state.save_pause)
    out = DryRunOutput(channels=2, clock=ManualClock())
    out.set_enable(pause)
    out.set(0, True)
    assert pause.pause() is None
    assert out.state() == (False, False) and state.paused()
    with pytest.raises(OutputBlocked, match="spraying enable of the live view \\(paused there\\)"):
        out.set(0, True)
    restarted = SprayPause(switch, paused=state.paused(), save=state.save_pause)  # read at start
    assert restarted.paused and not restarted.is_on()
    switch.turn(False)
    assert pause.resume() is None and not state.paused()
    with pytest.raises(OutputBlocked, match="enable switch"):  # resuming does not override the switch
        out.set(0, True)
    switch.turn(True)
    out.set(0, True)
    assert out.state() == (True, False)
    out.close()


def test_resume_without_a_pause_does_nothing_and_says_nothing(tmp_path, caplog):
    import logging

    saved = []
    pause = SprayPause(None, save=saved.append)
    with caplog.at_level(logging.WARNING):
        assert pause.resume() is None
    assert saved == [] and "resumed" not in caplog.text and not pause.paused


def test_a_pause_that_cannot_be_saved_still_pauses(tmp_path):
    def broken(_paused):
        raise PermissionError("read-only file system")

    pause = SprayPause(None, save=broken)
    problem = pause.pause()
    assert not pause.is_on() and "could not be saved" in problem and "read-only" in problem


@pytest.mark.parametrize("content, words", [
    ('{"decision": {"threshold": 0.7}, "outputs": {"kind": "gpio"}}', "unexpected entry 'outputs'"),
    ('{"decision": {"debounce_n": 3}}', "unexpected entry 'decision'"),
    ("not json", "is not JSON"),
    ("[1, 2]", "does not hold a JSON object"),
])
def test_a_bad_saved_tuning_is_a_config_error(tmp_path, content, words):
    (tmp_path / "tuning.json").write_text(content)
    with pytest.raises(ConfigError, match=re.escape(words)):
        StateDir(tmp_path).tuning()


def test_a_state_dir_that_is_a_file_is_refused_at_start(tmp_path):
    """Not when the operator first saves a pause from the field: exit 3 at start, --validate-config included."""
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ConfigError, match="is not a folder"):
        StateDir(tmp_path / "a-file")
    assert StateDir(tmp_path / "not-yet").path == tmp_path / "not-yet"  # a missing folder is made when written
    (tmp_path / "loop").symlink_to(tmp_path / "loop")  # a path that cannot be looked at (as a parent edge-run may
    with pytest.raises(ConfigError, match="cannot be looked at"):  # not search): exit 3, not an internal error
        StateDir(tmp_path / "loop")


@pytest.mark.parametrize("saved, kept", [
    ({"decision": {"threshold": 0.0}}, {}),  # an older edge-run saved any value: the config's threshold stands
    ({"decision": {"threshold": True}, "gate": {"sensitivity": "high"}}, {"gate": {"sensitivity": "high"}}),
    ({"decision": {"threshold": 0.6}}, {"decision": {"threshold": 0.6}}),
])
def test_a_saved_threshold_the_live_view_could_not_set_is_not_used_and_never_stops_a_start(tmp_path, caplog,
                                                                                         saved, kept):
    import logging

    StateDir(tmp_path).save_tuning(saved)
    with caplog.at_level(logging.WARNING, logger="edge.service.state"):
        assert StateDir(tmp_path).tuning() == kept
    assert ("not used (the config's threshold stands)" in caplog.text) == (kept != saved)


def test_saved_tuning_goes_over_the_file_and_under_the_flags(tmp_path):
    from edge.app.live import with_saved_tuning

    StateDir(tmp_path).save_tuning({"decision": {"threshold": 0.7}, "gate": {"sensitivity": "high"}})
    toml = tmp_path / "c.toml"
    toml.write_text(f'[decision]\nthreshold = 0.3\n[gate]\nsensitivity = "low"\n[service]\nstate_dir = "{tmp_path}"\n')
    cfg = with_saved_tuning(load_config(toml), str(toml), {})
    assert cfg.decision.threshold == 0.7 and cfg.gate.sensitivity == "high"
    flags = {"decision": {"threshold": 0.55}}
    cfg = with_saved_tuning(load_config(toml, flags), str(toml), flags)
    assert cfg.decision.threshold == 0.55 and cfg.gate.sensitivity == "high"
    assert json.loads((tmp_path / "tuning.json").read_text())["decision"] == {"threshold": 0.7}
    assert toml.read_text().count("threshold = 0.3") == 1  # the user's TOML is never rewritten


def test_a_saved_tuning_the_config_refuses_names_its_file(tmp_path):
    from edge.app.live import with_saved_tuning

    StateDir(tmp_path).save_tuning({"gate": {"sensitivity": "extreme"}})
    toml = tmp_path / "c.toml"
    toml.write_text(f'[service]\nstate_dir = "{tmp_path}"\n')
    with pytest.raises(ConfigError, match=r"with the live view's saved tuning .*tuning.json") as e:
        with_saved_tuning(load_config(toml), str(toml), {})
    assert "delete that file" in e.value.fix


# -- the overlay ----------------------------------------------------------------------------
def test_the_overlay_draws_lanes_sprays_and_valves():
    from edge.core.metrics import FrameTimings
    from edge.core.tile import Tile
    from edge.decide.decider import Decision
    from edge.inference.classifier import Scores
    from edge.loop.per_lane import LaneFrameResult, LaneResult
    from edge.loop.whole_frame import FrameResult
    from edge.web.overlay import SPRAY_BGR, VALVE_ON_BGR, paint
    from tests.conftest import BROWN, solid
    from tests.web.test_browser import lane_columns

    image = solid(BROWN, 240, 320)
    frame = Frame(image, 7, 1, "test")
    t = FrameTimings(0, 0, 0, 0, 0, 1)
    scores = Scores(np.array([0.1, 0.9], np.float32), ("soil", "weed"), 0, 0)
    weed = Decision(7, 1, 0.9, True, True, "weed <b>", 0.9)
    soil = Decision(7, 1, 0.1, False, False, "soil", 0.9)
    # 4 lanes of 2 tiles, the image 40 cm along travel (top ahead: +20 .. -20 cm from the centre)
    tiles = tuple(Tile(x, y, x / 4, (x + 1) / 4, y / 2, (y + 1) / 2, 20 - 20 * y, -20 * y)
                  for x in range(4) for y in range(2))
    lanes = tuple(LaneResult(i, i, weed if i == 1 else soil, (0.1, 0.9) if i == 1 else (0.1, 0.1), 1 if i == 1 else 0,
                             0, targets_cm=((-18.0, -12.0),) if i == 1 else (),
                             tile_labels=("soil", "weed") if i == 1 else ("soil", "soil"),
                             tile_fires=(False, True) if i == 1 else (False, False)) for i in range(4))
    per_lane = LaneFrameResult(frame, scores, weed, (False, True, False, False), t, lanes=lanes, speed_kmh=3.0,
                               tiles=tiles)
    img = paint(per_lane, width=640, gate=None, outputs=(False, True, False, False))
    assert img.shape == (480, 640, 3)
    assert lane_columns(img)[:5] == pytest.approx([1, 160, 320, 480, 638], abs=3)  # edges and 3 boundaries
    b, g, r = (img[..., i].astype(int) for i in range(3))
    red = (r > g + 80) & (r > b + 80)  # the spray colour, filled half-transparent or drawn (brown ground is not)
    # the plant 12..18 cm behind the centre: rows 384..432 of lane 1, filled; the rest of the lane is not
    assert red[395:425, 175:305].mean() > 0.3 and red[250:370, 175:305].mean() < 0.05
    assert red[239:242, 165:315].mean() > 0.6  # the firing tile is framed red
    green = np.all(img == VALVE_ON_BGR, axis=2)
    assert green[-20:, 60:120].any() and not green[-20:, :60].any()  # valve 1 open, valve 0 not

    whole = FrameResult(frame, scores, weed, (True, True), t)
    img = paint(whole, width=640, gate=PRESETS["medium"], outputs=(True, True))
    assert lane_columns(img) == [] and np.all(np.abs(img[5, 320].astype(int) - SPRAY_BGR) < 90)


# -- a new rule for the per-lane path ----------------------------------------------------------
def test_the_lane_processor_takes_a_new_rule_and_gate_between_frames(tmp_path, classifier):
    from contextlib import ExitStack
    from dataclasses import replace

    from edge.app.wiring import make_lane_processor
    from edge.decide.rule import SprayRule

    cfg = load_config(None, {"spray": {"lanes": 2, "footprint_across_cm": 40, "footprint_along_cm": 30,
                                       "nozzle_distance_cm": 100, "speed_kmh": 3}})
    with ExitStack() as stack:
        out = DryRunOutput(channels=2, clock=ManualClock())
        stack.callback(out.close)
        proc = make_lane_processor(cfg, classifier, out, stack)
        rule, gate = proc.tuning()
        tuning = Tuning(proc, "medium", gate_params=lambda s: PRESETS[s])
        tuning.request(threshold=0.9, sensitivity="low")
        assert proc.tuning() == (rule, gate)  # posted, not applied
        tuning.apply()
        new, new_gate = proc.tuning()
        assert new.threshold == 0.9 and new.weed_labels == rule.weed_labels and new_gate == PRESETS["low"]
        assert proc.planner.cells.rule is new  # the cells decide by it too
        with pytest.raises(ConfigError, match="same model labels"):
            proc.retune(rule=SprayRule(0.5, None, labels=("a", "weed"), weed_labels=("weed",)))
        assert replace(new, threshold=0.5).labels == rule.labels


def test_wrong_tokens_are_rate_limited_per_address_and_a_session_is_not():
    clock = ManualClock()
    auth = Auth(TOKEN, LoginLimiter(failures=3, window_s=60, clock=clock))
    app, acted = make_app(TOKEN, auth=auth)
    browser = app.test_client()
    form = re.search(r'name="csrf_token" value="([0-9a-f]+)"', browser.get("/login").get_data(as_text=True)).group(1)
    assert browser.post("/login", data={"token": TOKEN, "csrf_token": form}).status_code == 302  # logged in
    attacker = app.test_client()
    wrong = {"Authorization": "Bearer wrong-token-0123456789"}
    assert [attacker.get("/api/status", headers=wrong).status_code for _ in range(3)] == [401, 401, 401]
    locked = attacker.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"})  # even the right token waits
    assert locked.status_code == 429 and locked.headers["Retry-After"] == "60"
    assert "wait 60 s" in locked.get_json()["error"]
    page = attacker.post("/login", data={"token": TOKEN, "csrf_token": csrf_of_form(attacker)})
    assert page.status_code == 429 and "wait 60 s" in page.get_data(as_text=True)
    assert browser.get("/api/status").status_code == 200  # the logged-in browser keeps working
    other = app.test_client()
    assert other.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"},
                     environ_base={"REMOTE_ADDR": "192.0.2.7"}).status_code == 200  # another address is not locked
    clock.advance(30)
    assert attacker.get("/api/status", headers=wrong).headers["Retry-After"] == "30"
    clock.advance(30)
    assert attacker.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert acted == []


def test_a_lock_out_is_logged_once_not_per_request(caplog):
    import logging

    clock = ManualClock()
    app, _ = make_app(TOKEN, auth=Auth(TOKEN, LoginLimiter(failures=3, window_s=60, clock=clock)))
    attacker = app.test_client()
    wrong = {"Authorization": "bearer wrong-token-0123456789"}  # the scheme in any case
    with caplog.at_level(logging.WARNING, logger="edge.web.server"):
        codes = [attacker.get("/api/status", headers=wrong).status_code for _ in range(300)]
        assert codes[:3] == [401] * 3 and set(codes[3:]) == {429}
        assert caplog.text.count("too many wrong tokens") == 1
        clock.advance(61)  # the lock-out is over; a new one is logged again
        codes = [attacker.get("/api/status", headers=wrong).status_code for _ in range(4)]
        assert codes == [401, 401, 401, 429] and caplog.text.count("too many wrong tokens") == 2


def csrf_of_form(client):
    return re.search(r'name="csrf_token" value="([0-9a-f]+)"', client.get("/login").get_data(as_text=True)).group(1)


@pytest.mark.parametrize("failures, times, expect_wait", [
    (3, [0, 1, 2], 58.0),        # the third failure locks until the first is 60 s old
    (3, [0, 1], 0.0),            # two of three: not yet
    (3, [0, 61, 62], 0.0),       # the first fell out of the window
    (1, [10], 60.0),
])
def test_login_limiter_window(failures, times, expect_wait):
    clock = ManualClock(start_ns=0)
    limiter = LoginLimiter(failures=failures, window_s=60, clock=clock)
    for t in times:
        clock.advance(t - clock.now_ns() / 1e9)
        limiter.failed("10.0.0.1")
    assert limiter.wait_s("10.0.0.1") == pytest.approx(expect_wait)
    assert limiter.wait_s("10.0.0.2") == 0.0


def test_login_limiter_forgets_the_oldest_addresses_first():
    limiter = LoginLimiter(failures=1, window_s=60, clock=ManualClock(), addresses=2)
    for address in ("a", "b", "c"):
        limiter.failed(address)
    assert [limiter.wait_s(a) > 0 for a in ("a", "b", "c")] == [False, True, True]
