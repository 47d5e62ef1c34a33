"""Frame -> model input, into a buffer allocated once.

Only resizing and colour order happen here; normalisation lives inside the model graph
(the bundle's contract), so the edge feeds raw 0..255 RGB, quantised with the input
tensor's own scale and zero point.
"""

from __future__ import annotations

import cv2
import numpy as np


def crop_box(h: int, w: int, out_h: int, out_w: int) -> tuple[int, int, int, int]:
    """The centred (y0, y1, x0, x1) window of an h x w image with the output's aspect."""
    target = out_w / out_h
    if w / h > target:  # too wide: crop the sides
        cw = max(1, int(round(h * target)))
        x0 = (w - cw) // 2
        return 0, h, x0, x0 + cw
    ch = max(1, int(round(w / target)))
    y0 = (h - ch) // 2
    return y0, y0 + ch, 0, w


class Preprocessor:
    """Resize (centre_crop | stretch | pad), reorder colours and quantise into ``self.buffer``.

    ``buffer`` has the interpreter's input shape (1, H, W, 3) and dtype; each call
    overwrites it and returns it, so no per-frame allocation of the input tensor.
    ``fill`` writes one image into any (H, W, 3) slot, e.g. one row of a batch buffer
    from ``batch_buffer(n)`` (allocated once per batch size by the caller).
    """

    def __init__(self, height: int, width: int, resize: str, model_colour: str, dtype: np.dtype,
                 scale: float = 0.0, zero_point: int = 0):
        self.height, self.width, self.resize = height, width, resize
        self.model_colour = model_colour
        self.dtype = np.dtype(dtype)
        self.buffer = np.zeros((1, height, width, 3), dtype=self.dtype)
        self._rgb = np.zeros((height, width, 3), dtype=np.uint8)  # resized pixels
        # Identity quantisation (scale 1, zero point 0 on uint8) copies pixels as they are.
        self._quant = None
        if self.dtype != np.float32 and scale:
            if not (self.dtype == np.uint8 and abs(scale - 1.0) < 1e-9 and zero_point == 0):
                info = np.iinfo(self.dtype)
                self._quant = (float(scale), int(zero_point), info.min, info.max)
        self._float = np.zeros((height, width, 3), dtype=np.float32) if self._quant or self.dtype == np.float32 else None

    def _resized(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        out = self._rgb
        if self.resize == "center_crop":
            y0, y1, x0, x1 = crop_box(h, w, self.height, self.width)
            view = image[y0:y1, x0:x1]
            interp = cv2.INTER_AREA if (y1 - y0) > self.height else cv2.INTER_LINEAR
            cv2.resize(view, (self.width, self.height), dst=out, interpolation=interp)
        elif self.resize == "stretch":
            interp = cv2.INTER_AREA if h > self.height else cv2.INTER_LINEAR
            cv2.resize(image, (self.width, self.height), dst=out, interpolation=interp)
        else:  # pad: letterbox on black
            s = min(self.width / w, self.height / h)
            nw, nh = max(1, int(round(w * s))), max(1, int(round(h * s)))
            out[:] = 0
            y0, x0 = (self.height - nh) // 2, (self.width - nw) // 2
            out[y0:y0 + nh, x0:x0 + nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
        return out

    def batch_buffer(self, n: int) -> np.ndarray:
        """A zeroed (n, H, W, 3) input buffer of the model's dtype, for ``fill``."""
        if n < 1:
            raise ValueError(f"a batch needs at least one image, got {n}")
        return np.zeros((n, self.height, self.width, 3), dtype=self.dtype)

    def __call__(self, image: np.ndarray, colour_order: str = "BGR") -> np.ndarray:
        self.fill(image, colour_order, self.buffer[0])
        return self.buffer

    def fill(self, image: np.ndarray, colour_order: str, target: np.ndarray) -> None:
        """Preprocess ``image`` into ``target`` (an (H, W, 3) slot of the model's dtype)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 image, got shape {image.shape} dtype {image.dtype}")
        rgb = self._resized(image)
        if colour_order != self.model_colour:
            cv2.cvtColor(rgb, cv2.COLOR_BGR2RGB, dst=rgb)  # the swap is symmetric
        if self._quant is not None:
            scale, zp, lo, hi = self._quant
            np.divide(rgb, scale, out=self._float, casting="unsafe")
            self._float += zp
            np.rint(self._float, out=self._float)
            np.clip(self._float, lo, hi, out=self._float)
            target[...] = self._float
        else:
            target[...] = rgb
