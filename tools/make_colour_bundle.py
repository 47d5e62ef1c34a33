"""Build the tiny 'colour-toy' bundle the edge tests use (needs TensorFlow).

A real int8 TFLite model with hand-set weights, so its answers are known exactly:
the frame's mean colour decides — green-dominant is a weed, blue-dominant a crop
(a stand-in colour no field has), anything else soil. Tests feed it synthetic frames
and check that valves follow the weed frames, without shipping a trained model.

    python tools/make_colour_bundle.py tests/data/bundles/colour-toy
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def build(size: int = 32):
    import keras

    inp = keras.Input((size, size, 3), dtype="float32")
    x = keras.layers.GlobalAveragePooling2D()(inp)  # mean R, G, B in 0..255
    logits = keras.layers.Dense(3, name="colour")(x)  # soil, crop, weed
    out = keras.layers.Softmax()(logits)
    model = keras.Model(inp, out)
    # logit_soil = 10, logit_crop = (B - (R+G)/2)/4, logit_weed = (G - (R+B)/2)/4
    w = np.array([[0.0, -0.125, -0.125], [0.0, -0.125, 0.25], [0.0, 0.25, -0.125]], dtype=np.float32)
    b = np.array([10.0, 0.0, 0.0], dtype=np.float32)
    model.get_layer("colour").set_weights([w, b])
    return model


def convert(model, size: int, path: Path, int8: bool) -> None:
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        rng = np.random.default_rng(0)

        def rep():
            for i in range(64):
                img = np.zeros((1, size, size, 3), np.float32)
                img[..., i % 3] = rng.uniform(0, 255)
                img += rng.uniform(0, 255, (1, size, size, 3)).astype(np.float32) * (i % 2)
                yield [np.clip(img, 0, 255)]
            yield [np.zeros((1, size, size, 3), np.float32)]
            yield [np.full((1, size, size, 3), 255, np.float32)]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = rep
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.uint8
        conv.inference_output_type = tf.uint8
    path.write_bytes(conv.convert())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dest", type=Path)
    ap.add_argument("--size", type=int, default=32)
    args = ap.parse_args()
    if not 8 <= args.size <= 512:  # the toy's input: a pydantic error below 8, gigabytes of arrays far above
        ap.error(f"--size is 8..512 pixels, got {args.size}")
    if args.dest.exists() and (not args.dest.is_dir() or any(args.dest.iterdir())):
        ap.error(f"{args.dest} exists and is not an empty folder: give a new folder for the bundle")

    from edge.inference.bundle import InputSpec, Manifest, OutputSpec, RuleSpec, write_bundle

    model = build(args.size)
    with tempfile.TemporaryDirectory() as tmp:
        q, f = Path(tmp) / "model.tflite", Path(tmp) / "float32.tflite"
        convert(model, args.size, q, int8=True)
        convert(model, args.size, f, int8=False)
        manifest = Manifest(
            name="colour-toy",
            description="Test fixture: hand-set weights, mean colour decides (green=weed, blue=crop, else soil). Not a plant model.",
            untrained_demo=True,
            labels=["soil", "crop", "weed"],
            weed_labels=["weed"],
            crop_labels=["crop"],
            background_labels=["soil"],
            input=InputSpec(height=args.size, width=args.size, dtype="uint8", colour_order="RGB", resize="center_crop"),
            output=OutputSpec(kind="probabilities", dtype="uint8", scale=1 / 256, zero_point=0),
            rule=RuleSpec(threshold=0.5, crop_veto=None, chosen_on="hand-set", notes="the mean colour decides"),
            backbone="mean-colour",
            weights_source="hand-set",
            preprocessing="none (global mean of raw 0..255 RGB)",
            licence="MIT",
            training={"command": f"python tools/make_colour_bundle.py {args.dest} --size {args.size}"},
        )
        write_bundle(args.dest, manifest, q, variants={"float32": f})
    print(f"wrote {args.dest}")


if __name__ == "__main__":
    main()
