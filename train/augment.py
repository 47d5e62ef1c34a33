"""Camera-realistic augmentation of training batches, inside the tf.data pipeline.

A camera on a moving boom blurs, adds noise in low light, sees plants off-centre, at
varying scale, cut by tile borders, under sun, shade and cloud; its frames are JPEG or
video-compressed. :class:`Augment` names each of those effects and its strength; a
strength of 0 turns it off. :func:`augment_batches` applies them to the training batches
of a ``tf.data`` pipeline in its parallel ``map`` (graph ops only: no ``numpy_function``,
which holds the GIL); validation and test images never pass through here.

Keras 3's ``MixUp`` and ``CutMix`` are used as they are (off by default). The rest are
small TensorFlow ops below, each a function of the images, a stateless seed and its
strength, so that a run repeats for its seed (Keras' random layers draw from a stateful
generator, and in a parallel map the batches take their draws in whatever order they run):

* :func:`geometry` -- flip, rotation, scale and shift in one affine resampling, the
  ground tile showing where the photo left (Keras' ``RandomFlip``, ``RandomRotation``,
  ``RandomZoom`` and ``RandomTranslation`` resample once each: three bilinear passes, each
  softening the image, at about three times the cost; see docs/training.md);
* :func:`motion_blur` -- a line kernel of random direction and length, and
  :func:`gaussian_blur` -- a Gaussian of random sigma: one depthwise convolution with a
  kernel per image, reflect-padded (Keras' ``RandomGaussianBlur`` draws one sigma pair per
  batch and pads with zeros, which darkens the tile's border);
* :func:`sensor_noise` -- Gaussian noise of a random sigma per image (Keras'
  ``GaussianNoise`` has one fixed sigma for every image);
* :func:`jpeg` -- re-encoding at a random quality (``tf.image.adjust_jpeg_quality``);
* :func:`channel_gains` -- exposure (a gain in stops) and white balance (red and blue
  gains), :func:`gamma` -- the tone curve, :func:`contrast`;
* :func:`saturation`, :func:`haze` (a bright veil), :func:`soil_cast` (the ground's colour
  only, the plants kept), :func:`chroma_shift` (red and blue against green), :func:`low_light`
  (dark, noise and motion blur on the same image);
* :func:`composite` -- plants cut out of the batch's photos by excess green and pasted on
  ground tiles (the training split's background patches and mosaics): one to several per
  tile, rotated, scaled, anywhere in the tile, some cut by its border. A tile that holds a
  weed is a weed tile (its label spread over the weed species pasted); a tile of crops
  alone is a crop tile.

Images are float32 RGB 0..255, (N, S, S, 3), labels one-hot (N, classes); every op keeps
the shape, dtype and range. The ops draw from stateless seeds (one per batch, from the
run's seed); MixUp and CutMix from Keras' generators, seeded from the run's seed, so a run
with either does not repeat exactly.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edge.core.errors import ConfigError
from edge.core.schema import Finite

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

# Chromatic excess green (2g - r - b on r+g+b = 1) above this is "plant": the background
# class (train.background) and the plant cut-outs of composite tiles use the same value.
EXG_THRESHOLD = 0.05

# Class roles as train.evaluate.role_vector numbers them.
WEED, CROP, GROUND = 1, 0, -1


class Augment(BaseModel):
    """Training-only augmentation: each effect's strength, 0 (or False) turns it off.

    Pixel sizes are at the model's input size (the pipeline works on resized images).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    flip: bool = Field(True, description="mirror images at random (with any-angle rotation that is every flip; top-down photos have no up)")
    rotation: Finite = Field(0.5, ge=0, le=0.5, description="rotation, fraction of a full turn either way (0.5 = any angle)")
    scale_min: Finite = Field(0.6, ge=0.3, le=1.0, description="smallest scale of the photo (ground fills around it)")
    scale_max: Finite = Field(1.4, ge=1.0, le=2.0, description="largest scale of the photo")
    translate: Finite = Field(0.25, ge=0, le=0.5,
                              description="the plant lands up to this fraction of the side off the centre (parts may leave the tile)")
    exposure: Finite = Field(0.75, ge=0, le=2, description="exposure change, stops either way (0.75: gain 0.59-1.68)")
    colour_cast: Finite = Field(0.25, ge=0, le=0.5, description="white balance: red and blue gains each up to 1+this (or 1/(1+this))")
    gamma: Finite = Field(0.25, ge=0, le=1, description="tone curve: gamma up to 1+this (or 1/(1+this))")
    contrast: Finite = Field(0.15, ge=0, le=0.9, description="contrast change, fraction either way")
    motion_blur: Finite = Field(9.0, ge=0, le=31, description="motion blur: longest streak in pixels, random direction")
    gaussian_blur: Finite = Field(1.5, ge=0, le=4, description="defocus: largest Gaussian sigma in pixels")
    noise: Finite = Field(8.0, ge=0, le=40, description="sensor noise: largest sigma in grey levels (of 255)")
    jpeg_quality: int = Field(25, ge=0, le=95, description="JPEG re-encoding: lowest quality (up to 95); 0 = off")
    camera_p: Finite = Field(0.3, ge=0, le=1,
                             description="share of images each of motion blur, blur, noise, JPEG, haze and chromatic aberration is applied to")
    composite: Finite = Field(0.25, ge=0, le=1, description="share of tiles replaced by plants pasted on ground from other photos")
    composite_plants: int = Field(3, ge=1, le=6, description="most plants pasted on one composite tile")
    composite_visible: Finite = Field(0.35, ge=0.05, le=1,
                                      description="a plant is pasted only where at least this share of it stays inside the tile")
    sliver: Finite = Field(0.1, ge=0, le=1,
                           description="share of tiles replaced by one plant pasted at a border so that only a sliver of it shows")
    saturation: Finite = Field(0.0, ge=0, le=1,
                               description="saturation: each image's colour about its grey scaled by up to 1+this (or 1/(1+this))")
    haze: Finite = Field(0.0, ge=0, le=0.8,
                         description="haze / low contrast: camera_p of the images blended toward a flat grey-to-white level, up to this fraction")
    soil_cast: Finite = Field(0.0, ge=0, le=0.5,
                              description="colour of the ground only (pixels that are not plant): brightness, red and blue gains each up to 1+this (or 1/(1+this))")
    chroma_shift: Finite = Field(0.0, ge=0, le=8,
                                 description="chromatic aberration: red and blue shifted up to this many pixels in opposite directions, on camera_p of the images")
    low_light: Finite = Field(0.0, ge=0, le=1,
                              description="share of images taken in low light at speed: darkened x0.4-0.75 with sensor noise and motion blur together (up to 1.5x noise, up to motion_blur)")
    mixup: Finite = Field(0.0, ge=0, le=1, description="MixUp alpha (0 = off): every image blended with another, labels too")
    cutmix: Finite = Field(0.0, ge=0, le=1, description="CutMix factor (0 = off): a box of another image pasted, labels by area")

    @classmethod
    def off(cls) -> "Augment":
        """Every effect off (the images pass unchanged)."""
        return cls(flip=False, rotation=0, scale_min=1, scale_max=1, translate=0, exposure=0, colour_cast=0, gamma=0,
                   contrast=0, motion_blur=0, gaussian_blur=0, noise=0, jpeg_quality=0, composite=0, sliver=0)

    @classmethod
    def build(cls, base: "Augment", **over: Any) -> "Augment":
        """``base`` with some strengths changed, checked like a new config (a value out of range: exit 3)."""
        from pydantic import ValidationError

        try:
            return cls.model_validate({**base.model_dump(), **over})
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            raise ConfigError(f"augmentation{' ' + where if where else ''}: {first['msg']}",
                              "see `weed-train train --help` (augmentation) for each option's range") from None

    @classmethod
    def range_of(cls, name: str) -> tuple[float, float]:
        """The (ge, le) bounds of a numeric field."""
        from annotated_types import Ge, Le

        meta = cls.model_fields[name].metadata
        return (next(m.ge for m in meta if isinstance(m, Ge)), next(m.le for m in meta if isinstance(m, Le)))

    def effects(self) -> dict[str, Any]:
        """The effects that are on, with their strengths (the settings that only shape them left out)."""
        off = Augment.off().model_dump()
        shaping = ("camera_p", "composite_plants", "composite_visible")
        return {k: v for k, v in self.model_dump().items() if k not in shaping and v != off[k]}

    def needs_soft_labels(self) -> bool:
        return self.composite > 0 or self.sliver > 0 or self.mixup > 0 or self.cutmix > 0

    def __str__(self) -> str:
        on = self.effects()
        if not on:
            return "off"
        camera = any(k in on for k in ("motion_blur", "gaussian_blur", "noise", "jpeg_quality", "haze", "chroma_shift"))
        extra = [f"camera effects on {self.camera_p:g} of the images each"] if camera else []
        if "composite" in on:
            extra.append(f"up to {self.composite_plants} plants a composite tile, each >= {self.composite_visible:g} visible")
        if "sliver" in on:
            extra.append(f"sliver tiles show < {self.composite_visible:g} of one plant, half crops")
        return ", ".join([f"{k} {v}" for k, v in on.items()] + extra)


def describe_recorded(recorded: dict[str, Any]) -> str:
    """A bundle's recorded augmentation in words; one recorded before these options, as it was."""
    from pydantic import ValidationError

    try:
        return str(Augment.model_validate(recorded))
    except ValidationError:
        return "(the earlier options) " + ", ".join(f"{k} {v}" for k, v in recorded.items())


# --------------------------------------------------------------------------- helpers


def _seeds(seed: tf.Tensor, n: int) -> list[tf.Tensor]:
    """``n`` independent stateless seeds derived from one."""
    import tensorflow as tf

    return [tf.random.experimental.stateless_fold_in(seed, i) for i in range(n)]


def _uniform(seed: tf.Tensor, n: tf.Tensor, lo: float, hi: float) -> tf.Tensor:
    import tensorflow as tf

    return tf.random.stateless_uniform((n,), seed, lo, hi)


def _log_uniform(seed: tf.Tensor, n: tf.Tensor, span: float) -> tf.Tensor:
    """Factors in [1/span, span], uniform in the logarithm (1 when ``span`` is 1)."""
    import tensorflow as tf

    return tf.exp(_uniform(seed, n, -math.log(span), math.log(span)))


def _on_some(images: tf.Tensor, seed: tf.Tensor, p: float, fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]) -> tf.Tensor:
    """``fn(chosen_images, seed)`` on a random share ``p`` of the batch; the others unchanged."""
    import tensorflow as tf

    pick, draw = _seeds(seed, 2)
    idx = tf.where(tf.random.stateless_uniform((tf.shape(images)[0],), pick) < p)
    return tf.cond(
        tf.size(idx) > 0,
        lambda: tf.tensor_scatter_nd_update(images, idx, fn(tf.gather_nd(images, idx), draw)),
        lambda: images,
    )


def _clip(images: tf.Tensor) -> tf.Tensor:
    import tensorflow as tf

    return tf.clip_by_value(images, 0.0, 255.0)


def conv_per_image(images: tf.Tensor, kernels: tf.Tensor) -> tf.Tensor:
    """Convolve each image with its own (K, K) kernel, reflect-padded: one depthwise conv.

    The batch is folded into the channels ((1, H, W, N*C)), so N kernels cost one call.
    """
    import tensorflow as tf

    k = int(kernels.shape[-1])
    pad = k // 2
    shape = tf.shape(images)
    n, h, w, c = shape[0], shape[1], shape[2], images.shape[-1]
    x = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
    x = tf.reshape(tf.transpose(x, [1, 2, 0, 3]), [1, h + 2 * pad, w + 2 * pad, n * c])
    f = tf.repeat(kernels[..., None], c, axis=-1)  # (N, K, K, C)
    f = tf.reshape(tf.transpose(f, [1, 2, 0, 3]), [k, k, n * c, 1])
    y = tf.nn.depthwise_conv2d(x, f, [1, 1, 1, 1], "VALID")
    return tf.transpose(tf.reshape(y, [h, w, n, c]), [2, 0, 1, 3])


def _kernel_grid(k: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Column and row offsets from the centre of a (k, k) kernel."""
    import tensorflow as tf

    r = tf.range(k, dtype=tf.float32) - (k - 1) / 2.0
    v, u = tf.meshgrid(r, r, indexing="ij")
    return u, v


def line_kernels(length: tf.Tensor, angle: tf.Tensor, k: int) -> tf.Tensor:
    """(N, k, k) kernels of a straight streak ``length`` pixels long at ``angle`` radians, summing to 1:
    2k points spread evenly along it, each splatted bilinearly. A length of 1 is the identity."""
    import tensorflow as tf

    u, v = _kernel_grid(k)
    t = (tf.linspace(-0.5, 0.5, 2 * k)[None, :] * (length[:, None] - 1.0))[..., None, None]  # (N, 2k, 1, 1)
    dx, dy = t * tf.cos(angle)[:, None, None, None], t * tf.sin(angle)[:, None, None, None]
    w = tf.reduce_sum(tf.nn.relu(1.0 - tf.abs(u - dx)) * tf.nn.relu(1.0 - tf.abs(v - dy)), axis=1)
    return w / tf.reduce_sum(w, axis=[1, 2], keepdims=True)


def gaussian_kernels(sigma: tf.Tensor, k: int) -> tf.Tensor:
    """(N, k, k) Gaussian kernels of ``sigma`` pixels, summing to 1 (sigma near 0: the identity)."""
    import tensorflow as tf

    u, v = _kernel_grid(k)
    s = tf.maximum(sigma, 0.05)[:, None, None]
    w = tf.exp(-(u * u + v * v) / (2.0 * s * s))
    return w / tf.reduce_sum(w, axis=[1, 2], keepdims=True)


# --------------------------------------------------------------------------- the ops


def motion_blur(images: tf.Tensor, seed: tf.Tensor, max_px: float, p: float) -> tf.Tensor:
    """A share ``p`` of the images streaked along a random direction, 1..``max_px`` pixels long."""
    import tensorflow as tf

    if max_px <= 1 or p <= 0:
        return images
    k = 2 * math.ceil(max_px / 2) + 1

    def blur(sub: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        s_len, s_ang = _seeds(seed, 2)
        n = tf.shape(sub)[0]
        return conv_per_image(sub, line_kernels(_uniform(s_len, n, 1.0, max_px), _uniform(s_ang, n, 0.0, math.pi), k))

    return _clip(_on_some(images, seed, p, blur))


def gaussian_blur(images: tf.Tensor, seed: tf.Tensor, max_sigma: float, p: float) -> tf.Tensor:
    """A share ``p`` of the images blurred by a Gaussian of sigma uniform in 0..``max_sigma`` pixels."""
    import tensorflow as tf

    if max_sigma <= 0 or p <= 0:
        return images
    k = 2 * math.ceil(3 * max_sigma) + 1

    def blur(sub: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        return conv_per_image(sub, gaussian_kernels(_uniform(seed, tf.shape(sub)[0], 0.0, max_sigma), k))

    return _clip(_on_some(images, seed, p, blur))


def sensor_noise(images: tf.Tensor, seed: tf.Tensor, max_sigma: float, p: float) -> tf.Tensor:
    """A share ``p`` of the images with Gaussian noise of sigma uniform in 0..``max_sigma`` grey levels."""
    import tensorflow as tf

    if max_sigma <= 0 or p <= 0:
        return images

    def noisy(sub: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        s_sigma, s_noise = _seeds(seed, 2)
        sigma = _uniform(s_sigma, tf.shape(sub)[0], 0.0, max_sigma)[:, None, None, None]
        return sub + sigma * tf.random.stateless_normal(tf.shape(sub), s_noise)

    return _clip(_on_some(images, seed, p, noisy))


def jpeg(images: tf.Tensor, seed: tf.Tensor, min_quality: int, p: float) -> tf.Tensor:
    """A share ``p`` of the images JPEG-encoded and decoded at a quality in ``min_quality``..95."""
    import tensorflow as tf

    if min_quality <= 0 or p <= 0:
        return images

    def reencode(sub: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        q = tf.random.stateless_uniform((tf.shape(sub)[0],), seed, min_quality, 96, dtype=tf.int32)
        as_bytes = tf.cast(tf.round(_clip(sub)), tf.uint8)
        out = tf.map_fn(lambda a: tf.image.adjust_jpeg_quality(a[0], a[1]), (as_bytes, q),
                        fn_output_signature=tf.TensorSpec(sub.shape[1:], tf.uint8))
        return tf.cast(out, tf.float32)

    return _on_some(images, seed, p, reencode)


def channel_gains(images: tf.Tensor, seed: tf.Tensor, exposure_stops: float, colour_cast: float) -> tf.Tensor:
    """Exposure (a gain of 2^u, u uniform in +-``exposure_stops``) and white balance (red and blue
    gains each in [1/(1+``colour_cast``), 1+``colour_cast``]), every image its own."""
    import tensorflow as tf

    if exposure_stops <= 0 and colour_cast <= 0:
        return images
    return _clip(images * _rgb_gains(seed, tf.shape(images)[0], 2.0 ** exposure_stops, 1.0 + colour_cast))


def _rgb_gains(seed: tf.Tensor, n: tf.Tensor, light_span: float, cast_span: float) -> tf.Tensor:
    """(N, 1, 1, 3) per-image gains: a brightness in [1/``light_span``, ``light_span``] times red and blue gains
    each in [1/``cast_span``, ``cast_span``] (green 1), uniform in the logarithm."""
    import tensorflow as tf

    s_light, s_red, s_blue = _seeds(seed, 3)
    light = _log_uniform(s_light, n, light_span)
    red, blue = _log_uniform(s_red, n, cast_span), _log_uniform(s_blue, n, cast_span)
    return (light[:, None] * tf.stack([red, tf.ones_like(red), blue], axis=1))[:, None, None, :]


def gamma(images: tf.Tensor, seed: tf.Tensor, strength: float) -> tf.Tensor:
    """A tone curve 255 (x/255)^g, g in [1/(1+``strength``), 1+``strength``] per image."""
    import tensorflow as tf

    if strength <= 0:
        return images
    g = _log_uniform(seed, tf.shape(images)[0], 1.0 + strength)[:, None, None, None]
    return _clip(255.0 * tf.pow(images / 255.0, g))


def contrast(images: tf.Tensor, seed: tf.Tensor, strength: float) -> tf.Tensor:
    """Each image's contrast scaled by a factor in [1-``strength``, 1+``strength``] about its channel means."""
    import tensorflow as tf

    if strength <= 0:
        return images
    f = _uniform(seed, tf.shape(images)[0], 1.0 - strength, 1.0 + strength)[:, None, None, None]
    mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
    return _clip((images - mean) * f + mean)


def saturation(images: tf.Tensor, seed: tf.Tensor, strength: float) -> tf.Tensor:
    """Each image's colour about its grey (Rec. 601 luma) scaled by a factor in [1/(1+``strength``), 1+``strength``]."""
    import tensorflow as tf

    if strength <= 0:
        return images
    f = _log_uniform(seed, tf.shape(images)[0], 1.0 + strength)[:, None, None, None]
    grey = tf.reduce_sum(images * tf.constant([0.299, 0.587, 0.114]), axis=-1, keepdims=True)
    return _clip(grey + (images - grey) * f)


def haze(images: tf.Tensor, seed: tf.Tensor, strength: float, p: float) -> tf.Tensor:
    """A share ``p`` of the images blended toward a flat level (grey to white, 110..250) by a fraction
    uniform in 0..``strength``: dust, mist or a filmed lens, the contrast lost toward a bright veil."""
    import tensorflow as tf

    if strength <= 0 or p <= 0:
        return images

    def veil(sub: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        s_level, s_frac = _seeds(seed, 2)
        n = tf.shape(sub)[0]
        level = _uniform(s_level, n, 110.0, 250.0)[:, None, None, None]
        frac = _uniform(s_frac, n, 0.0, strength)[:, None, None, None]
        return sub * (1.0 - frac) + level * frac

    return _clip(_on_some(images, seed, p, veil))


def soil_cast(images: tf.Tensor, seed: tf.Tensor, strength: float) -> tf.Tensor:
    """The ground of each image recoloured, its plants left as they are: another soil. Pixels that are
    not plant (excess green, :func:`plant_masks`, its edge softened over 3 x 3) take a brightness and
    red and blue gains each in [1/(1+``strength``), 1+``strength``], every image its own."""
    import tensorflow as tf

    if strength <= 0:
        return images
    gains = _rgb_gains(seed, tf.shape(images)[0], 1.0 + strength, 1.0 + strength)
    plant = tf.nn.avg_pool2d(plant_masks(images), 3, 1, "SAME")
    return _clip(images * (plant + (1.0 - plant) * gains))


def chroma_shift(images: tf.Tensor, seed: tf.Tensor, max_px: float, p: float) -> tf.Tensor:
    """A share ``p`` of the images with red and blue shifted against green in opposite directions, by
    up to ``max_px`` pixels each along a random direction (a lens' lateral chromatic aberration),
    resampled bilinearly, the borders mirrored."""
    import tensorflow as tf

    if max_px <= 0 or p <= 0:
        return images

    def fringe(sub: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        s_len, s_ang = _seeds(seed, 2)
        n = tf.shape(sub)[0]
        length, angle = _uniform(s_len, n, 0.0, max_px), _uniform(s_ang, n, 0.0, 2 * math.pi)
        dx, dy = length * tf.cos(angle), length * tf.sin(angle)
        one, zero = tf.ones_like(dx), tf.zeros_like(dx)

        def moved(channel: tf.Tensor, sx: tf.Tensor, sy: tf.Tensor) -> tf.Tensor:
            t = tf.stack([one, zero, -sx, zero, one, -sy, zero, zero], axis=1)  # output (x, y) <- input (x - sx, y - sy)
            return _transform(channel, t, "REFLECT")

        r, g, b = tf.split(sub, 3, axis=-1)
        return tf.concat([moved(r, dx, dy), g, moved(b, -dx, -dy)], axis=-1)

    return _clip(_on_some(images, seed, p, fringe))


def low_light(images: tf.Tensor, seed: tf.Tensor, share: float, noise_sigma: float, motion_px: float) -> tf.Tensor:
    """A share of the images as a camera at speed sees them at dusk: darkened by a gain of 0.4..0.75,
    streaked 1..``motion_px`` pixels (when > 1) and with sensor noise of sigma ``noise_sigma`` x 0.5..1.5
    (up to at least 4 grey levels), all three on the same image -- the independent camera effects rarely meet."""
    import tensorflow as tf

    if share <= 0:
        return images

    def dusk(sub: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        s_gain, s_blur, s_sigma, s_noise = _seeds(seed, 4)
        n = tf.shape(sub)[0]
        out = sub * _uniform(s_gain, n, 0.4, 0.75)[:, None, None, None]
        if motion_px > 1:
            out = motion_blur(out, s_blur, motion_px, 1.0)
        sigma = _uniform(s_sigma, n, 0.5 * noise_sigma, max(1.5 * noise_sigma, 4.0))
        return out + sigma[:, None, None, None] * tf.random.stateless_normal(tf.shape(out), s_noise)

    return _clip(_on_some(images, seed, share, dusk))


def plant_masks(images: tf.Tensor, threshold: float = EXG_THRESHOLD) -> tf.Tensor:
    """(N, H, W, 1) plant masks, 1 where chromatic excess green is above ``threshold`` (thin
    blades kept whole: pasting resamples them bilinearly, which softens the edge)."""
    import tensorflow as tf

    r, g, b = tf.unstack(images, axis=-1)
    exg = (2.0 * g - r - b) / (r + g + b + 1e-3)
    return tf.cast(exg > threshold, tf.float32)[..., None]


def plant_centres(mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Per image of (N, S, S, 1) plant masks: the centroid (x, y) of its plant pixels, the tile's
    centre where fewer than 1 % of the pixels are plant (bare ground); and the plant's area."""
    import tensorflow as tf

    size = tf.shape(mask)[1]
    sizef = tf.cast(size, tf.float32)
    area = tf.reduce_sum(mask, axis=[1, 2, 3])
    grid = tf.cast(tf.range(size), tf.float32)
    cx = tf.reduce_sum(mask[..., 0] * grid[None, None, :], axis=[1, 2]) / tf.maximum(area, 1.0)
    cy = tf.reduce_sum(mask[..., 0] * grid[None, :, None], axis=[1, 2]) / tf.maximum(area, 1.0)
    bare = (area < 0.01 * sizef * sizef)[:, None]
    return tf.where(bare, (sizef - 1.0) / 2.0, tf.stack([cx, cy], axis=1)), area


def affine_transforms(centre: tf.Tensor, target: tf.Tensor, scale: tf.Tensor, angle: tf.Tensor,
                      mirror: tf.Tensor | None = None) -> tf.Tensor:
    """(N, 8) projective transforms (output pixel -> input pixel) that put the input's ``centre``
    (N, 2: x, y) at the output's ``target``, mirrored left-right where ``mirror`` is -1, turned by
    ``angle`` (radians) and scaled by ``scale``."""
    import tensorflow as tf

    c, s = tf.cos(angle) / scale, tf.sin(angle) / scale
    m = tf.ones_like(c) if mirror is None else mirror
    a0, a1, b0, b1 = c * m, -s, s * m, c
    a2 = centre[:, 0] - a0 * target[:, 0] - a1 * target[:, 1]
    b2 = centre[:, 1] - b0 * target[:, 0] - b1 * target[:, 1]
    z = tf.zeros_like(c)
    return tf.stack([a0, a1, a2, b0, b1, b2, z, z], axis=1)


def _transform(images: tf.Tensor, transforms: tf.Tensor, fill: str = "CONSTANT") -> tf.Tensor:
    """``images`` resampled (bilinear) through ``transforms``; outside the input: 0 or ``fill``."""
    import tensorflow as tf

    size = tf.shape(images)[1:3]
    return tf.raw_ops.ImageProjectiveTransformV3(images=images, transforms=transforms, output_shape=size,
                                                 fill_value=0.0, interpolation="BILINEAR", fill_mode=fill)


def geometry(images: tf.Tensor, ground: tf.Tensor | None, seed: tf.Tensor, flip: bool = False, rotation: float = 0.0,
             scale: tuple[float, float] = (1.0, 1.0), translate: float = 0.0) -> tf.Tensor:
    """Each image mirrored (``flip``: with any rotation, one mirror gives every flip), turned by up
    to ``rotation`` of a full turn either way and scaled in ``scale``, about its plant, which
    lands up to ``translate`` of the side off the tile's centre (so it is never pushed out of
    the tile, only partly), in one resampling. The plant is its excess-green centroid (the
    tile's centre for bare ground). Where no photo is left, the image's ``ground`` tile shows
    through; without ground the photo is mirrored at its borders.
    """
    import tensorflow as tf

    if not flip and rotation <= 0 and scale == (1.0, 1.0) and translate <= 0:
        return images
    s_flip, s_angle, s_scale, s_shift = _seeds(seed, 4)
    n, side = tf.shape(images)[0], tf.cast(tf.shape(images)[1], tf.float32)
    mirror = tf.where(tf.random.stateless_uniform((n,), s_flip) < (0.5 if flip else 0.0), -1.0, 1.0)
    angle = _uniform(s_angle, n, -2 * math.pi * rotation, 2 * math.pi * rotation)
    plant, _ = plant_centres(plant_masks(images))
    target = (side - 1.0) / 2.0 + tf.random.stateless_uniform((n, 2), s_shift, -translate, translate) * side
    transforms = affine_transforms(plant, target, _uniform(s_scale, n, scale[0], scale[1]), angle, mirror)
    if ground is None:
        return _clip(_transform(images, transforms, "REFLECT"))
    moved = _transform(tf.concat([images, tf.ones_like(images[..., :1])], axis=-1), transforms)
    return _clip(moved[..., :3] + (1.0 - moved[..., 3:]) * ground)


def composite(images: tf.Tensor, labels: tf.Tensor, ground: tf.Tensor, seed: tf.Tensor, roles: tf.Tensor,
              share: float, max_plants: int = 3, min_visible: float = 0.35, scale: tuple[float, float] = (0.6, 1.4),
              exg_threshold: float = EXG_THRESHOLD, base: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """A share of the tiles replaced by 1..``max_plants`` plants pasted on their ``ground`` tile.

    Plants are cut out (excess green) of the batch's plant photos ``images``; the composite
    tiles replace tiles of ``base`` (default: ``images``; the batch after :func:`geometry`,
    so a composite tile is placed once). Each plant is turned at random,
    scaled by ``scale`` / sqrt(plants on the tile) and centred anywhere in the middle 80 %
    of the tile; one that would show less than ``min_visible`` of itself, or less than 1 % of
    the tile, is left out. The label: the weed species that show (equal shares) when any
    weed does, else the crops'; a plant the later ones cover to less than 1 % of the tile
    does not count. A tile left with no plant keeps its image and label. ``roles`` per class id: 1 weed, 0 crop,
    -1 background.
    """
    import tensorflow as tf

    n, size = tf.shape(images)[0], tf.shape(images)[1]
    cls = tf.argmax(labels, axis=-1, output_type=tf.int32)
    is_plant = tf.gather(roles, cls) >= 0
    s_pick, s_donor, s_count, s_scale, s_angle, s_target = _seeds(seed, 6)
    chosen = (tf.random.stateless_uniform((n,), s_pick) < share) & tf.reduce_any(is_plant)
    idx = tf.where(chosen)

    def paste() -> tuple[tf.Tensor, tf.Tensor]:
        m, k = tf.shape(idx)[0], max_plants
        logits = tf.where(is_plant, 0.0, -1e9)[None, :] + tf.zeros((m, 1))
        donor = tf.random.stateless_categorical(logits, k, s_donor, dtype=tf.int32)  # (m, k)
        count = tf.random.stateless_uniform((m,), s_count, 1, k + 1, dtype=tf.int32)
        wanted = tf.range(k)[None, :] < count[:, None]  # (m, k)
        flat = tf.reshape(donor, [-1])
        plants = tf.gather(images, flat)  # (m*k, S, S, 3)
        mask = plant_masks(plants, exg_threshold)
        centre, area = plant_centres(mask)
        sizef = tf.cast(size, tf.float32)
        per_tile = tf.reshape(tf.repeat(tf.sqrt(tf.cast(count, tf.float32)), k), [-1])
        sc = _uniform(s_scale, m * k, scale[0], scale[1]) / per_tile
        target = tf.random.stateless_uniform((m * k, 2), s_target, 0.1 * sizef, 0.9 * sizef)
        transforms = affine_transforms(centre, target, sc, _uniform(s_angle, m * k, 0.0, 2 * math.pi))
        moved = _transform(tf.concat([plants * mask, mask], axis=-1), transforms)
        visible = tf.reduce_sum(moved[..., 3], axis=[1, 2])
        enough = 0.01 * sizef * sizef  # a plant shows at least 1 % of the tile
        used = (tf.reshape(wanted, [-1]) & (visible >= enough)
                & (visible >= min_visible * area * sc * sc))
        used = tf.reshape(used, [m, k])
        moved = tf.reshape(moved, [m, k, size, size, 4])
        out = tf.gather_nd(ground, idx)
        on = tf.cast(used, tf.float32)[:, :, None, None, None]
        alpha = on * moved[..., 3:]  # (m, k, S, S, 1)
        for j in range(k):  # later plants over earlier ones
            out = out * (1.0 - alpha[:, j]) + on[:, j] * moved[:, j, ..., :3]
        # what shows of each plant once the later ones lie over it: a plant all but hidden does not count
        above = tf.math.cumprod(1.0 - alpha, axis=1, exclusive=True, reverse=True)
        shows = tf.reduce_sum(alpha * above, axis=[2, 3, 4]) >= enough
        donor_onehot = tf.gather(labels, donor)  # (m, k, classes)
        weedy = tf.gather(roles, tf.gather(cls, donor)) == WEED
        any_weed = tf.reduce_any(used & shows & weedy, axis=1, keepdims=True)
        counted = tf.cast(used & shows & (weedy | ~any_weed), tf.float32)
        new_labels = tf.reduce_sum(counted[..., None] * donor_onehot, axis=1) / tf.maximum(
            tf.reduce_sum(counted, axis=1, keepdims=True), 1.0)
        ok = tf.reduce_any(used, axis=1)
        old_images, old_labels = tf.gather_nd(base, idx), tf.gather_nd(labels, idx)
        out = tf.where(ok[:, None, None, None], _clip(out), old_images)
        new_labels = tf.where(ok[:, None], new_labels, old_labels)
        return tf.tensor_scatter_nd_update(base, idx, out), tf.tensor_scatter_nd_update(labels, idx, new_labels)

    base = images if base is None else base
    if share <= 0:
        return base, labels
    return tf.cond(tf.size(idx) > 0, paste, lambda: (base, labels))


def solid(mask: tf.Tensor, window: int = 7, density: float = 0.2) -> tf.Tensor:
    """``mask`` without its specks: a pixel stays where at least ``density`` of the ``window`` x
    ``window`` pixels around it are plant too (a blade 2 px wide keeps 2/7 of a window; a green
    grain of gravel or a speck on a label, less). A sliver made of specks would teach gravel as a plant."""
    import tensorflow as tf

    around = tf.nn.avg_pool2d(mask, window, 1, "SAME")
    return mask * tf.cast(around >= density, tf.float32)


def slivers(images: tf.Tensor, labels: tf.Tensor, ground: tf.Tensor, seed: tf.Tensor, roles: tf.Tensor,
            share: float, max_visible: float = 0.35, scale: tuple[float, float] = (0.6, 1.4),
            exg_threshold: float = EXG_THRESHOLD, base: tf.Tensor | None = None, base_labels: tf.Tensor | None = None,
            tries: int = 4) -> tuple[tf.Tensor, tf.Tensor]:
    """A share of the tiles replaced by a sliver: one plant pasted on the tile's ``ground`` at a border,
    so that less than ``max_visible`` of it shows (the tiles :func:`composite` leaves out) but at least
    0.25 % of the tile -- a plant coming into or leaving a lane tile. Its label is the plant's own
    (a weed sliver is a weed tile, a crop sliver a crop tile). The plants are drawn half from the
    crop photos, half from the weed photos (while the batch holds both), so that a sliver the
    model cannot tell apart -- a blade of wheat or of a grass weed -- is taught as even, not as
    the weeds' share of the photos. Each tile tries ``tries`` placements (random border, point
    along it, how far out, turn and scale) and takes the first that shows a sliver; a tile where
    none does keeps its image and label. The plants come from ``images`` (with ``labels``); the
    tiles replaced are those of ``base`` (with ``base_labels``; default: ``images``, ``labels``).
    """
    import tensorflow as tf

    base = images if base is None else base
    base_labels = labels if base_labels is None else base_labels
    if share <= 0:
        return base, base_labels
    n, size = tf.shape(images)[0], tf.shape(images)[1]
    sizef = tf.cast(size, tf.float32)
    cls = tf.argmax(labels, axis=-1, output_type=tf.int32)
    role = tf.gather(roles, cls)
    is_plant = role >= 0
    s_pick, s_donor, s_scale, s_angle, s_side, s_along, s_out = _seeds(seed, 7)
    idx = tf.where((tf.random.stateless_uniform((n,), s_pick) < share) & tf.reduce_any(is_plant))

    def paste() -> tuple[tf.Tensor, tf.Tensor]:
        m, k = tf.shape(idx)[0], tries
        # each role (crop, weed) the same total weight, spread evenly over its photos
        n_crop = tf.reduce_sum(tf.cast(role == CROP, tf.float32))
        n_weed = tf.reduce_sum(tf.cast(role == WEED, tf.float32))
        weight = tf.where(role == CROP, 1.0 / tf.maximum(n_crop, 1.0),
                          tf.where(role == WEED, 1.0 / tf.maximum(n_weed, 1.0), 0.0))
        logits = tf.math.log(weight + 1e-30)[None, :] + tf.zeros((m, 1))
        donor = tf.random.stateless_categorical(logits, 1, s_donor, dtype=tf.int32)[:, 0]  # (m,)
        plants = tf.repeat(tf.gather(images, donor), k, axis=0)  # (m*k, S, S, 3)
        mask = solid(plant_masks(plants, exg_threshold))
        centre, area = plant_centres(mask)
        sc = _uniform(s_scale, m * k, scale[0], scale[1])
        # the plant's centre put on a line parallel to a random border, from 0.6 of its size
        # outside the tile to 0.15 inside (its size: the side of a square of its area)
        reach = tf.sqrt(tf.maximum(area, 1.0)) * sc
        side = tf.random.stateless_uniform((m * k,), s_side, 0, 4, dtype=tf.int32)
        along = _uniform(s_along, m * k, 0.1, 0.9) * sizef
        depth = _uniform(s_out, m * k, -0.6, 0.15) * reach  # < 0: outside the tile
        last = sizef - 1.0
        pick = tf.one_hot(side, 4)
        x = tf.reduce_sum(tf.stack([depth, last - depth, along, along], axis=1) * pick, axis=1)
        y = tf.reduce_sum(tf.stack([along, along, depth, last - depth], axis=1) * pick, axis=1)
        transforms = affine_transforms(centre, tf.stack([x, y], axis=1), sc, _uniform(s_angle, m * k, 0.0, 2 * math.pi))
        moved = _transform(tf.concat([plants * mask, mask], axis=-1), transforms)
        visible = tf.reduce_sum(moved[..., 3], axis=[1, 2])
        ok = ((visible >= 0.0025 * sizef * sizef) & (visible < max_visible * area * sc * sc)
              & (area >= 0.01 * sizef * sizef))
        ok = tf.reshape(ok, [m, k])
        first = tf.argmax(tf.cast(ok, tf.int32), axis=1, output_type=tf.int32)  # the first that shows a sliver
        moved = tf.gather(tf.reshape(moved, [m, k, size, size, 4]), first, batch_dims=1)  # (m, S, S, 4)
        out = _clip(tf.gather_nd(ground, idx) * (1.0 - moved[..., 3:]) + moved[..., :3])
        found = tf.reduce_any(ok, axis=1)
        out = tf.where(found[:, None, None, None], out, tf.gather_nd(base, idx))
        new_labels = tf.where(found[:, None], tf.gather(labels, donor), tf.gather_nd(base_labels, idx))
        return tf.tensor_scatter_nd_update(base, idx, out), tf.tensor_scatter_nd_update(base_labels, idx, new_labels)

    return tf.cond(tf.size(idx) > 0, paste, lambda: (base, base_labels))


# --------------------------------------------------------------------------- the batch


def keras_mixers(aug: Augment, seed: int) -> tuple[keras.layers.Layer, ...]:
    """Keras' MixUp and CutMix, as ``aug`` asks for them (on {"images", "labels"} batches)."""
    import keras

    mixers = []
    if aug.mixup:
        mixers.append(keras.layers.MixUp(aug.mixup, seed=seed))
    if aug.cutmix:
        mixers.append(keras.layers.CutMix(aug.cutmix, seed=seed + 1))
    return tuple(mixers)


def augment_batch(images: tf.Tensor, labels: tf.Tensor, ground: tf.Tensor | None, seed: tf.Tensor, aug: Augment,
                  mixers: tuple[keras.layers.Layer, ...], roles: tf.Tensor | None) -> tuple[tf.Tensor, tf.Tensor]:
    """Every effect of ``aug`` on one batch, in camera order: the scene (composite tiles, position
    and scale, the soil's colour), the light (exposure, white balance, low light at speed), the
    optics (chromatic aberration, motion blur, defocus), the sensor (noise, tone curve, contrast,
    saturation), the air or lens (haze), the encoder (JPEG); then MixUp / CutMix."""
    s = _seeds(seed, 15)  # fold_in by index: the effects added later leave the earlier ones' draws as they were
    scale = (aug.scale_min, aug.scale_max)
    placed = geometry(images, ground, s[0], aug.flip, aug.rotation, scale, aug.translate)
    if ground is not None and roles is not None:
        scene, scene_labels = composite(images, labels, ground, s[1], roles, aug.composite, aug.composite_plants,
                                        aug.composite_visible, scale, base=placed)
        # slivers of plants cut from the photos as they came, over the tiles so far (seeds are
        # folded in by index: the other effects draw as they did before slivers existed)
        images, labels = slivers(images, labels, ground, s[9], roles, aug.sliver, aug.composite_visible,
                                 scale, base=scene, base_labels=scene_labels)
    else:
        images = placed
    images = soil_cast(images, s[10], aug.soil_cast)
    images = channel_gains(images, s[2], aug.exposure, aug.colour_cast)
    images = low_light(images, s[11], aug.low_light, aug.noise, aug.motion_blur)
    images = chroma_shift(images, s[12], aug.chroma_shift, aug.camera_p)
    images = motion_blur(images, s[3], aug.motion_blur, aug.camera_p)
    images = gaussian_blur(images, s[4], aug.gaussian_blur, aug.camera_p)
    images = sensor_noise(images, s[5], aug.noise, aug.camera_p)
    images = gamma(images, s[6], aug.gamma)
    images = contrast(images, s[7], aug.contrast)
    images = saturation(images, s[13], aug.saturation)
    images = haze(images, s[14], aug.haze, aug.camera_p)
    images = jpeg(images, s[8], aug.jpeg_quality, aug.camera_p)
    for mixer in mixers:
        mixed = mixer({"images": images, "labels": labels}, training=True)
        images, labels = _clip(mixed["images"]), mixed["labels"]
    return images, labels


def augment_batches(ds: tf.data.Dataset, aug: Augment, seed: int, batch_size: int, ground: np.ndarray | None = None,
                    roles: np.ndarray | None = None) -> tf.data.Dataset:
    """``ds`` (batches of float images and one-hot labels) with ``aug`` applied in a parallel map.

    ``ground``: uint8 (N, S, S, 3) tiles of bare ground (the training split's background
    class) that fill around moved or shrunk photos and carry composite tiles; without
    them the photo is mirrored at its borders and no composite tile is made. ``roles``:
    per class id, 1 weed, 0 crop, -1 background (``train.evaluate.role_vector``).
    """
    import tensorflow as tf

    has_ground = ground is not None and len(ground) > 0
    mixers = keras_mixers(aug, seed)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    role_t = None if roles is None else tf.constant(np.asarray(roles), tf.int32)
    if not has_ground:
        return tf.data.Dataset.zip((ds, seeds)).map(
            lambda batch, s: augment_batch(batch[0], batch[1], None, s, aug, mixers, role_t),
            num_parallel_calls=tf.data.AUTOTUNE)
    tiles = (tf.data.Dataset.from_tensor_slices(ground).shuffle(len(ground), seed=seed + 7, reshuffle_each_iteration=True)
             .repeat().batch(batch_size).map(lambda g: tf.cast(g, tf.float32)))

    def one(batch: tuple[tf.Tensor, tf.Tensor], g: tf.Tensor, s: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        images, labels = batch
        return augment_batch(images, labels, g[: tf.shape(images)[0]], s, aug, mixers, role_t)

    return tf.data.Dataset.zip((ds, tiles, seeds)).map(one, num_parallel_calls=tf.data.AUTOTUNE)
