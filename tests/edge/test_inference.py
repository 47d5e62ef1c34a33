import subprocess
import sys

import numpy as np
import pytest

from edge.inference.bundle import load_bundle
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
    code = ("import sys, edge, edge.cli, edge.loop.runner, edge.inference, edge.inference.bundle, edge.config; "
            "from edge.inference import Classifier; Classifier(%r, 1); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'train')]; "
            "assert not bad, bad" % str(TOY_BUNDLE))
    subprocess.run([sys.executable, "-c", code], check=True)


def test_runtime_chain_reports_which_runtime(monkeypatch):
    from edge.core.errors import RuntimeMissingError
    from edge.inference.runtime import runtime_info

    assert runtime_info().name == "ai_edge_litert"
    monkeypatch.setenv("WEED_DETECTOR_RUNTIME", "nonsense")
    with pytest.raises(RuntimeMissingError, match="not a known runtime"):
        Classifier(TOY_BUNDLE, 1)


def _tiles():
    """Different images: each colour, and mixes (one quantisation step matters on these)."""
    out = [solid(c, 40, 30) for c in (GREEN, BLUE, BROWN)]
    for a, b in ((GREEN, BROWN), (BLUE, GREEN), (BROWN, BLUE)):
        img = solid(a, 40, 30)
        img[:, 15:] = b
        out.append(img)
    rng = np.random.default_rng(3)
    out.append(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8))
    return out


@pytest.mark.parametrize("variant", [None, "float32"])
def test_a_batch_runs_in_power_of_two_invokes_and_matches_one_by_one(variant):
    bundle = load_bundle(TOY_BUNDLE, variant=variant)
    with Classifier(bundle, num_threads=1) as batched, Classifier(bundle, num_threads=1, batch=False) as single:
        tiles = _tiles()
        assert batched.batch_mode == "not tried yet"
        first = batched.classify_many(tiles)  # creates the batch interpreter, checks it against one by one
        assert batched.batch_mode == "batched"
        before = batched.invokes
        many = batched.classify_many(tiles)
        assert batched.invokes - before == 3  # 7 tiles: batches of 4 and 2, and one alone
        count = single.invokes
        one_by_one = single.classify_many(tiles)
        assert single.invokes - count == len(tiles) and single.batch_mode == "one by one"
        step = batched._out_scale or 1e-6  # one output quantisation step
        for a, b, c in zip(many, one_by_one, first):
            assert np.max(np.abs(a.probs - b.probs)) <= step and np.array_equal(a.probs, c.probs)
            assert a.probs.dtype == np.float32 and a.preprocess_ns > 0
        assert [s.top[0] for s in many[:3]] == ["weed", "crop", "soil"]
        assert batched.invoke_only(len(tiles)) > 0 and batched.invokes - before == 3  # invoke_only is not counted


@pytest.mark.parametrize("n, max_batch, sizes", [
    (1, 16, [1]), (2, 16, [2]), (3, 16, [2, 1]), (7, 16, [4, 2, 1]), (12, 16, [8, 4]), (16, 16, [16]),
    (20, 16, [16, 4]), (12, 12, [8, 4]), (14, 4, [4, 4, 4, 2]), (5, 1, [1] * 5)])
def test_batch_sizes_are_powers_of_two_up_to_max_batch(n, max_batch, sizes):
    from edge.inference.classifier import _chunks

    assert _chunks(n, max_batch) == sizes


def test_more_tiles_than_max_batch_run_as_several_batches():
    with Classifier(TOY_BUNDLE, num_threads=1, max_batch=4) as c:
        tiles = _tiles() * 2  # 14 -> 4 invokes of 4, 4, 4, 2 (a 4 and a 2 interpreter)
        c.classify_many(tiles)
        before = c.invokes
        many = c.classify_many(tiles)
        assert c.invokes - before == 4 and sorted(c._batches) == [2, 4]
        assert [s.top[0] for s in many[:3]] == [s.top[0] for s in many[7:10]] == ["weed", "crop", "soil"]


def test_a_number_of_tiles_that_changes_every_frame_makes_each_interpreter_once_and_checks_it_once(monkeypatch):
    """The vegetation gate leaves bare tiles out, so N varies per frame: sizes 2, 4 and 8 cover 1..12."""
    from edge.inference import classifier as mod

    made, checked = [], []
    real_make, real_check = mod.batch_interpreter, mod.Classifier._check_batch
    monkeypatch.setattr(mod, "batch_interpreter", lambda like, path, threads, n: made.append(n) or
                        real_make(like, path, threads, n))
    monkeypatch.setattr(mod.Classifier, "_check_batch", lambda self, b, *a: checked.append(b.n) or
                        real_check(self, b, *a))
    tiles = (_tiles() * 2)[:12]
    with Classifier(TOY_BUNDLE, num_threads=1) as c, Classifier(TOY_BUNDLE, num_threads=1, batch=False) as single:
        for n in (12, 5, 0, 1, 9, 12, 3, 7, 11, 2, 6, 12, 4, 10, 8):
            before, ready = c.invokes, sorted(made) == [2, 4, 8]
            got = c.classify_many(tiles[:n])
            assert [s.top[0] for s in got] == [s.top[0] for s in single.classify_many(tiles[:n])]
            if ready:  # once every size exists, a frame costs one invoke per power of two in n
                assert c.invokes - before == bin(n).count("1")
        assert sorted(made) == sorted(checked) == [2, 4, 8] and c.batch_mode == "batched"


@pytest.mark.parametrize("max_images, max_batch, made_sizes", [
    (12, 16, [2, 4, 8]), (16, 16, [2, 4, 8, 16]), (64, 16, [2, 4, 8, 16]), (7, 16, [2, 4]), (1, 16, []),
    (12, 4, [2, 4])])
def test_warm_up_makes_and_checks_every_batch_size_ahead_of_the_frames(monkeypatch, max_images, max_batch,
                                                                       made_sizes):
    from edge.inference import classifier as mod

    made, checked = [], []
    real_make, real_check = mod.batch_interpreter, mod.Classifier._check_batch
    monkeypatch.setattr(mod, "batch_interpreter", lambda like, path, threads, n: made.append(n) or
                        real_make(like, path, threads, n))
    monkeypatch.setattr(mod.Classifier, "_check_batch", lambda self, b, *a: checked.append(b.n) or
                        real_check(self, b, *a))
    tiles = (_tiles() * 10)[:max_images]
    with Classifier(TOY_BUNDLE, num_threads=1, max_batch=max_batch) as c:
        assert c.warm_up(max_images) == len(made_sizes)
        assert sorted(made) == sorted(checked) == made_sizes and c.invokes == 0  # the warm-up is not counted
        assert c.batch_mode == ("batched" if made_sizes else "not tried yet")
        for n in range(1, max_images + 1):  # every frame after it: no interpreter made, none checked
            c.classify_many(tiles[:n])
        assert sorted(made) == sorted(checked) == made_sizes


def test_warm_up_of_a_model_that_cannot_batch_falls_back_before_the_first_frame(monkeypatch):
    from edge.inference import classifier as mod

    real = mod.batch_interpreter
    monkeypatch.setattr(mod, "batch_interpreter", lambda like, path, threads, n: real(like, path, threads, n + 1))
    with Classifier(TOY_BUNDLE, num_threads=1) as c:
        assert c.warm_up(12) == 0 and c.batch_mode == "one by one" and c.invokes == 0
        assert [s.top[0] for s in c.classify_many(_tiles()[:3])] == ["weed", "crop", "soil"]


def test_a_model_that_cannot_batch_falls_back_to_one_by_one(monkeypatch, caplog):
    from edge.inference import classifier as mod

    real = mod.batch_interpreter

    def wrong_batch(like, path, threads, n):  # a real interpreter whose batch is not the one asked for
        return real(like, path, threads, n + 1)

    monkeypatch.setattr(mod, "batch_interpreter", wrong_batch)
    with Classifier(TOY_BUNDLE, num_threads=1) as c:
        tiles = _tiles()
        with caplog.at_level("WARNING"):
            many = c.classify_many(tiles)
            c.classify_many(tiles)
        assert c.batch_mode == "one by one" and "output of shape [5, 3], not [4, 3]" in c.batch_note
        warnings = [r for r in caplog.records if "one by one" in r.getMessage()]
        assert len(warnings) == 1  # said once
        before = c.invokes
        again = c.classify_many(tiles)
        assert c.invokes - before == len(tiles)
        assert [s.top[0] for s in many] == [s.top[0] for s in again] and many[0].top[0] == "weed"


class _Disagrees:
    """A real batch interpreter whose rows come back in reverse order (results that differ)."""

    def __init__(self, real):
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)

    def get_tensor(self, index):
        return self._real.get_tensor(index)[::-1].copy()


class _InvokeFails(_Disagrees):
    """A real batch interpreter whose invoke raises, as a runtime can (e.g. out of memory)."""

    def get_tensor(self, index):
        return self._real.get_tensor(index)

    def invoke(self):
        raise RuntimeError("tensor arena exhausted\nmore details")


def test_every_batch_size_is_checked_against_one_by_one(monkeypatch, caplog):
    from edge.inference import classifier as mod

    real = mod.batch_interpreter
    monkeypatch.setattr(mod, "batch_interpreter",  # the size-4 batch is right, the size-2 one is not
                        lambda like, path, threads, n: real(like, path, threads, n) if n == 4
                        else _Disagrees(real(like, path, threads, n)))
    with Classifier(TOY_BUNDLE, num_threads=1, max_batch=4) as c, \
            Classifier(TOY_BUNDLE, num_threads=1, batch=False) as single:
        tiles = _tiles()[:6]  # batches of 4 and 2: the 4 is checked already, the 2 is new and wrong
        four = _tiles()[:4]
        assert [s.top[0] for s in c.classify_many(four)] == [s.top[0] for s in single.classify_many(four)]
        assert c.batch_mode == "batched"
        with caplog.at_level("WARNING"):
            got = c.classify_many(tiles)  # a new size (2): checked too, it differs -> one by one for good
        assert c.batch_mode == "one by one" and "batch of 2 differs" in c.batch_note
        want = single.classify_many(tiles)
        assert all(np.array_equal(a.probs, b.probs) for a, b in zip(got, want))
        before = c.invokes
        c.classify_many(tiles)
        assert c.invokes - before == len(tiles)


def test_a_batch_invoke_that_raises_falls_back_for_good_and_redoes_the_chunk(monkeypatch, caplog):
    from edge.inference import classifier as mod

    real = mod.batch_interpreter
    monkeypatch.setattr(mod, "batch_interpreter", lambda *a: _InvokeFails(real(*a)))
    with Classifier(TOY_BUNDLE, num_threads=1) as c, Classifier(TOY_BUNDLE, num_threads=1, batch=False) as single:
        tiles = _tiles()
        with caplog.at_level("WARNING"):
            got = c.classify_many(tiles)  # no exception: the chunk is classified again one by one
        assert c.batch_mode == "one by one"
        assert "the batch interpreter failed on a batch of 4: RuntimeError: tensor arena exhausted" == c.batch_note
        assert [r for r in caplog.records if "one by one" in r.getMessage() and r.levelname == "WARNING"]
        want = single.classify_many(tiles)
        assert all(np.array_equal(a.probs, b.probs) for a, b in zip(got, want))
        before = c.invokes
        c.classify_many(tiles)
        assert c.invokes - before == len(tiles)


def test_batch_buffer_rows_match_the_single_buffer():
    pre = Preprocessor(8, 8, "center_crop", "RGB", np.int8, scale=2.0, zero_point=-128)
    buf = pre.batch_buffer(3)
    imgs = [solid(GREEN, 20, 30), solid(BLUE, 8, 8), solid(BROWN, 30, 10)]
    for k, img in enumerate(imgs):
        pre.fill(img, "BGR", buf[k])
    for k, img in enumerate(imgs):
        assert np.array_equal(buf[k], pre(img, "BGR")[0])
    assert buf.shape == (3, 8, 8, 3) and buf.dtype == np.int8
