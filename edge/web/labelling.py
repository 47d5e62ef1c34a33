"""The labelling pages (``make_blueprint(store)``, mounted under ``/labels``; docs/labelling.md).

A Flask blueprint over an ``edge.labelling.store.LabelStore``; the app that mounts it (the
web view's) enforces authentication on every route and CSRF on every request that is not a
GET or HEAD: the pages put the token in ``<meta name="csrf-token">`` and their script sends it
back as ``X-CSRF-Token`` on every POST. GET handlers change nothing. Everything shown from
outside (labels, file names, the source) goes through Jinja's autoescape, and the script sets
text with ``textContent`` only. Flask is imported here only (the optional ``web`` extra).

Routes (stable: a browser test drives them):

=========================================  ======  ===================================================
``/labels/``                               GET     the saved frames, newest first (``labels_index.html``)
``/labels/frame/<kind>/<stem>``            GET     one frame: its tiles and the label choices
``/labels/image/<kind>/<stem>.jpg``        GET     the saved image
``/labels/tile/<kind>/<stem>/<i>.png``     GET     tile ``i`` cut from it
``/labels/api/frames``                     GET     the frames as JSON (key, kind, run, frame, tiles, labelled)
``/labels/api/frame/<kind>/<stem>``        GET     one frame's sidecar, its tiles' labels and the choices
``/labels/api/frame/<kind>/<stem>/tile/<i>`` POST  label tile ``i``: JSON ``{"label": ..., "role": ...}``
=========================================  ======  ===================================================

A POST answers 200 with what was written (``label``, ``role``, ``path``, ``group``,
``new_class``), 400 with ``{"error": "..."}`` saying what was wrong (not JSON, no label, a bad
class name, a new class without a role, a role that contradicts the class's), 404 for a frame
or tile that does not exist, 503 when the data set cannot be used (the store's ``ConfigError``);
a name that is not a saved frame's (``..``, a slash) is 400 or 404, never a file outside the
frames folder.

Page elements (stable ids and classes): each tile is ``<button class="tile" data-tile="I">``
(``aria-pressed`` when selected, its label in ``<span class="tile-label">``); each label choice
is ``<button class="label" data-label="NAME" data-role="ROLE">``; a new class is
``<input id="new-label">``, ``<select id="new-role">`` and ``<button id="add-label">``; what
happened is in ``<p id="status" role="status">``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from edge.core.errors import ConfigError
from edge.core.text import one_line
from edge.labelling.store import LabelError, LabelStore, NotFound

if TYPE_CHECKING:
    from flask import Blueprint

URL_PREFIX = "/labels"
log = logging.getLogger(__name__)


def make_blueprint(store: LabelStore) -> Blueprint:
    """The labelling pages over ``store`` (see the module docstring)."""
    from pathlib import Path

    from flask import Blueprint, Response, jsonify, render_template, request

    here = Path(__file__).parent
    bp = Blueprint("labels", __name__, url_prefix=URL_PREFIX, template_folder=str(here / "templates"),
                   static_folder=str(here / "static"), static_url_path="/static")

    @bp.errorhandler(NotFound)
    def _not_found(e: NotFound):
        return _error(str(e), 404)

    @bp.errorhandler(LabelError)
    def _bad(e: LabelError):
        return _error(str(e), 400)

    @bp.errorhandler(ConfigError)
    def _data_set(e: ConfigError):  # the data set folder or its CSVs cannot be used: mend the data set, then retry
        log.warning("labelling: %s", e)
        return _error(str(e), 503)

    def _error(message: str, code: int):
        if request.path.startswith(f"{URL_PREFIX}/api/"):
            return jsonify(error=message), code
        return render_template("labels_error.html", message=message, code=code), code

    def _summary(f) -> dict:
        s = f.sidecar
        return {"key": f.key, "kind": s.kind, "run": s.run, "frame": s.frame, "t_mono_ns": s.t_mono_ns,
                "wall": s.wall, "source": s.source, "bundle": s.bundle, "spray": s.spray, "tiles": len(s.tiles)}

    @bp.get("/")
    def index():
        frames = store.frames()
        return render_template("labels_index.html", frames=[(_summary(f), f.sidecar) for f in frames],
                               dataset=str(store.dataset))

    @bp.get("/frame/<kind>/<stem>")
    def frame(kind: str, stem: str):
        key = f"{kind}/{stem}"
        f = store.frame(key)
        tiles = f.sidecar.tiles
        rows = _grid(tiles)
        return render_template("labels_frame.html", f=f, key=key, s=f.sidecar, rows=rows,
                               labels=store.labels_of(key), choices=store.choices())

    @bp.get("/image/<kind>/<stem>.jpg")
    def image(kind: str, stem: str):
        return Response(store.image_bytes(f"{kind}/{stem}"), mimetype="image/jpeg")

    @bp.get("/tile/<kind>/<stem>/<int:tile>.png")
    def tile(kind: str, stem: str, tile: int):
        return Response(store.tile_png(f"{kind}/{stem}", tile), mimetype="image/png")

    @bp.get("/api/frames")
    def api_frames():
        return jsonify(frames=[dict(_summary(f), labelled=len(store.labels_of(f.key))) for f in store.frames()])

    @bp.get("/api/frame/<kind>/<stem>")
    def api_frame(kind: str, stem: str):
        key = f"{kind}/{stem}"
        f = store.frame(key)
        return jsonify(frame=f.sidecar.as_dict(), labels={str(i): lab for i, lab in store.labels_of(key).items()},
                       choices=[{"name": c.name, "role": c.role, "origin": c.origin} for c in store.choices()])

    @bp.post("/api/frame/<kind>/<stem>/tile/<int:tile>")
    def label(kind: str, stem: str, tile: int):
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise LabelError('send a JSON object, e.g. {"label": "weed"} (Content-Type: application/json)')
        lab = body.get("label")
        if not isinstance(lab, str) or not lab.strip():
            raise LabelError('no "label": give the class name, e.g. {"label": "weed"}')
        role = body.get("role")
        if role is not None and not isinstance(role, str):
            raise LabelError('"role" is weed, crop or background')
        done = store.label(f"{kind}/{stem}", tile, lab, role or None)
        return jsonify(key=done.key, tile=done.tile, label=done.label, role=done.role, path=done.path,
                       group=done.group, new_class=done.new_class)

    @bp.route("/api/<path:rest>", methods=["GET", "POST"])
    def api_unknown(rest: str):  # e.g. .../tile/-1 (no route takes it): the blueprint's JSON, not a routing 404
        raise NotFound(f"no such API address: {one_line(request.path)[:200]!r}")

    return bp


def _grid(tiles) -> list[list[tuple[int, object]]]:
    """The tiles laid out as the image is: one row per tile row, lanes left to right (whole frame: one cell)."""
    if not tiles or tiles[0].lane is None:
        return [[(i, t) for i, t in enumerate(tiles)]]
    rows: dict[int, list[tuple[int, object]]] = {}
    for i, t in enumerate(tiles):
        rows.setdefault(t.row or 0, []).append((i, t))
    return [sorted(rows[r], key=lambda it: it[1].lane) for r in sorted(rows)]
