"""The naive loop: the way typical TFLite example scripts classify a camera.

It is the yardstick the pipeline is compared with, on the same frames, in the same
invocation, measured the same way:

- float32 model (the bundle's float32 variant; the main model if it has none);
- one interpreter thread (``num_threads=1``), the runtime ``edge`` would use;
- frames read synchronously in the loop (``cap.read()`` / ``cv2.imread``), no reader thread;
- per-frame allocations: ``cv2.cvtColor`` + ``cv2.resize`` (stretch) + ``astype`` +
  ``np.expand_dims`` on every frame;
- decision: weed probability mass against the bundle's threshold; actuation: the same
  dry-run output, ``set(channel, spray)`` on every frame.

Stage names, timestamps and clocks are the pipeline's (``edge.core.metrics.STAGES``): the
capture timestamp is ``time.monotonic_ns()`` right after the frame is read, as the
pipeline's file sources do, and ``end_to_end`` runs from it to after the output call.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Optional

from edge.tools.bench.frames import FramesSpec, generated_images
from edge.tools.bench.runs import RunSpec, finish, invoke_samples, model_info, result_skeleton, run_id
from edge.tools.bench.system import loadavg
from edge.core.errors import BundleError, SourceError
from edge.core.metrics import STAGES
from edge.sources.config import DEFAULT_MAX_IMAGE_PIXELS
from edge.sources.image_header import ImageRefused, read_image


def float32_bundle(bundle_ref: str):
    """The bundle's float32 export (variant or main model), else its main model."""
    from edge.inference.bundle import load_bundle

    b = load_bundle(bundle_ref)
    if b.manifest.quantization == "float32":
        return b
    for name, v in b.manifest.variants.items():
        if v.quantization == "float32":
            return load_bundle(bundle_ref, variant=name)
    return b


class NaiveFrames:
    """Frames read the simple way, in the loop: ``VideoCapture.read`` / ``imread`` /
    generated images copied. Files start again at the end, as the pipeline's do."""

    def __init__(self, spec: FramesSpec, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS):
        import cv2

        self.spec = spec
        self.max_pixels = max_pixels  # [source] max_image_pixels, as the pipeline run's image source has it
        self._cap = None
        self._files: list[str] = []
        self._pool: list = []
        self._i = 0
        if spec.kind == "video":
            self._cap = cv2.VideoCapture(spec.path)
            if not self._cap.isOpened():
                raise SourceError(f"video file {spec.path} could not be opened", "check the path and the format")
        elif spec.kind == "camera":
            self._cap = cv2.VideoCapture(spec.index)
            if not self._cap.isOpened():
                raise SourceError(f"camera {spec.index} could not be opened",
                                  "check `ls /dev/video*` and that no other program uses it")
            if spec.width and spec.height:
                self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, spec.width)
                self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, spec.height)
            if spec.fps:
                self._cap.set(cv2.CAP_PROP_FPS, spec.fps)
        elif spec.kind == "images":
            from edge.sources.images import is_image_name

            if os.path.isfile(spec.path):
                self._files = [spec.path]
            else:
                self._files = [os.path.join(spec.path, n) for n in sorted(os.listdir(spec.path)) if is_image_name(n)]
            if not self._files:
                raise SourceError(f"image folder {spec.path} contains no images", "point to a folder of images")
        else:
            self._pool = generated_images(spec.width, spec.height, spec.seed)

    def read(self):
        import cv2

        if self._cap is not None:
            ok, image = self._cap.read()
            if not ok and self.spec.kind == "video":
                self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                ok, image = self._cap.read()
            if not ok:
                raise SourceError(f"{self.spec.describe()} delivered no frame", "check the source")
            return image
        if self._files:
            for _ in range(len(self._files)):
                path = self._files[self._i % len(self._files)]
                self._i += 1
                with contextlib.suppress(ImageRefused):  # skipped, as the pipeline's image source skips it
                    return read_image(path, self.max_pixels)
            raise SourceError(f"no image in {self.spec.path} can be used (each unreadable, or over "
                              f"{self.max_pixels / 1e6:g} megapixels)",
                              "replace the corrupt files, or raise [source] max_image_pixels in --config")
        image = self._pool[self._i % len(self._pool)].copy()
        self._i += 1
        return image

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def run_naive(spec: RunSpec) -> dict:
    """Run the naive loop for ``spec`` (threads is always 1) and return its run object."""
    import cv2
    import numpy as np

    from edge.inference.runtime import make_interpreter
    from edge.outputs import DryRunOutputConfig, build_output

    res = result_skeleton(spec)
    res["threads"] = 1
    res["loadavg_start"] = loadavg()
    bundle = float32_bundle(spec.bundle)
    m = bundle.manifest
    res["id"] = run_id("naive_baseline", m.name, bundle.quantization, 1)
    res["model"] = model_info(bundle)
    interp, rt = make_interpreter(str(bundle.model_path), 1)
    res["runtime"] = {"name": rt.name, "version": rt.version, "delegate": rt.delegate}
    inp, outd = interp.get_input_details()[0], interp.get_output_details()[0]
    _, h, w, _ = (int(x) for x in inp["shape"])
    in_dtype = inp["dtype"]
    out_scale, out_zp = outd.get("quantization", (0.0, 0))
    if inp["dtype"] not in (np.float32, np.uint8):
        raise BundleError(f"naive baseline: model input dtype {np.dtype(inp['dtype']).name} is not float32 or uint8",
                          "give the bundle a float32 variant (weed-train train writes one beside the int8 model)")
    weed_idx = [m.labels.index(x) for x in m.weed_labels]
    threshold = m.threshold
    swap = m.input.colour_order == "RGB"
    logits = m.output.kind == "logits"

    from edge.config import load_config

    frames = NaiveFrames(spec.frames, load_config(spec.config).source.max_image_pixels if spec.config
                         else DEFAULT_MAX_IMAGE_PIXELS)
    out = build_output(DryRunOutputConfig())
    by_stage: dict[str, list[float]] = {s: [] for s in STAGES}
    n_total = spec.warmup + spec.n_frames if spec.n_frames is not None else None
    limit_ns = int(spec.seconds * 1e9) if spec.seconds else None
    weed_frames = spray_frames = 0
    t0: Optional[int] = time.perf_counter_ns() if spec.warmup == 0 else None
    t_last: Optional[int] = None
    i = 0
    try:
        while n_total is None or i < n_total:
            ta = time.perf_counter_ns()
            image = frames.read()
            tb = time.perf_counter_ns()
            t_capture = time.monotonic_ns()
            # The typical script: convert, resize, cast, add the batch axis — all new arrays.
            rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if swap else image
            x = np.expand_dims(cv2.resize(rgb, (w, h)).astype(in_dtype), axis=0)
            tc = time.perf_counter_ns()
            interp.set_tensor(inp["index"], x)
            interp.invoke()
            probs = interp.get_tensor(outd["index"])[0]
            if not np.issubdtype(probs.dtype, np.floating) and out_scale:
                probs = (probs.astype(np.float32) - out_zp) * out_scale
            if logits:
                e = np.exp(probs - probs.max())
                probs = e / e.sum()
            td = time.perf_counter_ns()
            weed = float(probs[weed_idx].sum()) >= threshold
            te = time.perf_counter_ns()
            for ch in range(out.channels):
                out.set(ch, weed)
            tf = time.perf_counter_ns()
            t_switched = time.monotonic_ns()
            i += 1
            if i <= spec.warmup:
                if i == spec.warmup:
                    t0 = tf
                continue
            by_stage["capture_wait"].append((tb - ta) / 1e6)
            by_stage["preprocess"].append((tc - tb) / 1e6)
            by_stage["inference"].append((td - tc) / 1e6)
            by_stage["decision"].append((te - td) / 1e6)
            by_stage["actuation"].append((tf - te) / 1e6)
            by_stage["end_to_end"].append(max(0, t_switched - t_capture) / 1e6)
            weed_frames += int(weed)
            spray_frames += int(weed)
            t_last = tf
            if limit_ns is not None and tf - t0 >= limit_ns:
                break
    finally:
        out.close()
        frames.close()
    res["stopped_by"] = "max frames" if n_total is not None and i >= n_total else "time limit"
    n = len(by_stage["end_to_end"])

    def invoke_once() -> int:
        t = time.perf_counter_ns()
        interp.invoke()
        return time.perf_counter_ns() - t

    invoke_ms = invoke_samples(invoke_once, n) if n else []
    res["weed_frames"], res["spray_frames"] = weed_frames, spray_frames
    span = (t_last - t0) if (t_last is not None and t0 is not None) else None
    return finish(res, by_stage, invoke_ms, n, span)
