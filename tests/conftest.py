from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"
TOY_BUNDLE = DATA / "bundles" / "colour-toy"

# Mean colours (BGR, as OpenCV frames are) the colour-toy model classifies exactly.
GREEN = (30, 160, 40)  # weed
BLUE = (200, 60, 50)  # crop
BROWN = (40, 70, 110)  # soil


def solid(bgr, h: int = 48, w: int = 64) -> np.ndarray:
    img = np.empty((h, w, 3), np.uint8)
    img[:] = bgr
    return img


@pytest.fixture
def toy_bundle(tmp_path) -> Path:
    """A private copy of the colour-toy bundle that a test may corrupt."""
    dst = tmp_path / "colour-toy"
    shutil.copytree(TOY_BUNDLE, dst)
    return dst


@pytest.fixture
def mock_pins():
    """gpiozero's MockFactory as the default pin factory for the test (real gpiozero devices, fake pins)."""
    gpiozero = pytest.importorskip("gpiozero")
    from gpiozero.pins.mock import MockFactory

    old = gpiozero.Device.pin_factory
    gpiozero.Device.pin_factory = MockFactory()
    yield gpiozero.Device.pin_factory
    gpiozero.Device.pin_factory.reset()
    gpiozero.Device.pin_factory = old
