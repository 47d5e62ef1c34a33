"""The live page in a real headless Chromium against a real ``edge-run --web`` on the shipped sample pass.

It logs in with the token, then checks what one glance must show: the frame updates, the stats
change, the lanes are drawn on the frame (magenta pixels in the screenshot), and a switch of the
vegetation gate's preset takes effect (the stats say so and the event list logs it). The screenshot
is saved in the test's folder; with ``LIVE_VIEW_SCREENSHOT=docs/live-view.png`` it is also written
there (that is how the README's picture is made).
"""

from __future__ import annotations

import os
import shutil

import cv2
import numpy as np
import pytest

from tests.web.conftest import REPO, wait_for

TOKEN = "browser-test-token-0123456789"
PASS = REPO / "samples" / "field_pass.avi"
PASS_CONFIG = REPO / "samples" / "field_pass.toml"


def _png(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def lane_columns(img: np.ndarray) -> list[int]:
    """x of the columns that are mostly the overlay's lane colour (magenta, after JPEG and scaling)."""
    b, g, r = (img[..., i].astype(int) for i in range(3))
    magenta = (r > 170) & (b > 170) & (g < 110)
    cols = np.flatnonzero(magenta.mean(axis=0) > 0.6)
    groups = np.split(cols, np.flatnonzero(np.diff(cols) > 2) + 1) if cols.size else []
    return [int(grp.mean()) for grp in groups if grp.size]


@pytest.mark.slow
def test_live_page_in_a_browser(browser, edge_run_web, tmp_path):
    from selenium.webdriver.common.by import By

    run = edge_run_web("--video", str(PASS), "--realtime", "--loop", "--threads", "1", token=TOKEN,
                       config=str(PASS_CONFIG))
    browser.get(run.url)
    wait_for(lambda: browser.find_elements(By.ID, "token"), "the login form")
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.ID, "login").click()
    wait_for(lambda: browser.find_elements(By.ID, "stream"), "the live page", run.proc, log=run.log)

    text = lambda el: browser.find_element(By.ID, el).text  # noqa: E731
    first = wait_for(lambda: text("frames").isdigit() and int(text("frames")), "the stats", run.proc, log=run.log)
    wait_for(lambda: text("frames").isdigit() and int(text("frames")) > first, "the stats to change", run.proc,
             log=run.log)
    assert text("mode") == "per lane (4 lanes)" and text("camera") == "ok"
    assert text("fps") not in ("", "–") and "ms" in text("latency")

    img = browser.find_element(By.ID, "stream")
    wait_for(lambda: browser.execute_script("return arguments[0].naturalWidth", img) > 0, "a frame", run.proc,
             log=run.log)
    shot = img.screenshot_as_png
    wait_for(lambda: img.screenshot_as_png != shot, "the frame to update", run.proc, log=run.log)
    lanes = lane_columns(_png(img.screenshot_as_png))
    assert len(lanes) >= 3, f"lane boundaries drawn at x = {lanes}: expected the 3 between 4 lanes (and the edges)"

    assert text("sensitivity") == "medium"
    browser.find_element(By.ID, "preset-high").click()
    wait_for(lambda: text("sensitivity") == "high", "the preset switch in the stats", run.proc, log=run.log)
    wait_for(lambda: "vegetation gate medium -> high" in text("events"), "the preset switch in the events",
             run.proc, log=run.log)
    assert "active" in browser.find_element(By.ID, "preset-high").get_attribute("class")

    path = tmp_path / "live-view.png"
    browser.save_screenshot(str(path))
    assert path.stat().st_size > 10_000
    target = os.environ.get("LIVE_VIEW_SCREENSHOT")
    if target:
        shutil.copyfile(path, target)


@pytest.mark.slow
def test_whole_frame_mode_and_file_names_are_text(browser, edge_run_web, tmp_path):
    """Whole-frame mode (one "tile": the frame) on photos whose file name is markup: shown as text."""
    from selenium.webdriver.common.by import By

    from tests.conftest import GREEN, TOY_BUNDLE, solid

    name = '<img src=x onerror="document.title=1">.png'
    images = tmp_path / "photos"
    images.mkdir()
    # One photo only: with two, a page polling once a second at 10 fps can see the same one every time.
    cv2.imwrite(str(images / name), solid(GREEN, 96, 128))
    run = edge_run_web("--model", str(TOY_BUNDLE), "--images", str(images), "--loop", "--realtime", "--fps", "10",
                       "--threads", "1")
    browser.get(run.url)  # 127.0.0.1 without a token: no login
    text = lambda el: browser.find_element(By.ID, el).text  # noqa: E731
    wait_for(lambda: name in text("frame"), "the file name", run.proc, log=run.log)
    assert text("mode") == "whole frame" and browser.title == "weed-detector live"
    assert browser.find_elements(By.CSS_SELECTOR, "#stats img") == []  # the name is text, not an element
    img = browser.find_element(By.ID, "stream")
    wait_for(lambda: browser.execute_script("return arguments[0].naturalWidth", img) > 0, "a frame", run.proc,
             log=run.log)
    assert lane_columns(_png(img.screenshot_as_png)) == []  # no lanes in whole-frame mode
    wait_for(lambda: "spraying" in text("events"), "a spray in the events", run.proc, log=run.log)
