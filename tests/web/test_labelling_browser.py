"""The labelling flow in a real headless Chromium against a real ``edge-run --web`` (issue 16).

``edge-run`` runs per lane on the shipped sample pass, saving frames (``--save-triggers`` with
``--sample-every``) into the test's folder, with ``[labelling] dataset`` there too. The browser opens
``/labels``, opens a saved frame, labels three of its tiles — ``weed``, ``crop`` and a new class
(``wild_oat``, role weed) — waits for ``#status`` to say so each time, then the data set folder must
hold the three tiles as PNGs in their class folders and ``groups.csv`` must list them.
"""

from __future__ import annotations

import csv

import cv2
import pytest

from tests.web.conftest import REPO, wait_for

PASS = REPO / "samples" / "field_pass.avi"
PASS_CONFIG = REPO / "samples" / "field_pass.toml"


@pytest.mark.slow
def test_labelling_flow_labels_three_tiles(browser, edge_run_web, tmp_path):
    from selenium.webdriver.common.by import By

    saved, dataset = tmp_path / "saved", tmp_path / "dataset"
    config = tmp_path / "labelling.toml"
    config.write_text(PASS_CONFIG.read_text() + f'\n[labelling]\ndataset = "{dataset}"\n')
    run = edge_run_web("--video", str(PASS), "--realtime", "--loop", "--threads", "1",
                       "--save-triggers", str(saved), "--sample-every", "0.2", config=str(config))
    wait_for(lambda: list(saved.glob("*/*.json")), "a saved frame with its sidecar", run.proc, log=run.log)

    browser.get(run.url + "labels/")  # 127.0.0.1 without a token: no login
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "li.frame[data-key]"), "the saved frames listed",
             run.proc, log=run.log)
    item = browser.find_elements(By.CSS_SELECTOR, "li.frame[data-key]")[0]
    key = item.get_attribute("data-key")
    item.find_element(By.CSS_SELECTOR, "a.frame-link").click()
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "button.tile[data-tile]"), "the frame's tiles",
             run.proc, log=run.log)
    tiles = browser.find_elements(By.CSS_SELECTOR, "button.tile[data-tile]")
    assert len(tiles) >= 3, f"{key}: {len(tiles)} tiles, expected a per-lane frame with at least 3"
    status = lambda: browser.find_element(By.ID, "status")  # noqa: E731

    def label(tile, name: str, role: str, new: bool = False) -> str:
        tile.click()
        wait_for(lambda: tile.get_attribute("aria-pressed") == "true", f"tile {tile.get_attribute('data-tile')} "
                 "selected", run.proc, log=run.log)
        if new:
            browser.find_element(By.ID, "new-label").send_keys(name)
            browser.find_element(By.CSS_SELECTOR, f'#new-role option[value="{role}"]').click()
            browser.find_element(By.ID, "add-label").click()
        else:
            browser.find_element(By.CSS_SELECTOR, f'button.label[data-label="{name}"]').click()
        i = tile.get_attribute("data-tile")
        wait_for(lambda: status().text.startswith(f"Tile {i} is {name} ({role}):"), f"tile {i} labelled {name}",
                 run.proc, log=run.log)
        assert "error" not in (status().get_attribute("class") or "")
        assert tile.find_element(By.CSS_SELECTOR, ".tile-label").text == name
        assert "labelled" in tile.get_attribute("class")
        return i

    wanted = {label(tiles[0], "weed", "weed"): "weed", label(tiles[1], "crop", "crop"): "crop",
              label(tiles[2], "wild_oat", "weed", new=True): "wild_oat"}
    assert browser.find_elements(By.CSS_SELECTOR, 'button.label[data-label="wild_oat"][data-role="weed"]')

    kind, stem = key.split("/", 1)
    paths = {f"{lab}/{kind}-{stem}-t{i}.png" for i, lab in wanted.items()}
    on_disk = {p.relative_to(dataset).as_posix() for p in dataset.glob("*/*.png")}
    assert on_disk == paths
    for p in paths:
        img = cv2.imread(str(dataset / p))
        assert img is not None and img.size > 0, p
    with (dataset / "groups.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["path"] for r in rows} == paths and all(r["group"] for r in rows)
    with (dataset / "roles.csv").open(newline="") as fh:
        roles = {r["class"]: r["role"] for r in csv.DictReader(fh)}
    assert roles.get("wild_oat") == "weed" and roles.get("crop") == "crop"
