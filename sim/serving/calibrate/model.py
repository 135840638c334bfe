"""The served model: ResNet101 (or a tiny CNN) exported as a SavedModel laid out like the lab's.

The lab serves ``<base>/<version>/`` with two signatures: ``serving_default`` on float images
``[None, 224, 224, 3]`` in [0, 1], and ``serving_preprocess`` on JPEG bytes ``[None]`` that
decodes, center-crops to a square, resizes to 224x224 and returns the top-5 ``labels`` and
``probabilities``. Random weights (``weights=None``) do exactly the arithmetic trained weights
do, and nothing is downloaded; the labels are placeholders for the same reason.

TensorFlow is imported inside the functions only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sim.serving.calibrate import INSTALL_HINT, CalibrationError

ARCHS = ("resnet101", "tiny")
IMAGE_SIZE = 224
STAMP = "scalelab_export.json"


def require_tensorflow() -> Any:
    """The ``tensorflow`` module, or a :class:`CalibrationError` saying how to install it."""
    try:
        import tensorflow as tf
    except ImportError:
        raise CalibrationError(
            f"local calibration needs TensorFlow, which is not installed: {INSTALL_HINT}"
        ) from None
    return tf


def build_keras(arch: str, seed: int = 0) -> Any:
    """The Keras model: ``tf.keras.applications.ResNet101(weights=None)`` or a tiny CNN."""
    tf = require_tensorflow()
    tf.keras.utils.set_random_seed(seed)
    if arch == "resnet101":
        return tf.keras.applications.ResNet101(weights=None)
    if arch == "tiny":
        layers = tf.keras.layers
        return tf.keras.Sequential(
            [
                tf.keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3)),
                layers.Conv2D(8, 3, strides=4, activation="relu"),
                layers.Conv2D(16, 3, strides=2, activation="relu"),
                layers.GlobalAveragePooling2D(),
                layers.Dense(10, activation="softmax"),
            ]
        )
    raise CalibrationError(f"unknown model {arch!r}; choose one of {', '.join(ARCHS)}")


def export(arch: str, base: Path, version: int = 1) -> Path:
    """Export ``arch`` to ``<base>/<version>/`` unless an export of it is already there.

    The stamp file records the architecture and TensorFlow version, so a reused directory is
    never a stale or different model.
    """
    tf = require_tensorflow()
    target = base / str(version)
    stamp = {"arch": arch, "tensorflow": tf.__version__, "version": version}
    stamp_path = base / STAMP
    if (target / "saved_model.pb").exists() and stamp_path.exists():
        if json.loads(stamp_path.read_text()) == stamp:
            return target
        raise CalibrationError(
            f"{base} holds a different SavedModel ({stamp_path.read_text().strip()}); "
            "pick an empty --export-dir"
        )
    if target.exists() and any(target.iterdir()):
        raise CalibrationError(f"{target} exists and is not empty; pick an empty --export-dir")
    model = build_keras(arch)
    classes = int(model.output_shape[-1])
    names = tf.constant([f"{arch}_class_{i:04d}" for i in range(classes)])

    def decode(jpeg: Any) -> Any:
        image = tf.io.decode_jpeg(jpeg, channels=3)
        height, width = tf.shape(image)[0], tf.shape(image)[1]
        side = tf.minimum(height, width)
        image = tf.image.crop_to_bounding_box(
            image, (height - side + 1) // 2, (width - side + 1) // 2, side, side
        )
        return tf.cast(tf.image.resize(image, [IMAGE_SIZE, IMAGE_SIZE]), tf.uint8)

    @tf.function(input_signature=[tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32)])
    def serving_default(images: Any) -> dict[str, Any]:
        return {"probabilities": model(images, training=False)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serving_preprocess(jpegs: Any) -> dict[str, Any]:
        images = tf.map_fn(decode, jpegs, fn_output_signature=tf.uint8)
        images = tf.image.convert_image_dtype(images, tf.float32)
        top = tf.math.top_k(serving_default(images)["probabilities"], k=5)
        return {"labels": tf.gather(names, top.indices), "probabilities": top.values}

    # Track only the variables: saving the Keras object too would trace its own functions.
    module = tf.Module()
    module.variables_ = list(model.variables)
    module.serving_default = serving_default
    module.serving_preprocess = serving_preprocess
    signatures = {
        "serving_default": serving_default.get_concrete_function(),
        "serving_preprocess": serving_preprocess.get_concrete_function(),
    }
    tf.saved_model.save(module, str(target), signatures=signatures)
    stamp_path.write_text(json.dumps(stamp))
    return target


def synthetic_jpeg(height: int = 600, width: int = 512, seed: int = 0) -> bytes:
    """A photo-sized JPEG for when the lab's image is not at hand (smooth noise, quality 90)."""
    tf = require_tensorflow()
    rng = tf.random.Generator.from_seed(seed)
    small = rng.uniform([height // 8, width // 8, 3], 0, 255)
    image = tf.cast(tf.image.resize(small, [height, width], method="bicubic"), tf.float32)
    image = tf.clip_by_value(image + rng.normal([height, width, 3], 0, 8), 0, 255)
    return bytes(tf.io.encode_jpeg(tf.cast(image, tf.uint8), quality=90).numpy())
