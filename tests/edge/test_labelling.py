"""The labelling store (folder-per-class set, groups.csv, roles.csv) and its pages (Flask test client)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.core.errors import ConfigError
from edge.core.frame import Frame
from edge.decide.decider import Decision
from edge.inference.bundle import read_manifest
from edge.labelling.store import GROUPS_FILE, ROLES_FILE, LabelError, LabelStore, NotFound
from edge.service.records import FramePlace, SavedTile, TriggerSaver
from tests.conftest import TOY_BUNDLE

EVIL = '<script>alert("x")</script>'


def _tiles(image: np.ndarray, distance: bool) -> list[SavedTile]:
    """2 lanes x 2 rows over a 64x48 image; ground offsets of a 40 cm long footprint."""
    out = []
    for lane in range(2):
        for row in range(2):
            out.append(SavedTile((lane * 32, row * 24, 32, 24), "weed" if lane else "soil", 0.9 if lane else 0.05,
                                 0.02, 0.4 if lane else 0.01, bool(lane), lane=lane, row=row,
                                 ground_cm=(40.0 - 20 * row, 20.0 - 20 * row) if distance else None))
    return out


def save_frames(folder: Path, *, run: str = "run1", distance: bool = True, source: str = "camera 0",
                n: int = 3, start_ns: int = 0, step_ns: int = 100_000_000, kmh: float = 3.6) -> list[str]:
    """``n`` saved frames 100 ms apart (at 1 m/s: 10 cm apart), alternately sprayed and sampled; their keys."""
    saver = TriggerSaver(folder, run_id=run)
    saver.describe_model("colour-toy", ("soil", "crop", "weed"))
    rng = np.random.default_rng(1)
    keys = []
    for i in range(n):
        img = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        t = start_ns + i * step_ns
        spray = i % 2 == 0
        frame = Frame(img, i, t, source)
        d = Decision(i, t, 0.9 if spray else 0.1, spray, spray, "weed" if spray else "soil", 0.9)
        place = FramePlace(kmh, i * step_ns / 1e9 * kmh / 0.036, None) if distance else FramePlace()
        path = saver.save("spray" if spray else "sample", frame, d, _tiles(img, distance), place)
        keys.append(f"{Path(path).parent.name}/{Path(path).stem}")
    return keys


@pytest.fixture
def store(tmp_path) -> LabelStore:
    save_frames(tmp_path / "saved")
    return LabelStore(tmp_path / "saved", tmp_path / "dataset", read_manifest(TOY_BUNDLE))


def _rows(path: Path) -> list[dict]:
    return list(csv.DictReader(path.read_text().splitlines()))


# -- the store ---------------------------------------------------------------------------
def test_frames_are_listed_with_their_sidecars_newest_first(store):
    frames = store.frames()
    assert [f.sidecar.frame for f in frames] == [2, 1, 0]
    assert [f.key.split("/")[0] for f in frames] == ["spray", "sample", "spray"]
    f = store.frame(frames[0].key)
    assert len(f.sidecar.tiles) == 4 and f.sidecar.place.distance_cm == pytest.approx(20.0)


def test_labelling_writes_the_folder_per_class_set_with_groups_and_roles(store, tmp_path):
    k0, k1 = store.frames()[-1].key, store.frames()[-2].key
    a = store.label(k0, 2, "weed")
    assert (a.label, a.role, a.new_class) == ("weed", "weed", False)
    assert a.path == f"weed/{LabelStore.tile_file(k0, 2)}"
    tile = cv2.imread(str(tmp_path / "dataset" / a.path))
    assert tile.shape == (24, 32, 3)  # the tile's box, cut from the saved image
    assert read_manifest(TOY_BUNDLE).background_labels == ["soil"]
    assert store.label(k0, 0, "soil").role == "background"  # soil: the bundle's background label
    assert store.labels_of(k0) == {0: "soil", 2: "weed"}
    store.label(k1, 3, "wild_oat", "weed")  # a class new to the bundle: needs its role once
    store.label(k1, 1, "wild_oat")
    roles = {r["class"]: r["role"] for r in _rows(tmp_path / "dataset" / ROLES_FILE)}
    assert roles == {"soil": "background", "weed": "weed", "wild_oat": "weed"}
    groups = {r["path"]: r["group"] for r in _rows(tmp_path / "dataset" / GROUPS_FILE)}
    assert set(groups) == {str(p.relative_to(tmp_path / "dataset")) for p in (tmp_path / "dataset").glob("*/*.png")}
    assert len(groups) == 4


def test_relabelling_a_tile_moves_its_file(store, tmp_path):
    k = store.frames()[0].key
    store.label(k, 1, "weed")
    store.label(k, 1, "crop")
    name = LabelStore.tile_file(k, 1)
    assert [p.parent.name for p in (tmp_path / "dataset").glob(f"*/{name}")] == ["crop"]
    assert [r["path"] for r in _rows(tmp_path / "dataset" / GROUPS_FILE)] == [f"crop/{name}"]


def test_groups_put_one_spot_of_ground_seen_by_several_frames_together(tmp_path):
    """At 1 m/s, frames 10 cm apart: the spot under row 1 of frame 0 (20..0 cm ahead, centre 10 cm) is
    under row 0 of frame 1? No: row 0 covers 40..20 cm, and the machine moved 10 cm. The ground position is
    distance + the tile's centre offset, bucketed by group_distance_cm."""
    keys = save_frames(tmp_path / "saved", n=4)
    store = LabelStore(tmp_path / "saved", tmp_path / "ds", group_distance_cm=50.0)
    f = [store.frame(k) for k in keys]
    g = lambda i, tile: store.group_of(f[i].sidecar, f[i].sidecar.tiles[tile])  # noqa: E731
    # lane 1, row 0 (centre 30 cm ahead) of frame 0 at 0 cm and row 1 (centre 10 cm) of frame 2 at 20 cm: 30 cm
    assert g(0, 2) == g(2, 3) == "run1/lane1/d0"
    assert g(0, 0) == "run1/lane0/d0" != g(0, 2)  # another lane: another group
    far = LabelStore(tmp_path / "saved", tmp_path / "ds", group_distance_cm=10.0)
    assert far.group_of(f[0].sidecar, f[0].sidecar.tiles[2]) == "run1/lane1/d3"


def test_without_a_distance_frames_of_one_run_in_one_time_window_share_a_group(tmp_path):
    keys = save_frames(tmp_path / "a", distance=False, n=4, step_ns=900_000_000)  # 0, 0.9, 1.8, 2.7 s
    save_frames(tmp_path / "a", distance=False, n=1, run="run2", start_ns=10**12)
    store = LabelStore(tmp_path / "a", tmp_path / "ds", group_window_s=2.0)
    groups = [store.group_of(store.frame(k).sidecar, store.frame(k).sidecar.tiles[0]) for k in keys]
    assert groups == ["run1/lane0/t0", "run1/lane0/t0", "run1/lane0/t0", "run1/lane0/t1"]
    other = [f for f in store.frames() if f.sidecar.run == "run2"][0]
    assert store.group_of(other.sidecar, other.sidecar.tiles[0]) == "run2/lane0/t500"


@pytest.mark.parametrize("key, tile, label, role, error, words", [
    ("spray/nope", 0, "weed", None, NotFound, "no saved frame"),
    ("../../etc/passwd", 0, "weed", None, LabelError, "not a saved frame's name"),
    ("spray/..", 0, "weed", None, LabelError, "not a saved frame's name"),
    ("other/x", 0, "weed", None, LabelError, "not a saved frame's name"),
    (None, 9, "weed", None, NotFound, "has tiles 0..3"),
    (None, 0, "../evil", None, LabelError, "not a usable class name"),
    (None, 0, "a b", None, LabelError, "not a usable class name"),
    (None, 0, "", None, LabelError, "not a usable class name"),
    (None, 0, "new_weed", None, LabelError, "new class: say whether it is a weed"),
    (None, 0, "new_weed", "tree", LabelError, "not one of weed, crop, background"),
    (None, 0, "weed", "crop", LabelError, "is a weed class"),
])
def test_bad_requests_say_what_was_wrong(store, key, tile, label, role, error, words, tmp_path):
    key = key or store.frames()[0].key
    with pytest.raises(error, match=words):
        store.label(key, tile, label, role)
    assert not list((tmp_path / "dataset").rglob("*.png"))


def test_a_broken_sidecar_is_skipped_in_the_list_and_refused_when_asked_for(store, tmp_path):
    k = store.frames()[0].key
    (tmp_path / "saved" / f"{k}.json").write_text('{"schema": 99}')
    assert k not in [f.key for f in store.frames()] and len(store.frames()) == 2
    with pytest.raises(LabelError, match="schema 99"):
        store.frame(k)


# -- weed-train reads the data set as it is ------------------------------------------------
def test_weed_train_reads_the_labelled_set_as_it_is_and_keeps_groups_in_one_split(tmp_path):
    pytest.importorskip("sklearn")
    from train.data import find_groups_file, read_roles
    from train.pipeline import prepare
    from train.runs import DataConfig

    saved = tmp_path / "saved"
    runs = [f"r{i}" for i in range(8)]
    for i, run in enumerate(runs):  # 8 passes x 6 frames 10 cm apart: 1 group per lane and pass
        save_frames(saved, run=run, n=6, start_ns=i * 10**12)
    store = LabelStore(saved, tmp_path / "ds", read_manifest(TOY_BUNDLE), group_distance_cm=200.0)
    for f in store.frames():
        for i, t in enumerate(f.sidecar.tiles):
            store.label(f.key, i, ("wild_oat" if f.sidecar.frame % 2 else "weed") if t.lane else "crop",
                        "weed" if t.lane and f.sidecar.frame % 2 else None)
    ds = tmp_path / "ds"
    assert find_groups_file(ds) == ds / GROUPS_FILE
    dc = DataConfig(data=ds, roles_file=ds / ROLES_FILE, background="none", val_fraction=0.25, test_fraction=0.25)
    prep = prepare(dc, progress=False)
    assert prep.labels == ["crop", "weed", "wild_oat"] and prep.groups_file == str(ds / GROUPS_FILE)
    assert prep.roles.weed == ("weed", "wild_oat") and prep.roles.crop == ("crop",)
    assert len(prep.samples) == 8 * 6 * 4
    by_group: dict[str, set[str]] = {}
    for s in prep.samples:
        assert not s.group.startswith("photo:"), "every labelled tile has its group"
        by_group.setdefault(s.group, set()).add(s.split)
    assert len(by_group) == 8 * 2  # per pass and lane (a 2 m cell holds the whole 50 cm pass)
    assert all(len(splits) == 1 for splits in by_group.values())  # no group straddles splits
    assert {sp for splits in by_group.values() for sp in splits} == {"train", "val", "test"}
    assert read_roles(prep.labels, ds / ROLES_FILE).background == ()


# -- the pages ------------------------------------------------------------------------------
@pytest.fixture
def client(store):
    flask = pytest.importorskip("flask")
    from edge.web.labelling import make_blueprint

    app = flask.Flask(__name__)
    app.register_blueprint(make_blueprint(store))
    return app.test_client()


def test_the_list_page_links_every_frame(client, store):
    r = client.get("/labels/")
    assert r.status_code == 200 and r.mimetype == "text/html"
    html = r.get_data(as_text=True)
    for f in store.frames():
        assert f'data-key="{f.key}"' in html and f"/labels/frame/{f.key}" in html
    assert html.count('class="frame"') == 3 and 'name="csrf-token"' in html
    assert [f["key"] for f in client.get("/labels/api/frames").get_json()["frames"]] == [f.key for f in store.frames()]


def test_the_frame_page_shows_its_tiles_and_the_choices(client, store):
    k = store.frames()[0].key
    html = client.get(f"/labels/frame/{k}").get_data(as_text=True)
    for i in range(4):
        assert f'data-tile="{i}"' in html and f"/labels/tile/{k}/{i}.png" in html
    assert len(re.findall(r'<button type="button" class="tile[ "]', html)) == 4
    for name in ("weed", "crop", "soil"):  # the generic choices (soil: the bundle's background label)
        assert f'data-label="{name}"' in html
    assert 'id="new-label"' in html and 'id="new-role"' in html and 'id="add-label"' in html
    assert "labels.js" in html and f'data-post="/labels/api/frame/{k}/tile/"' in html  # + the tile's index
    png = client.get(f"/labels/tile/{k}/3.png")
    assert png.status_code == 200 and png.mimetype == "image/png"
    assert cv2.imdecode(np.frombuffer(png.data, np.uint8), cv2.IMREAD_COLOR).shape == (24, 32, 3)
    jpg = client.get(f"/labels/image/{k}.jpg")
    assert jpg.status_code == 200 and jpg.data[:2] == b"\xff\xd8"
    assert client.get("/labels/static/labels.js").status_code == 200


def test_labelling_a_tile_and_a_new_class_over_http(client, store, tmp_path):
    k = store.frames()[0].key
    r = client.post(f"/labels/api/frame/{k}/tile/1", json={"label": "weed"})
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["path"] == f"weed/{LabelStore.tile_file(k, 1)}" and r.get_json()["role"] == "weed"
    r = client.post(f"/labels/api/frame/{k}/tile/2", json={"label": "field_bindweed", "role": "weed"})
    assert r.status_code == 200 and r.get_json()["new_class"] is True
    assert (tmp_path / "dataset" / "field_bindweed" / LabelStore.tile_file(k, 2)).is_file()
    html = client.get(f"/labels/frame/{k}").get_data(as_text=True)
    assert 'data-label="field_bindweed"' in html  # the new class is offered from now on
    assert client.get(f"/labels/api/frame/{k}").get_json()["labels"] == {"1": "weed", "2": "field_bindweed"}


@pytest.mark.parametrize("body, words", [
    (None, "send a JSON object"),
    ([1, 2], "send a JSON object"),
    ({}, 'no "label"'),
    ({"label": 3}, 'no "label"'),
    ({"label": "x/y"}, "not a usable class name"),
    ({"label": "brand_new"}, "new class"),
    ({"label": "brand_new", "role": "tree"}, "not one of weed, crop, background"),
    ({"label": "brand_new", "role": 1}, "role"),
    ({"label": "crop", "role": "weed"}, "is a crop class"),
])
def test_bad_input_is_400_with_a_clear_message(client, store, body, words, tmp_path):
    k = store.frames()[0].key
    r = (client.post(f"/labels/api/frame/{k}/tile/0", data="label=weed") if body is None
         else client.post(f"/labels/api/frame/{k}/tile/0", json=body))
    assert r.status_code == 400 and words in r.get_json()["error"]
    assert not list((tmp_path / "dataset").rglob("*.png"))


@pytest.mark.parametrize("url", [
    "/labels/frame/spray/..%2F..%2F..%2Fetc%2Fpasswd",
    "/labels/frame/..%2Fsaved/x",
    "/labels/image/spray/..%2F..%2Fsecret.jpg",
    "/labels/image/%2E%2E/%2E%2E.jpg",
    "/labels/tile/spray/..%2Fx/0.png",
    "/labels/frame/spray/..",
])
def test_path_traversal_is_refused(client, url, tmp_path):
    (tmp_path / "secret.jpg").write_bytes(b"\xff\xd8 secret")
    r = client.get(url)
    assert r.status_code in (400, 404)
    assert b"secret" not in r.data.replace(b"secret.jpg", b"")


def test_a_symlink_planted_in_the_saved_frames_reaches_nothing_outside(client, store, tmp_path):
    """A saved frame whose .jpg (or .json) is a symlink to a file outside the folder: refused, not served."""
    secret = tmp_path / "outside.txt"
    secret.write_bytes(b"\xff\xd8 secret outside")
    k = store.frames()[0].key
    frames = tmp_path / "saved"
    (frames / f"{k}.json").rename(frames / "spray" / "evil.json")
    (frames / "spray" / "evil.jpg").symlink_to(secret)
    for url in ("/labels/image/spray/evil.jpg", "/labels/tile/spray/evil/0.png", "/labels/frame/spray/evil"):
        r = client.get(url)
        assert r.status_code in (400, 404) and b"secret" not in r.data, url
    assert all(f.key != "spray/evil" for f in store.frames())


def test_a_class_differing_only_in_case_is_refused_and_a_bad_api_address_is_json(client, store):
    """Weed and weed are two folders on Linux and one on a FAT stick or a Mac: refused. No route (tile -1): JSON."""
    k = store.frames()[0].key
    r = client.post(f"/labels/api/frame/{k}/tile/0", json={"label": "Weed"})
    assert r.status_code == 400 and "only in case: use 'weed'" in r.get_json()["error"]
    assert client.post(f"/labels/api/frame/{k}/tile/0", json={"label": "Thistle", "role": "weed"}).status_code == 200
    r = client.post(f"/labels/api/frame/{k}/tile/0", json={"label": "thistle", "role": "weed"})
    assert r.status_code == 400 and "use 'Thistle'" in r.get_json()["error"]
    r = client.post(f"/labels/api/frame/{k}/tile/-1", json={"label": "weed"})
    assert r.status_code == 404 and "no such API address" in r.get_json()["error"]


def test_a_sidecar_is_read_again_only_when_it_changed(store, tmp_path):
    """The frame list parses every sidecar once and again only after its file changed (mtime or size)."""
    import os

    first = store.frames()
    assert [f.sidecar for f in store.frames()] == [f.sidecar for f in first]  # the same values from the cache
    k = first[0].key
    side = tmp_path / "saved" / f"{k}.json"
    doc = json.loads(side.read_text())
    doc["run"] = "a-later-run"
    side.write_text(json.dumps(doc))
    os.utime(side, ns=(side.stat().st_atime_ns, side.stat().st_mtime_ns + 1_000_000))
    assert store.frame(k).sidecar.run == "a-later-run"
    side.write_text("{not json")
    assert all(f.key != k for f in store.frames())  # a sidecar broken since: skipped, not served from the cache


@pytest.mark.parametrize("box", [[40, 0, 32, 24], [0, 30, 32, 24], [64, 48, 8, 8]])
def test_a_box_reaching_outside_its_image_is_refused_not_cropped(client, store, tmp_path, box):
    """A sidecar beside another image (resized, replaced): a cropped tile would be labelled as one it never was."""
    k = store.frames()[0].key
    side = tmp_path / "saved" / f"{k}.json"
    doc = json.loads(side.read_text())
    doc["tiles"][0]["box"] = box
    side.write_text(json.dumps(doc))
    r = client.post(f"/labels/api/frame/{k}/tile/0", json={"label": "weed"})
    assert r.status_code == 400 and "reaches outside the 64x48 image" in r.get_json()["error"]
    written = lambda: [p for p in (tmp_path / "dataset").rglob("*") if p.is_file() and p.suffix != ".csv"]  # noqa: E731
    assert written() == []
    assert client.post(f"/labels/api/frame/{k}/tile/1", json={"label": "weed"}).status_code == 200  # its other tiles
    assert len(written()) == 1


def test_posting_outside_the_frames_folder_is_refused(client, store, tmp_path):
    r = client.post("/labels/api/frame/spray/..%2F..%2Fx/tile/0", json={"label": "weed"})
    assert r.status_code in (400, 404)
    r = client.post("/labels/api/frame/spray/..x/tile/0", json={"label": "weed"})
    assert r.status_code == 400 and "not a saved frame's name" in r.get_json()["error"]
    assert client.post("/labels/api/frame/spray/nope/tile/0", json={"label": "weed"}).status_code == 404
    k = store.frames()[0].key
    assert client.post(f"/labels/api/frame/{k}/tile/99", json={"label": "weed"}).status_code == 404


def test_labels_and_names_from_files_are_html_escaped(tmp_path):
    flask = pytest.importorskip("flask")
    from edge.web.labelling import make_blueprint

    keys = save_frames(tmp_path / "saved", source=EVIL, n=1)
    side = tmp_path / "saved" / f"{keys[0]}.json"
    doc = json.loads(side.read_text())
    doc["tiles"][0]["label"] = EVIL
    doc["run"] = EVIL
    side.write_text(json.dumps(doc))
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / ROLES_FILE).write_text(f'class,role\n"{EVIL}",weed\nok_class,weed\n')
    app = flask.Flask(__name__)
    app.register_blueprint(make_blueprint(LabelStore(tmp_path / "saved", tmp_path / "ds")))
    c = app.test_client()
    for url in ("/labels/", f"/labels/frame/{keys[0]}"):
        html = c.get(url).get_data(as_text=True)
        assert EVIL not in html and "&lt;script&gt;" in html, url
    err = c.get("/labels/frame/spray/%3Cscript%3E").get_data(as_text=True)
    assert "<script>" not in err


@pytest.mark.parametrize("given", ["tok-123", lambda: "tok-123"], ids=["value", "function"])
def test_the_page_sends_the_csrf_token_from_the_app(tmp_path, store, given):
    """The web view's app gives ``csrf_token`` (a value or a function); the page puts it in its meta tag for
    labels.js, which sends it back on every POST."""
    flask = pytest.importorskip("flask")
    from edge.web.labelling import make_blueprint

    app = flask.Flask(__name__)
    app.register_blueprint(make_blueprint(store))
    app.context_processor(lambda: {"csrf_token": given})
    html = app.test_client().get(f"/labels/frame/{store.frames()[0].key}").get_data(as_text=True)
    assert '<meta name="csrf-token" content="tok-123">' in html
    js = (Path(__file__).resolve().parents[2] / "edge" / "web" / "static" / "labels.js").read_text()
    assert '"X-CSRF-Token": csrf' in js and "innerHTML" not in js


def test_the_store_from_the_config(tmp_path):
    from edge.labelling.config import LabellingConfig
    from edge.labelling.store import open_store

    save_frames(tmp_path / "saved", n=1)
    assert open_store(LabellingConfig(), str(tmp_path / "saved")) is None  # no data set: labelling off
    cfg = LabellingConfig(dataset=str(tmp_path / "ds"), group_distance_cm=10.0, group_window_s=5.0)
    store = open_store(cfg, str(tmp_path / "saved"), read_manifest(TOY_BUNDLE))
    assert len(store.frames()) == 1 and (tmp_path / "ds").is_dir()
    assert (store.group_distance_cm, store.group_window_ns) == (10.0, 5_000_000_000)
    assert open_store(cfg.model_copy(update={"frames": str(tmp_path / "none")}), str(tmp_path / "saved")).frames() == []
    with pytest.raises(ConfigError, match="saved frames"):
        open_store(cfg, "")


def _with(side: Path, change) -> None:
    d = json.loads(side.read_text())
    change(d)
    side.write_text(json.dumps(d))  # json.dumps writes Infinity/NaN as the attack's files held them


@pytest.mark.parametrize("change", [
    lambda d: d.update(t_mono_ns=float("inf")),
    lambda d: d.update(frame=float("inf")),
    lambda d: d["tiles"][0].update(box=[0, 0, float("inf"), 24]),
    lambda d: d["tiles"][0].update(ground_cm=[float("nan"), 1.0]),
    lambda d: d.update(distance_cm=float("inf")),
], ids=["t-inf", "frame-inf", "box-inf", "ground-nan", "distance-inf"])
def test_a_sidecar_with_a_number_that_is_not_finite_is_skipped_and_warned_about_once(change, client, store, tmp_path,
                                                                                    caplog):
    k = store.frames()[0].key
    _with(tmp_path / "saved" / f"{k}.json", change)
    with caplog.at_level("WARNING"):
        for _ in range(3):
            r = client.get("/labels/api/frames")
            assert r.status_code == 200 and k not in [f["key"] for f in r.get_json()["frames"]]
    assert sum("skipped" in rec.getMessage() for rec in caplog.records) == 1  # not once a page load
    assert client.post(f"/labels/api/frame/{k}/tile/0", json={"label": "weed"}).status_code == 400


def test_a_ground_place_past_any_number_falls_back_to_the_time_group(store, tmp_path):
    k = store.frames()[0].key
    _with(tmp_path / "saved" / f"{k}.json", lambda d: d.update(distance_cm=1e308))
    _with(tmp_path / "saved" / f"{k}.json", lambda d: [t.update(ground_cm=[1e308, 1e308]) for t in d["tiles"]])
    done = store.label(k, 1, "weed")
    assert "/t" in done.group


@pytest.mark.parametrize("spoil, words", [
    (lambda ds: (ds / "roles.csv").write_bytes(b"class,role\nma\xefze,crop\n"), "roles.csv cannot be read"),
    (lambda ds: (ds / "groups.csv").write_text("path,group\n" + "x" * 200_000 + ",g\n"), "groups.csv cannot be read"),
    (lambda ds: (ds / "weed").write_text("a file where the class folder goes"), "cannot write to the labelling data"),
    (lambda ds: (ds / "groups.csv").write_text("path,grp\nweed/a.png,x\n"), "groups.csv has no group column"),
    (lambda ds: (ds / "roles.csv").write_text("name,role\nweed,weed\n"), "roles.csv has no class column"),
], ids=["roles-latin1", "groups-huge-field", "class-folder-a-file", "groups-no-group-column", "roles-no-class-column"])
def test_a_data_set_that_cannot_be_used_is_503_with_the_store_s_message(spoil, words, client, store, tmp_path):
    k = store.frames()[0].key
    ds = tmp_path / "dataset"
    ds.mkdir(exist_ok=True)
    spoil(ds)
    r = client.post(f"/labels/api/frame/{k}/tile/1", json={"label": "weed"})
    assert r.status_code == 503 and words in r.get_json()["error"], r.get_json()
    if "column" in words:  # refused before any write: no tile without its group
        assert not list(ds.glob("*/*.png"))


def test_an_empty_groups_or_roles_file_is_a_data_set_without_rows(store, tmp_path):
    ds = tmp_path / "dataset"
    ds.mkdir(exist_ok=True)
    (ds / "groups.csv").write_text("")
    (ds / "roles.csv").write_text("")
    done = store.label(store.frames()[0].key, 1, "weed")
    assert done.group and "weed" in (ds / "roles.csv").read_text() and done.path in (ds / "groups.csv").read_text()


def test_a_sidecar_the_system_could_not_read_once_is_read_again(store, monkeypatch):
    """A read refused by the system (too many open files, an SD card's read error) is not remembered as a broken
    sidecar: the frame is back in the list once the read works."""
    import edge.labelling.store as store_module
    from edge.core.files import FileRefused

    real = store_module.read_regular
    calls = {"n": 0}

    def flaky(path, cap):
        calls["n"] += 1
        if calls["n"] == 1:
            raise FileRefused("cannot be read (Too many open files)", io_error=True)
        return real(path, cap)

    monkeypatch.setattr(store_module, "read_regular", flaky)
    assert len(store.frames()) == 2  # the first read failed: that frame left out this time
    assert len(store.frames()) == 3
