"""Model bundles: the contract between training and the edge.

A bundle is a folder ``models/<name>/`` holding ``manifest.json`` and the model file
(``model.tflite``, full-integer int8 with uint8 RGB input), optionally other exports of
the same model (``variants``, e.g. ``model_float32.tflite`` for the benchmark) and the
training report. Everything the edge needs to feed and read the model is in the
manifest; preprocessing beyond resizing lives inside the model graph.

``load_bundle`` validates the manifest and the file's sha256 here; the tensor shapes
and dtypes, and the declared quantisation, are checked against the manifest when the
interpreter is created (``edge.inference.classifier``), still before any output is
energised. The manifest is read strictly:

- types are strict (``"0.4"`` is not a threshold, ``true`` not a ``format_version``),
  numbers finite and in range, names and labels plain text (no control characters);
- ``model_file`` and every variant's ``file`` name a file inside the bundle folder
  (relative, no ``..``; after resolving symlinks still inside it);
- the manifest and the model are regular files (a FIFO, a folder or a device is named as
  what it is, never opened), of at most ``MAX_MANIFEST_BYTES`` / ``MAX_MODEL_BYTES``;
- a manifest nested too deeply to parse is a ``BundleError`` like any other bad manifest.

Format 2 (``FORMAT_VERSION``) holds the decision rule in a ``rule`` section: ``threshold``,
``crop_veto`` (null = none), ``chosen_on`` and ``notes`` (``edge.decide.rule`` applies it). A
format 1 manifest still loads: the loader converts it, its plain ``threshold`` becoming the
rule with no crop veto (as for a manifest built without a rule section). ``Manifest.threshold``
is the rule's threshold in both formats (a format 2 file need not repeat it at the top level;
if it does, the two must agree), and ``write_bundle`` writes format 2 with the threshold in
``rule`` only.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import site
import stat
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge.core.errors import BundleError
from edge.core.files import FileRefused, check_regular, file_kind, is_inside, open_regular, read_regular
from edge.core.schema import Finite, Printable

FORMAT_VERSION = 2
READ_VERSIONS = (1, 2)  # format 1: no rule section, the plain threshold (converted on load)
MANIFEST = "manifest.json"
DEFAULT_BUNDLE = "plant-seedlings-mnv2"
ENV_MODELS_DIR = "WEED_DETECTOR_MODELS"  # extra folder searched for bundle names
MAX_MANIFEST_BYTES = 1_000_000  # a manifest is a few kB
MAX_MODEL_BYTES = 2 ** 31  # a TFLite flatbuffer cannot be larger
REPAIR = ("copy the whole bundle folder again (manifest.json and its model files come together), or train it "
          "again with `weed-train train`")  # the fix for a bundle that is damaged or does not fit its manifest

Quantization = Literal["int8", "float16", "float32"]


def _in_bundle(name: str) -> str:
    """A file name of the manifest: relative to the bundle folder and inside it."""
    path = PurePosixPath(name)
    if not name or path.is_absolute() or ".." in path.parts:
        raise ValueError(f"{name!r} is not a file inside the bundle folder; name it relative to the folder, "
                         "e.g. 'model.tflite'")
    return name


BundleFile = Annotated[Printable, AfterValidator(_in_bundle)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class InputSpec(_Strict):
    height: int = Field(ge=1, le=4096)
    width: int = Field(ge=1, le=4096)
    channels: Literal[3] = 3
    dtype: Literal["uint8", "int8", "float32"] = "uint8"
    colour_order: Literal["RGB", "BGR"] = "RGB"
    # How a frame whose aspect differs from the model's is fitted:
    # centre_crop keeps the centre at full scale, stretch distorts, pad letterboxes.
    resize: Literal["center_crop", "stretch", "pad"] = "center_crop"


class OutputSpec(_Strict):
    kind: Literal["probabilities", "logits"] = "probabilities"
    dtype: Literal["uint8", "int8", "float32", "float16"] = "uint8"
    scale: Finite | None = Field(None, gt=0, le=1e6)
    zero_point: int | None = Field(None, ge=-128, le=255)


class Variant(_Strict):
    file: BundleFile
    sha256: str = ""
    quantization: Quantization
    size_bytes: int = Field(0, ge=0, le=MAX_MODEL_BYTES)


class TrainedWeights(_Strict):
    """The trained Keras model a bundle may carry beside its TFLite files (``weed-train`` writes it; ``weed-train
    train --from-bundle`` starts from it). The edge never reads it."""

    file: BundleFile
    sha256: str = ""
    format: Literal["keras"] = "keras"  # a Keras 3 ``.keras`` archive (architecture + weights)
    size_bytes: int = Field(0, ge=0, le=MAX_MODEL_BYTES)


class FrameFeatures(_Strict):
    """The main model cut before its global average pool, to run once over a whole frame
    (``edge.inference.frame_features``; written by ``weed-train frame-features``): ``file`` has the main
    model's input and, as its output, the last feature map (one cell per ``stride`` input pixels);
    ``head_file`` (``.npz``: ``weight`` labels x channels and ``bias`` labels, float32, dequantised from the
    main model's FULLY_CONNECTED; ``pool_quant`` and ``logit_quant``, the [scale, zero point] of its int8 pooled
    features and logits) turns a tile's average-pooled features into logits, softmax into probabilities."""

    file: BundleFile
    sha256: str = Field(min_length=64, max_length=64)
    head_file: BundleFile
    head_sha256: str = Field(min_length=64, max_length=64)
    stride: int = Field(ge=1, le=1024)
    channels: int = Field(ge=1, le=65536)
    size_bytes: int = Field(0, ge=0, le=MAX_MODEL_BYTES)


class RuleSpec(_Strict):
    """The decision rule the bundle was evaluated with (``edge.decide.rule.SprayRule``)."""

    threshold: Finite = Field(ge=0.0, le=1.0)  # on the weed probability mass of a view
    crop_veto: Finite | None = Field(None, ge=0.0, le=1.0)  # a view with crop mass >= this never sprays; None: none
    # where it was chosen: validation photos, validation photos with their perturbed copies, ground cells of passes
    # made from validation photos (tools/choose_cell_rule.py), by hand, not known
    chosen_on: Literal["validation", "validation+perturbed", "validation passes", "hand-set", "unknown"] = "unknown"
    notes: str = ""


def _probability(x: Any) -> bool:
    """Whether ``x`` passes as a threshold (copied between ``threshold`` and ``rule.threshold`` only then,
    so a bad value is reported once, where the file has it)."""
    return type(x) in (int, float) and 0.0 <= x <= 1.0


def _plain_rule(data: dict) -> dict:
    """The rule of a manifest without a rule section (format 1, or format 2 written without one): its
    plain threshold (0.5 when it gives none), no crop veto."""
    metrics = data.get("metrics")
    chosen = metrics.get("threshold_chosen_on") if isinstance(metrics, dict) else None
    threshold = data.get("threshold", 0.5)
    return {"threshold": threshold if _probability(threshold) else 0.5, "crop_veto": None,
            "chosen_on": "validation" if chosen == "validation" else "unknown",
            "notes": f"format {data.get('format_version', FORMAT_VERSION)} manifest without a rule section: "
                     "its plain threshold, no crop veto"}


class Manifest(_Strict):
    format_version: int = FORMAT_VERSION
    name: Printable = Field(min_length=1)
    description: str = ""
    untrained_demo: bool = False
    model_file: BundleFile = "model.tflite"
    model_sha256: str = ""
    quantization: Quantization = "int8"
    labels: list[Printable] = Field(min_length=2)
    weed_labels: list[Printable]
    crop_labels: list[Printable] = []
    background_labels: list[Printable] = []
    input: InputSpec
    output: OutputSpec = OutputSpec()
    threshold: Finite = Field(default=0.5, ge=0.0, le=1.0)  # = rule.threshold (format 1 gives only this)
    backbone: str = ""
    weights_source: str = ""
    preprocessing: str = ""
    metrics: dict[str, Any] = {}
    variants: dict[str, Variant] = {}
    frame_features: FrameFeatures | None = None  # the backbone alone, for [model] scoring = "frame"
    licence: str = ""
    attribution: str = ""
    created: str = ""
    training: dict[str, Any] = {}
    rule: RuleSpec  # without one in the file: built from threshold on load
    trained_weights: TrainedWeights | None = None  # optional: the Keras model the TFLite files came from

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        """Format 1 -> 2; a missing rule from the plain threshold; a missing top-level threshold from the rule."""
        if not isinstance(data, dict):
            return data
        version = data.get("format_version", FORMAT_VERSION)
        if type(version) is not int:  # strict validation says what is wrong with it
            return data
        if version not in READ_VERSIONS:
            raise ValueError(
                f"format_version {version} is not supported by this edge runtime (it reads versions "
                f"{', '.join(map(str, READ_VERSIONS))}); upgrade weed-detector or train the bundle again with this version"
            )
        if version == 1:
            if "rule" in data:
                raise ValueError("a format_version 1 manifest has no 'rule' section (rules came with format 2); "
                                 "set format_version to 2 or remove 'rule'")
            return {**data, "format_version": FORMAT_VERSION, "rule": _plain_rule(data)}
        if "rule" not in data:
            return {**data, "rule": _plain_rule(data)}
        rule = data["rule"]
        given = rule.threshold if isinstance(rule, RuleSpec) else rule.get("threshold") if isinstance(rule, dict) else None
        if "threshold" not in data and _probability(given):
            return {**data, "threshold": given}
        return data

    @model_validator(mode="after")
    def _labels_consistent(self) -> "Manifest":
        if self.threshold != self.rule.threshold:
            raise ValueError(f"threshold {self.threshold} disagrees with rule.threshold {self.rule.threshold}; "
                             "format 2 keeps the threshold in rule.threshold: remove the top-level one")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels contain duplicates")
        if any(not x.strip() for x in self.labels):  # an empty name in the logs, the live view and replay's causes
            raise ValueError("labels contain an empty name")
        roles_of = {"weed_labels": self.weed_labels, "crop_labels": self.crop_labels,
                    "background_labels": self.background_labels}
        for field, names in roles_of.items():
            unknown = [x for x in names if x not in self.labels]
            if unknown:
                raise ValueError(f"{field} names {unknown}, which are not in labels")
        roles = [set(self.weed_labels), set(self.crop_labels), set(self.background_labels)]
        if (roles[0] & roles[1]) or (roles[0] & roles[2]) or (roles[1] & roles[2]):
            raise ValueError("a label is in more than one of weed_labels/crop_labels/background_labels")
        if not self.weed_labels:
            raise ValueError("weed_labels is empty: nothing would ever be sprayed")
        if self.rule.crop_veto is not None and not self.crop_labels:
            raise ValueError("rule.crop_veto is set but crop_labels is empty: nothing to veto on")
        return self

    def to_json(self) -> str:
        """The manifest as ``write_bundle`` stores it: format 2, the threshold in ``rule`` only."""
        skip = {"threshold"} | ({"frame_features"} if self.frame_features is None else set())
        return json.dumps(self.model_dump(exclude=skip), indent=2) + "\n"


@dataclass(frozen=True)
class Bundle:
    """A validated bundle on disk. ``model_path`` is the file chosen (main or a variant)."""

    dir: Path
    manifest: Manifest
    model_path: Path
    variant: str | None = None

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def quantization(self) -> str:
        if self.variant is None:
            return self.manifest.quantization
        return self.manifest.variants[self.variant].quantization


def sha256_file(path: Path) -> str:
    """The sha256 of a regular file (``FileRefused`` for a FIFO, a device, a folder: never blocks)."""
    h = hashlib.sha256()
    with open_regular(path, MAX_MODEL_BYTES) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def models_dirs() -> list[Path]:
    """Folders searched for bundle names, in order.

    1. ``$WEED_DETECTOR_MODELS`` if set; 2. ``models/`` of the checkout this package
    runs from; 3. ``<prefix>/share/weed-detector/models`` where a (non-editable)
    install puts the shipped bundles (venv/system prefix, then the user base).
    """
    dirs: list[Path] = []
    env = os.environ.get(ENV_MODELS_DIR)
    if env:
        dirs.append(Path(env))
    dirs.append(Path(__file__).resolve().parents[2] / "models")
    for prefix in (sys.prefix, sys.base_prefix, site.getuserbase()):
        d = Path(prefix) / "share" / "weed-detector" / "models"
        if d not in dirs:
            dirs.append(d)
    return dirs


def available_bundles() -> dict[str, Path]:
    """Bundle name -> folder for every bundle found in ``models_dirs()`` (first wins)."""
    found: dict[str, Path] = {}
    for d in models_dirs():
        if d.is_dir():
            for m in sorted(d.glob(f"*/{MANIFEST}")):
                found.setdefault(m.parent.name, m.parent)
    return found


def resolve_bundle(path_or_name: str | os.PathLike | None, flag: str = "--model") -> Path:
    """A bundle folder from a path, a shipped bundle's name, or None (the default); ``flag``: how the refusals name
    the argument it came from."""
    if path_or_name is None or str(path_or_name) == "":
        path_or_name = DEFAULT_BUNDLE
    p = Path(path_or_name).expanduser()
    if p.is_file() and p.name == MANIFEST:
        p = p.parent
    if p.is_dir():
        return p
    try:
        mode = p.stat().st_mode
    except (OSError, ValueError):  # nothing there: a shipped bundle's name?
        mode = None
    if mode is not None and not stat.S_ISREG(mode):  # a FIFO, a device, a socket: say so, never open it
        raise BundleError(f"{flag} {p} is {file_kind(mode)}, not a bundle folder",
                          "pass the bundle folder that holds model.tflite and manifest.json, or a shipped bundle's name")
    if p.suffix == ".tflite":
        raise BundleError(
            f"{flag} {p} is a bare .tflite file",
            "pass the bundle folder that holds model.tflite and manifest.json (export one with `weed-train`)",
        )
    found = available_bundles()
    if str(path_or_name) in found:
        return found[str(path_or_name)]
    names = ", ".join(sorted(found)) or "none found"
    raise BundleError(
        f"model bundle '{path_or_name}' not found (not a folder; shipped bundles: {names})",
        f"pass a bundle folder as {flag} or one of the shipped names",
    )


def read_manifest(folder: Path) -> Manifest:
    mpath = folder / MANIFEST
    try:
        text = read_regular(mpath, MAX_MANIFEST_BYTES).decode("utf-8")
    except FileRefused as e:
        if e.missing:
            raise BundleError(
                f"{mpath} is missing",
                f"a bundle folder needs manifest.json beside the model: {REPAIR}",
            ) from None
        raise BundleError(f"{mpath} {e}", REPAIR) from None
    except UnicodeDecodeError as e:
        raise BundleError(f"{mpath} is not valid JSON ({e})", REPAIR) from None
    try:
        data = json.loads(text)
    except ValueError as e:  # not JSON, or a number Python will not read (an integer of more than 4300 digits)
        raise BundleError(f"{mpath} is not valid JSON ({e})", REPAIR) from None
    except RecursionError:
        raise BundleError(f"{mpath} nests arrays or objects too deeply to read",
                          REPAIR) from None
    if not isinstance(data, dict):
        raise BundleError(f"{mpath} must hold a JSON object", REPAIR)
    try:
        return Manifest.model_validate(data)
    except RecursionError:
        raise BundleError(f"{mpath}: values nested too deeply to check",
                          REPAIR) from None
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "(manifest)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field (typo, or a bundle made for a newer weed-detector)"
        raise BundleError(
            f"{mpath}: field '{loc}': {msg}",
            f"fix that field in manifest.json, or {REPAIR}",
        ) from None


def load_bundle(path_or_name: str | os.PathLike | None = None, variant: str | None = None, verify_hash: bool = True) -> Bundle:
    """Find, read and validate a bundle. ``variant`` picks e.g. ``"float32"``."""
    folder = resolve_bundle(path_or_name)
    manifest = read_manifest(folder)
    if variant in (None, "", manifest.quantization):
        file, digest, chosen = manifest.model_file, manifest.model_sha256, None
    elif variant in manifest.variants:
        v = manifest.variants[variant]
        file, digest, chosen = v.file, v.sha256, variant
    else:
        have = ", ".join([manifest.quantization, *manifest.variants]) or "none"
        raise BundleError(f"bundle '{manifest.name}' has no '{variant}' variant (it has: {have})", "choose one of those")
    for named in (manifest.model_file, *(v.file for v in manifest.variants.values())):
        if not is_inside(folder / named, folder):  # a symlink out of the folder (names are checked by Manifest)
            raise BundleError(f"{folder / MANIFEST} names {named!r}, which resolves to outside the bundle folder",
                              "a bundle's model files are inside its folder: copy the files in and drop the link")
    model_path = folder / file
    try:  # a regular file (a FIFO, a folder, a device is named as such, never opened), hashed if asked
        size = check_regular(model_path, MAX_MODEL_BYTES).st_size
        actual = sha256_file(model_path) if verify_hash and digest and size else ""
    except FileRefused as e:
        what = f"named in {folder / MANIFEST} is missing" if e.missing else str(e)
        raise BundleError(f"model file {model_path} {what}", REPAIR) from None
    if size == 0:
        raise BundleError(f"model file {model_path} is empty", REPAIR)
    if verify_hash:
        if not digest:
            raise BundleError(
                f"{folder / MANIFEST} gives no sha256 for {file}",
                REPAIR,
            )
        if actual != digest.lower():  # hex digests are case-insensitive
            raise BundleError(
                f"{model_path} does not match its manifest (sha256 {actual[:12]}… != {digest[:12]}…): the file is corrupt, "
                "truncated or from another bundle",
                REPAIR,
            )
    return Bundle(dir=folder, manifest=manifest, model_path=model_path, variant=chosen)


def write_bundle(
    folder: str | os.PathLike,
    manifest: Manifest,
    model_file: str | os.PathLike,
    variants: dict[str, str | os.PathLike] | None = None,
) -> Path:
    """Write a bundle: copy the model (and variants), fill in hashes, sizes and date.

    ``variants`` maps a quantization name (``"float32"``, ``"float16"``) to a model file;
    each is stored as ``model_<name>.tflite``. Returns the bundle folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    src = Path(model_file)
    dst = folder / manifest.model_file
    if src.resolve() != dst.resolve():
        shutil.copyfile(src, dst)
    vmeta: dict[str, Variant] = dict(manifest.variants)
    for qname, vpath in (variants or {}).items():
        vsrc = Path(vpath)
        vdst = folder / f"model_{qname}.tflite"
        if vsrc.resolve() != vdst.resolve():
            shutil.copyfile(vsrc, vdst)
        vmeta[qname] = Variant(file=vdst.name, sha256=sha256_file(vdst), quantization=qname, size_bytes=vdst.stat().st_size)
    final = manifest.model_copy(
        update={
            "model_sha256": sha256_file(dst),
            "variants": vmeta,
            "created": manifest.created or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    )
    # Round-trip through validation so a bad manifest is caught at export, not in the field.
    final = Manifest.model_validate(final.model_dump())
    (folder / MANIFEST).write_text(final.to_json(), encoding="utf-8")
    return folder
