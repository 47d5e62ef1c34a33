import subprocess
import sys

import numpy as np
import pytest

from edge.bundle import load_bundle
from edge.inference import Classifier
from edge.inference.preprocess import Preprocessor, crop_box
from tests.conftest import BLUE, BROWN, GREEN, TOY_BUNDLE, solid


@pytest.mark.parametrize("variant", [None, "float32"])
@pytest.mark.parametrize("colour, label", [(GREEN, "weed"), (BLUE, "crop"), (BROWN, "soil")])
def test_toy_model_classifies_known_colours(variant, colour, label):
    with Classifier(load_bundle(TOY_BUNDLE, variant=variant), num_threads=1) as c:
        s = c.classify(solid(colour, 90, 160))
        assert s.top[0] == label and s.top[1] > 0.9
        assert s.probs.dtype == np.float32 and abs(float(s.probs.sum()) - 1.0) < 0.02
        assert s.inference_ns > 0 and s.preprocess_ns > 0


def test_rgb_frames_are_not_swapped_twice():
    c = Classifier(TOY_BUNDLE, num_threads=1)
    bgr = solid(BLUE)
    rgb = bgr[..., ::-1].copy()
    assert c.classify(bgr, "BGR").top[0] == "crop"
    assert c.classify(rgb, "RGB").top[0] == "crop"
    assert c.classify_rgb(rgb).argmax() == 1


def test_input_buffer_is_reused():
    c = Classifier(TOY_BUNDLE, num_threads=1)
    a = c.preprocess(solid(GREEN))
    b = c.preprocess(solid(BROWN, 100, 30))
    assert a is b and a.shape == (1, 32, 32, 3) and a.dtype == np.uint8


@pytest.mark.parametrize("h, w, box", [(100, 200, (0, 100, 50, 150)), (200, 100, (50, 150, 0, 100)), (64, 64, (0, 64, 0, 64))])
def test_centre_crop_box(h, w, box):
    assert crop_box(h, w, 32, 32) == box


def test_centre_crop_ignores_the_sides():
    img = solid(BROWN, 100, 300)
    img[:, 100:200] = GREEN  # only the centre is weed
    crop = Preprocessor(32, 32, "center_crop", "RGB", np.uint8)
    stretch = Preprocessor(32, 32, "stretch", "RGB", np.uint8)
    pad = Preprocessor(32, 32, "pad", "RGB", np.uint8)
    assert crop(img)[0, :, :, 1].min() == 160  # the crop is all green
    assert stretch(img)[0, :, :, 1].mean() < 120  # sides dilute the green
    p = pad(img)
    assert p[0, 0, 0].tolist() == [0, 0, 0]  # letterbox bars


def test_quantised_input_uses_tensor_scale_and_zero_point():
    pre = Preprocessor(4, 4, "stretch", "RGB", np.int8, scale=2.0, zero_point=-128)
    out = pre(solid((100, 100, 100), 4, 4))
    assert out.dtype == np.int8 and int(out[0, 0, 0, 0]) == -78


def test_import_edge_does_not_load_tensorflow():
    code = ("import sys, edge, edge.cli, edge.pipeline, edge.inference, edge.bundle, edge.config; "
            "from edge.inference import Classifier; Classifier(%r, 1); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'train')]; "
            "assert not bad, bad" % str(TOY_BUNDLE))
    subprocess.run([sys.executable, "-c", code], check=True)


def test_runtime_chain_reports_which_runtime(monkeypatch):
    from edge.errors import RuntimeMissingError
    from edge.inference.runtime import runtime_info

    assert runtime_info().name == "ai_edge_litert"
    monkeypatch.setenv("WEED_DETECTOR_RUNTIME", "nonsense")
    with pytest.raises(RuntimeMissingError, match="not a known runtime"):
        Classifier(TOY_BUNDLE, 1)
