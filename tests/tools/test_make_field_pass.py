"""tools/make_field_pass.py: the measuring preset and its config, determinism by seed, truth from the plant
masks, motion blur and sensor noise, and plants from one split of a data set, split as weed-train splits it."""

from __future__ import annotations

import csv
import json
import shlex
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.edge.test_sources import png_declaring

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "make_field_pass.py"
PHOTOS = ROOT / "tests" / "data" / "photos"


@pytest.fixture(scope="module")
def tool():
    """The tool's module (its pure functions), imported from tools/ as the script imports its neighbour."""
    sys.path.insert(0, str(TOOL.parent))
    try:
        import make_field_pass
    finally:
        sys.path.remove(str(TOOL.parent))
    return make_field_pass


def run(*args, cwd=None):
    proc = subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True, timeout=300,
                          cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def frames(path):
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, f = cap.read()
        if not ok:
            return out, cap.get(cv2.CAP_PROP_FPS)
        out.append(f)


def make(tmp_path, name, *extra):
    out, truth, conf = tmp_path / f"{name}.avi", tmp_path / f"{name}.jsonl", tmp_path / f"{name}.toml"
    run("--preset", "boom-4x10cm", "--out", out, "--truth", truth, "--config-out", conf, *extra)
    return out, truth, conf


# a 1 m pass at 10 km/h with the preset: 12 frames of 640x480
SHORT = ("--length-m", "1", "--speed-kmh", "10")


def test_the_preset_is_the_issue_geometry_and_writes_its_config(tmp_path):
    from edge.config import load_config

    out, truth, conf = make(tmp_path, "p", *SHORT)
    c = load_config(conf).spray
    assert (c.lanes, c.footprint_across_cm, c.footprint_along_cm, c.nozzle_distance_cm) == (4, 40.0, 30.0, 50.0)
    assert (c.valve_open_lag_ms, c.valve_close_lag_ms, c.speed_kmh) == (30.0, 30.0, 10.0)
    assert c.log_jsonl == str(tmp_path / "p_spray.jsonl")
    video, fps = frames(out)
    # 1 m at 277.8 cm/s is 10.8 frame periods: 11, so 12 frames
    assert fps == 30.0 and len(video) == 12 and video[0].shape == (480, 640, 3)
    plants = [json.loads(x) for x in truth.read_text().splitlines()]
    assert len(plants) == 6 and sorted(p["kind"] for p in plants).count("crop") == 2  # 6 per m, 1 in 4 (1.5 -> 2)
    # the full preset: a 10 m pass, 60 plants of which 15 crops (only the truth is checked: --length-m is its own)
    assert run("--preset", "boom-4x10cm", "--speed-kmh", "15", "--out", tmp_path / "l.avi", "--truth",
               tmp_path / "l.jsonl").strip().endswith(f"a 10.0 m pass at 15 km/h; 60 plants (45 weeds) in "
                                                      f"{tmp_path / 'l.jsonl'}")
    # the command line wins over the preset
    _, _, conf2 = make(tmp_path, "q", *SHORT, "--nozzle-cm", "70", "--lanes", "2")
    assert (load_config(conf2).spray.nozzle_distance_cm, load_config(conf2).spray.lanes) == (70.0, 2)


def test_same_seed_same_pass_other_seed_other_pass(tmp_path):
    a = make(tmp_path, "a", *SHORT, "--seed", "3", "--blur-px", "7", "--noise", "6")
    b = make(tmp_path, "b", *SHORT, "--seed", "3", "--blur-px", "7", "--noise", "6")
    c = make(tmp_path, "c", *SHORT, "--seed", "4", "--blur-px", "7", "--noise", "6")
    assert a[1].read_bytes() == b[1].read_bytes() != c[1].read_bytes()
    fa, fb, fc = frames(a[0])[0], frames(b[0])[0], frames(c[0])[0]
    assert len(fa) == len(fb) == len(fc) == 12
    assert all(np.array_equal(x, y) for x, y in zip(fa, fb))
    assert not any(np.array_equal(x, y) for x, y in zip(fa, fc))
    # blur and noise change the frames, not the truth
    clean = make(tmp_path, "clean", *SHORT, "--seed", "3")
    assert clean[1].read_bytes() == a[1].read_bytes()
    assert not np.array_equal(frames(clean[0])[0][5], fa[5])


@pytest.mark.parametrize("rows, y0, centre, length", [
    ((10, 19), 100, 50 - 115 / 16, 10 / 16),  # rows 110..119 of the strip: 43.125 .. 42.5 cm
    ((0, 127), 0, 50 - 4.0, 8.0),  # the whole 8 cm square
    ((5, 5), 16, 50 - 21.5 / 16, 1 / 16),  # one row
])
def test_mask_extent(tool, rows, y0, centre, length):
    mask = np.zeros((128, 128), bool)
    mask[rows[0]:rows[1] + 1, 60] = True
    mask[rows[0] + (rows[1] - rows[0]) // 2, 3:9] = True  # more pixels inside the extent change nothing
    assert tool.mask_extent(mask, y0, 50.0, 16.0) == pytest.approx((centre, length))


def test_truth_is_the_extent_of_the_pasted_plant_along_travel(tmp_path):
    """In the frame whose centre is nearest to a plant, its green lies within the truth's length_cm around its
    distance_cm (16 px per cm, image top ahead) and fills it: the plant's extent, not the 8 cm photo square."""
    out, truth, _ = make(tmp_path, "m", "--length-m", "2", "--speed-kmh", "3.6", "--fps", "10")  # 10 cm per frame
    video, _ = frames(out)
    plants = [json.loads(x) for x in truth.read_text().splitlines()]
    assert len(plants) == 12 and all(0 < p["length_cm"] <= 8.0 for p in plants)
    assert sum(p["length_cm"] < 7.5 for p in plants) >= 3
    for p in plants:
        i = int(round(p["distance_cm"] / 10.0))
        img = video[i].astype(int)
        x = int((p["lane"] + 0.5) * 160)
        window = img[:, x - 64:x + 64]  # this plant's 8 cm across its lane
        green = ((2 * window[..., 1] - window[..., 2] - window[..., 0]) > 30).sum(axis=1)  # green pixels a row
        rows = 240 - (p["distance_cm"] - 10.0 * i) * 16 + np.array([-1, 1]) * p["length_cm"] * 8  # front, rear
        r0, r1 = int(np.floor(rows[0])) - 3, int(np.ceil(rows[1])) + 3  # JPEG blurs an edge by a pixel or two
        near = green[max(0, r0 - 64):r1 + 64].sum()  # 4 cm beyond it both ways: no other plant is that near
        assert green[max(0, r0):r1].sum() >= 0.97 * near, p  # its green is within the truth's extent ...
        filled = np.flatnonzero(green[max(0, r0):r1] >= 2)
        assert (filled.max() - filled.min()) / 16 >= p["length_cm"] - 0.5, p  # ... and spans it


@pytest.mark.parametrize("px, rows_blurred", [(0, 0), (1, 0), (3, 2), (7, 6)])
def test_motion_blur_smears_along_travel_only(tool, px, rows_blurred):
    across = np.zeros((40, 30, 3), np.uint8)
    across[20:] = 210  # an edge across travel: smeared over px - 1 rows
    out = tool.motion_blur(across, px)
    assert out.shape == across.shape and out.dtype == np.uint8
    column = out[:, 5, 0].astype(int)
    assert int(((column > 0) & (column < 210)).sum()) == rows_blurred
    assert out[:, 5].sum() == pytest.approx(across[:, 5].sum(), rel=0.01)  # nothing lost, only moved
    along = np.zeros((40, 30, 3), np.uint8)
    along[:, 15:] = 210  # an edge along travel: left as it is
    assert np.array_equal(tool.motion_blur(along, px), along)


@pytest.mark.parametrize("sigma", [0.0, 2.0, 6.0, 20.0])
def test_sensor_noise_is_seeded_and_has_its_sigma(tool, sigma):
    img = np.full((120, 160, 3), 128, np.uint8)
    a, b, c = tool.sensor_noise(img, sigma, (1, 5)), tool.sensor_noise(img, sigma, (1, 5)), tool.sensor_noise(
        img, sigma, (1, 6))
    assert np.array_equal(a, b) and a.dtype == np.uint8
    assert np.array_equal(a, c) == (sigma == 0)
    diff = a.astype(float) - 128
    assert diff.std() == pytest.approx(sigma, rel=0.05, abs=0.3) and abs(diff.mean()) < 0.2


# -- plants from one split, as weed-train splits the data ------------------------------------------

@pytest.fixture(scope="module")
def data_set(tmp_path_factory) -> Path:
    """tests/data/photos x 4 rotations (8 photos a class, enough to split in three), with a groups.csv that
    keeps each photo's rotations 0+1 and 2+3 together, and the photos' classes.csv."""
    root = tmp_path_factory.mktemp("set") / "data"
    rows = []
    for photo in sorted(PHOTOS.glob("*/*.jpg")):
        (root / photo.parent.name).mkdir(parents=True, exist_ok=True)
        img = cv2.imread(str(photo))
        for k in range(4):
            name = f"{photo.parent.name}/{photo.stem}_r{k}.png"
            cv2.imwrite(str(root / name), np.rot90(img, k))
            rows.append({"path": name, "class": photo.parent.name, "group": f"{photo.stem}-{k // 2}"})
    with (root / "groups.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "class", "group"])
        w.writeheader()
        w.writerows(rows)
    (root.parent / "classes.csv").write_bytes((PHOTOS / "classes.csv").read_bytes())
    return root


def weed_train_split(words, split):
    """The photos of ``split`` as ``weed-train train WORDS`` splits them: weed-train's parser and data stage."""
    from train.cli import _data_config, build_parser
    from train.pipeline import prepare

    prep = prepare(_data_config(build_parser().parse_args(["train", *words])), progress=False)
    return sorted(f"{it.sample.label}/{it.sample.path.name}" for it in prep.items[split] if it.sample is not None)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [42, 7])
def test_the_split_listing_is_weed_trains_split(data_set, seed):
    words = ["--data", str(data_set), "--roles", str(data_set.parent / "classes.csv"), "--val", "0.25", "--test",
             "0.25", "--seed", str(seed)]
    listed = run("--split", "test", "--split-args", shlex.join(words), "--list-split").split()
    assert listed and sorted(listed) == weed_train_split(words, "test")
    # every similarity group is listed whole or not at all (rotations 0+1 and 2+3 of a photo)
    pairs = {n.replace("_r1", "_r0").replace("_r3", "_r2") for n in listed}
    assert len(listed) == 2 * len(pairs)
    assert set(listed).isdisjoint(weed_train_split(words, "train"))


@pytest.mark.slow
def test_the_split_of_a_bundle_is_the_split_it_was_trained_on(data_set, tmp_path):
    """--split-of reads the bundle's recorded weed-train command (paths from the root it ran in)."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    command = f"weed-train train --data ../{data_set.parent.name}/data --roles ../{data_set.parent.name}/classes.csv " \
              f"--val 0.25 --test 0.25 --input-size 32 --out models --name x"
    (bundle / "metrics.json").write_text(json.dumps({"training": {"command": command}}))
    # the recorded paths are relative to the bundle's folder here (no checkout above it): put the data beside it
    (tmp_path / data_set.parent.name).symlink_to(data_set.parent)
    words = ["--data", str(data_set), "--roles", str(data_set.parent / "classes.csv"), "--val", "0.25", "--test",
             "0.25"]
    want = weed_train_split(words, "val")
    assert sorted(run("--split", "val", "--split-of", bundle, "--list-split", cwd=tmp_path).split()) == want
    # a pass made from it takes its plants from that split only, and says which photo each is
    out, truth, _ = make(tmp_path, "s", *SHORT, "--split", "val", "--split-of", bundle)
    plants = [json.loads(x) for x in truth.read_text().splitlines()]
    assert plants and {p["photo"] for p in plants} <= set(want)
    assert all(p["class"] == p["photo"].split("/")[0] for p in plants)


def test_a_weed_train_data_folder_gives_every_photo_its_role(tmp_path):
    """--images on a weed-train data folder (<class>/<photo>): every photo of it may be a plant, each row names its
    photo; roles from --roles (a background class is never pasted), else the data set's crops; an unreadable photo
    is skipped and said."""
    data = tmp_path / "kept"
    for photo in sorted(PHOTOS.glob("*/*.jpg")):
        (data / photo.parent.name).mkdir(parents=True, exist_ok=True)
        (data / photo.parent.name / photo.name).write_bytes(photo.read_bytes())
    (data / "soil").mkdir()
    (data / "soil" / "bare.jpg").write_bytes(next(PHOTOS.glob("charlock/*.jpg")).read_bytes())
    (data / "maize" / "broken.jpg").write_bytes(b"not a jpeg")
    (data / "maize" / "huge.png").write_bytes(png_declaring(100000, 100000))  # never decoded: 10 gigapixels
    roles = tmp_path / "roles.csv"
    rows = (PHOTOS / "classes.csv").read_text().splitlines()
    rows = [r.replace(",weed,", ",crop,") if r.startswith("charlock,") else r for r in rows] + ["soil,,,,background,1"]
    roles.write_text("\n".join(rows) + "\n")
    extra = ("--images", data, "--density-per-m", "12", "--crop-share", "0.5")
    _, truth, _ = make(tmp_path, "r", *SHORT, *extra, "--roles", roles)
    plants = [json.loads(x) for x in truth.read_text().splitlines()]
    assert len(plants) >= 8 and {p["kind"] for p in plants} == {"weed", "crop"}
    for p in plants:
        assert (data / p["photo"]).is_file() and p["class"] == p["photo"].split("/")[0] != "soil"
        assert p["kind"] == ("crop" if p["class"] in ("charlock", "maize", "common_wheat", "sugar_beet") else "weed")
    proc = subprocess.run([sys.executable, str(TOOL), "--preset", "boom-4x10cm", *SHORT, *map(str, extra),
                           "--out", tmp_path / "d.avi", "--truth", tmp_path / "d.jsonl"],
                          capture_output=True, text=True, timeout=300)  # no --roles: the data set's crops
    assert proc.returncode == 0, proc.stderr
    assert "skipped 2 photo(s) that cannot be used, e.g." in proc.stderr and "broken.jpg" in proc.stderr
    default = [json.loads(x) for x in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert len(default) >= 8 and all(
        p["kind"] == ("crop" if p["class"] in ("maize", "common_wheat", "sugar_beet") else "weed") for p in default)


def test_a_photo_folder_needs_photos_and_roles_go_with_it(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = subprocess.run([sys.executable, str(TOOL), "--images", tmp_path / "empty"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1 and "no <class>__<id>.jpg photos and no class folders in" in proc.stderr
    proc = subprocess.run([sys.executable, str(TOOL), "--split", "test", "--split-args", "--data x", "--roles", "r.csv"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--roles goes with --images" in proc.stderr


def test_a_split_needs_its_data_set(tmp_path):
    proc = subprocess.run([sys.executable, str(TOOL), "--split", "test"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--split goes with --split-of BUNDLE or --split-args ARGS" in proc.stderr
    proc = subprocess.run([sys.executable, str(TOOL), "--split", "test", "--split-args", f"--data {tmp_path / 'none'}",
                           "--list-split"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"make_field_pass: error: data folder {tmp_path / 'none'} does not exist")


def test_a_pass_without_plants_sprays_nothing_end_to_end(tmp_path, capsys):
    """--density-per-m 0: gravel only (with motion blur and sensor noise); edge-run with the shipped model and the
    pass's [spray] config plans no spray, and edge-replay scores nothing sprayed."""
    from edge.cli import main as edge_run
    from edge.tools.replay import main as replay

    out, truth, conf = make(tmp_path, "empty", "--length-m", "2", "--speed-kmh", "10", "--density-per-m", "0",
                            "--blur-px", "7", "--noise", "6")
    assert truth.read_text() == ""
    assert edge_run(["--config", str(conf), "--video", str(out), "-q", "--log-jsonl", str(tmp_path / "f.jsonl")]) == 0
    printed = capsys.readouterr().out
    assert "sprays: 0 planned" in printed
    events = [json.loads(x) for x in (tmp_path / "empty_spray.jsonl").read_text().splitlines()]
    assert {e["event"] for e in events} <= {"pass_start", "pass_end", "speed"}
    lines = [json.loads(x) for x in (tmp_path / "f.jsonl").read_text().splitlines()]
    assert lines and all(lane["cells"]["sprayed"] == 0 for ln in lines for lane in ln["lanes"])
    assert replay(["--config", str(conf), "--spray-log", str(tmp_path / "empty_spray.jsonl"), "--truth",
                   str(truth)]) == 0
    assert "sprayed 0.00 m²" in capsys.readouterr().out


@pytest.mark.parametrize("speed", ["0.5", "150"])
def test_a_speed_the_pass_config_would_refuse_is_a_usage_error(speed, tmp_path):
    """Below [spray] min_speed_kmh (1 by default) the config it writes would never spray: refused before the pass is
    made, not by edge-run after it."""
    out = tmp_path / "p.avi"
    proc = subprocess.run([sys.executable, str(TOOL), "--preset", "boom-4x10cm", "--length-m", "1", "--speed-kmh",
                           speed, "--out", str(out), "--truth", str(tmp_path / "t.jsonl")], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "--speed-kmh is 1..100" in proc.stderr and not out.exists()


@pytest.mark.parametrize("args, words", [
    (["--fps", "inf"], "--fps is 1..240, got inf"),  # inf was an OverflowError traceback
    (["--seconds", "inf"], "--seconds is above 0 and at most 3600, got inf"),
    (["--along-cm", "1e-9"], "--along-cm is 1..1000"),  # tried to allocate 186 TiB
    (["--across-cm", "inf"], "--across-cm is 1..1000"),
    (["--noise", "nan"], "--noise is 0..255, got nan"),  # corrupt frames, accepted
    (["--valve-lag-ms", "nan"], "--valve-lag-ms is 0..2000"),  # written into the config edge-run then refused
    (["--nozzle-cm", "-5"], "--nozzle-cm is 0..10000"),
    (["--truth", "."], "cannot write the --truth file '.': it is a folder"),  # after the video was made
    (["--config-out", "."], "cannot write the --config-out file '.': it is a folder"),
    (["--split", "test", "--split-args", '"x'], "cannot be split into words: No closing quotation"),
    (["--images", ""], "--images: expected a folder of photos, got an empty value"),  # read the current folder
    (["--lanes", "64"], "--lanes 64 on 32x32 frames: a 32x32 frame is too small for 64 lane(s)"),  # edge-run refused it
])
def test_values_that_cannot_make_a_pass_are_refused_when_parsed(tool, args, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        tool.parse_args(["--width", "32", "--height", "32", *args])
    assert e.value.code == 2 and words in capsys.readouterr().err


@pytest.mark.parametrize("args, words", [
    (["--seconds", "0.01"], "the pass would be 0 frame(s)"),  # was exit 0: a -0.2 m pass with 8 plants
    (["--length-m", "1e-9"], "the pass would be 1 frame(s)"),
    (["--length-m", "1000", "--along-cm", "1", "--height", "8192"], "the pass's ground strip would take"),
])
def test_a_pass_that_cannot_be_made_is_one_line_saying_why(tool, args, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert tool.main(["--images", str(PHOTOS), "--width", "32", "--height", "32", "--fps", "5", *args]) == 1
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1 and not list(tmp_path.iterdir())  # no empty video or truth left
