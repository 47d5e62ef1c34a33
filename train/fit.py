"""Training modes, in the Keras transfer-learning vocabulary.

* ``features`` -- frozen pretrained backbone (``include_top=False``, pooled) + a new
  softmax head;
* ``finetune`` -- ``features`` first, then the top N layers of the backbone unfrozen and
  trained at a lower learning rate, BatchNorm layers kept frozen (inference mode) so the
  small batches do not wreck their statistics;
* ``logreg`` -- pooled embeddings + scikit-learn ``LogisticRegression`` (its weights are
  then copied into a Dense softmax layer so the result exports like any other model);
* ``scratch`` -- the same architecture from random weights (a baseline).

Every mode returns one Keras model taking float32 RGB 0..255 (N, S, S, 3) and giving class
probabilities: preprocessing is in the graph, so the exported TFLite takes uint8 pixels.
Early stopping watches the validation loss and restores the best epoch's weights.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from edge.core.errors import ConfigError
from train.augment import Augment
from train.data import class_weights, make_dataset

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

    from train.backbones import Built

log = logging.getLogger(__name__)

MODES = ("features", "finetune", "logreg", "scratch")


@dataclass(frozen=True)
class FitConfig:
    mode: str = "finetune"
    backbone: str = "mobilenet_v2"
    input_size: int = 160
    weights: str = "default"  # weight source name, "none", or a path
    head_epochs: int = 5  # features mode / first phase of finetune (on augmented images)
    head_on_embeddings: bool = True  # first phase on cached embeddings instead (fast, no augmentation)
    embedding_head_epochs: int = 60  # epochs of that cached-embedding head (early-stopped)
    epochs: int = 12  # finetune phase (or scratch)
    unfreeze: int = -1  # top N backbone layers to unfreeze in finetune; -1 = all
    train_batchnorm: bool = False  # finetune: also train BatchNorm (batch statistics adapt to the new photos)
    head_lr: float = 1e-3
    lr: float = 2e-4  # finetune / scratch learning rate (cosine-decayed)
    batch_size: int = 32
    label_smoothing: float = 0.1
    group_loss: float = 0.0  # + this x the weed/crop/background groups' cross-entropy (train.losses); 0 = off
    dropout: float = 0.2
    weight_decay: float = 1e-4
    patience: int = 4
    seed: int = 42  # the run's seed: the evaluation's perturbed copies and int8 calibration draws
    train_seed: int | None = None  # the training draws' (weights, shuffling, augmentation, dropout); None: seed
    class_weighting: bool = True
    augment: Augment = field(default_factory=Augment)
    logreg_c: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0)
    verbose: int = 1
    refit: bool = False  # after the run on train, train again on train+val for the epochs validation chose
    from_bundle: str = ""  # start from this bundle's trained Keras model (train.finetune), "" = the backbone's weights

    def __post_init__(self):
        if self.mode not in MODES:
            raise ConfigError(f"unknown mode {self.mode!r}", f"choose one of {', '.join(MODES)}")
        if not self.group_loss >= 0:
            raise ConfigError(f"group_loss must be >= 0, got {self.group_loss!r}", "use 0 (off) or a weight such as 1")
        if self.from_bundle and self.mode == "scratch":
            raise ConfigError("--from-bundle starts from the bundle's trained weights: --mode scratch would drop them",
                              "use --mode finetune (default), features or logreg with --from-bundle")

    @property
    def draw_seed(self) -> int:
        """The seed of the training draws: ``train_seed``, else ``seed``. Another ``train_seed`` on the same split
        (``--seed``) trains another draw of the same recipe, scored on the same perturbed copies."""
        return self.seed if self.train_seed is None else self.train_seed

    def as_dict(self) -> dict:
        d = asdict(self)
        d["augment"] = self.augment.model_dump()
        d["logreg_c"] = list(self.logreg_c)
        return d


@dataclass
class FitResult:
    model: keras.Model  # float 0..255 images -> probabilities
    weights_source: str
    preprocessing: str
    history: dict
    class_weights: dict[int, float]
    seconds: float
    notes: list[str] = field(default_factory=list)


def build_backbone(cfg: FitConfig, weights: str | None = None) -> Built:
    """The backbone from train.backbones (one builder per backbone, weights offline)."""
    from train.backbones import build_backbone as _build

    return _build(cfg.backbone, cfg.input_size, weights=weights or cfg.weights, include_top=False)


def classifier(built: Built, n_classes: int, dropout: float, seed: int) -> keras.Model:
    import keras

    inputs = keras.Input(built.model.input_shape[1:], dtype="float32", name="image")
    feats = built.model(inputs)
    x = keras.layers.Dropout(dropout, seed=seed, name="head_dropout")(feats) if dropout else feats
    out = keras.layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, out, name=f"{built.model.name}_classifier")


def _set_backbone_trainable(base: keras.Model, unfreeze: int, train_batchnorm: bool = False) -> int:
    """Unfreeze the top ``unfreeze`` layers (-1: all) of ``base``.

    BatchNorm layers stay frozen -- in Keras 3 a frozen BatchNorm also runs in inference
    mode, so its moving statistics are untouched -- unless ``train_batchnorm``.
    """
    import keras

    base.trainable = True
    layers = base.layers
    cut = 0 if unfreeze < 0 else max(0, len(layers) - unfreeze)
    n = 0
    for i, layer in enumerate(layers):
        if isinstance(layer, keras.layers.BatchNormalization) and not train_batchnorm:
            layer.trainable = False  # inference mode in Keras 3: moving stats untouched
        else:
            layer.trainable = i >= cut
            n += int(layer.trainable and bool(layer.weights))
    return n


def training_loss(cfg: FitConfig, roles: np.ndarray | None) -> keras.losses.Loss:
    """The loss every phase compiles: categorical cross-entropy, plus the groups' with ``cfg.group_loss``."""
    import keras

    if not cfg.group_loss:
        return keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing)
    if roles is None:
        raise ConfigError("--group-loss needs each class's role (weed / crop / background)",
                          "give --roles CSV or --weeds / --crops, or leave --group-loss at 0")
    from train.losses import GroupedCrossentropy, membership

    return GroupedCrossentropy(membership(roles), cfg.group_loss, cfg.label_smoothing)


def _compile(model: keras.Model, lr: float, steps: int, cfg: FitConfig, decay: bool,
             roles: np.ndarray | None) -> None:
    import keras

    sched = keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, steps)) if decay else lr
    opt = keras.optimizers.AdamW(learning_rate=sched, weight_decay=cfg.weight_decay)
    model.compile(optimizer=opt, loss=training_loss(cfg, roles), metrics=["accuracy"])


def _callbacks(cfg: FitConfig, validated: bool = True) -> list[keras.callbacks.Callback]:
    import keras

    if not validated:  # a refit on train+val: fixed epochs, nothing to stop on
        return []
    return [
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=cfg.patience, restore_best_weights=True, verbose=int(cfg.verbose > 0)
        )
    ]


def _merge(h: dict, new: dict, phase: str) -> None:
    for k, v in new.items():
        h.setdefault(k, []).extend(float(x) for x in v)
    h.setdefault("phase", []).extend([phase] * len(next(iter(new.values()))))


def embed(model: keras.Model, x: np.ndarray, batch_size: int = 64, desc: str = "embedding") -> np.ndarray:
    """Pooled features of ``x`` (uint8 images) with a progress bar."""
    from tqdm.auto import tqdm

    out = []
    for i in tqdm(range(0, len(x), batch_size), desc=desc, unit="batch", leave=False):
        out.append(np.asarray(model(x[i : i + batch_size].astype(np.float32), training=False)))
    return np.concatenate(out, axis=0) if out else np.zeros((0, 0), np.float32)


def fit(
    cfg: FitConfig,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray | None,
    y_val: np.ndarray | None,
    n_classes: int,
    built: Built | None = None,
    embeddings: tuple[np.ndarray, np.ndarray | None] | None = None,
    roles: np.ndarray | None = None,
    head: tuple[np.ndarray, np.ndarray] | None = None,
) -> FitResult:
    """Train one model in ``cfg.mode``. ``built`` may be passed in (a prebuilt backbone).

    ``head`` (kernel, bias) is where the softmax head starts (``train.finetune.initial_head``:
    a bundle's head grown to the run's classes); None: Keras' random initialisation. The
    ``logreg`` mode fits its head from scratch either way.

    With ``x_val`` None (a refit on train+val) every phase runs its configured epochs:
    no validation, no early stopping. ``roles`` (per class id: 1 weed, 0 crop, -1
    background; ``train.evaluate.role_vector``) lets the augmentation use the background
    images as ground and paste plants on it (see :mod:`train.augment`).
    """
    import keras

    keras.utils.set_random_seed(cfg.draw_seed)
    t0 = time.perf_counter()
    if built is None:
        built = build_backbone(cfg, "none" if cfg.mode == "scratch" else None)
    cw = class_weights(y_train, n_classes) if cfg.class_weighting else {i: 1.0 for i in range(n_classes)}
    history: dict = {}
    notes: list[str] = []

    if cfg.mode == "logreg":
        model = _fit_logreg(cfg, built, x_train, y_train, x_val, y_val, n_classes, cw, embeddings, notes)
        return FitResult(model, built.weights_source, built.preprocessing, history, cw, time.perf_counter() - t0, notes)

    model = classifier(built, n_classes, cfg.dropout, cfg.draw_seed)
    if head is not None:
        model.get_layer("probabilities").set_weights(list(head))
        notes.append("head started from the bundle's (its classes' rows copied, new classes' rows zero)")
    batches = training_batches(cfg, x_train, y_train, x_val, y_val, n_classes, roles)
    if cfg.mode in ("features", "finetune"):
        _train_head(cfg, built, model, batches, (x_train, y_train), (x_val, y_val), n_classes, cw, embeddings,
                    history, notes, head, roles)
    if cfg.mode in ("finetune", "scratch"):
        _train_backbone(cfg, built, model, batches, cw, history, notes, roles)
    built.base.trainable = False
    return FitResult(model, built.weights_source, built.preprocessing, history, cw, time.perf_counter() - t0, notes)


@dataclass(frozen=True)
class _Batches:
    """Training batches (one endless iterator, ``steps`` batches an epoch); validation ones, None in a refit."""

    train: tf.data.Dataset
    val: tf.data.Dataset | None
    steps: int


def training_batches(cfg: FitConfig, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray | None,
                     y_val: np.ndarray | None, n_classes: int, roles: np.ndarray | None = None) -> _Batches:
    """The training batches, augmented by ``cfg.augment``, and the validation batches, never augmented.

    One endless iterator with a fixed number of steps per epoch (same batches as one pass
    each): a fresh iterator every epoch stalled 5-15 s before its first batch.
    """
    return _Batches(
        train=make_dataset(x_train, y_train, n_classes, cfg.batch_size, training=True, aug=cfg.augment,
                           seed=cfg.draw_seed, roles=roles).repeat(),
        val=make_dataset(x_val, y_val, n_classes, cfg.batch_size) if x_val is not None else None,
        steps=int(np.ceil(len(x_train) / cfg.batch_size)),
    )


def _run_epochs(model: keras.Model, batches: _Batches, epochs: int, cw: dict[int, float], cfg: FitConfig) -> dict:
    """``model.fit`` for ``epochs`` (early-stopped on validation when there is one); its history."""
    h = model.fit(
        batches.train, validation_data=batches.val, epochs=epochs, steps_per_epoch=batches.steps, class_weight=cw,
        callbacks=_callbacks(cfg, batches.val is not None), verbose=cfg.verbose,
    )
    return h.history


def _train_head(cfg: FitConfig, built: Built, model: keras.Model, batches: _Batches,
                train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray | None, np.ndarray | None],
                n_classes: int, cw: dict[int, float], embeddings: tuple[np.ndarray, np.ndarray | None] | None,
                history: dict, notes: list[str], head: tuple[np.ndarray, np.ndarray] | None,
                roles: np.ndarray | None) -> None:
    """features / finetune's first phase: the new head on the frozen backbone (cached embeddings, or images)."""
    (x_train, y_train), (x_val, y_val) = train, val
    built.base.trainable = False
    if cfg.head_on_embeddings:
        if embeddings is None:
            embeddings = (embed(built.model, x_train, desc="embedding train"),
                          embed(built.model, x_val, desc="embedding val") if x_val is not None else None)
        h = _fit_head_on_embeddings(cfg, model, embeddings, y_train, y_val, n_classes, cw, head, roles)
        notes.append(f"head trained on cached embeddings of the un-augmented photos ({len(h['loss'])} epochs)")
        _merge(history, h, "head")
    elif cfg.head_epochs > 0:
        _compile(model, cfg.head_lr, batches.steps * cfg.head_epochs, cfg, decay=False, roles=roles)
        _merge(history, _run_epochs(model, batches, cfg.head_epochs, cw, cfg), "head")


def _train_backbone(cfg: FitConfig, built: Built, model: keras.Model, batches: _Batches, cw: dict[int, float],
                    history: dict, notes: list[str], roles: np.ndarray | None) -> None:
    """finetune's second phase (the top layers unfrozen) or scratch (all of it), at ``cfg.lr`` cosine-decayed."""
    notes.append(backbone_phase(cfg, built, model, batches.steps, roles))
    _merge(history, _run_epochs(model, batches, cfg.epochs, cw, cfg), cfg.mode)


def backbone_phase(cfg: FitConfig, built: Built, model: keras.Model, steps: int, roles: np.ndarray | None) -> str:
    """``model`` set up for the backbone phase (finetune's top layers or scratch's all unfrozen,
    compiled at ``cfg.lr`` cosine-decayed over ``cfg.epochs`` of ``steps``, on ``training_loss(cfg, roles)``);
    a note saying so."""
    if cfg.mode == "scratch":
        built.base.trainable = True
        n = len(built.base.trainable_weights)
    else:
        n = _set_backbone_trainable(built.base, cfg.unfreeze, cfg.train_batchnorm)
    bn = "BatchNorm trained too" if (cfg.train_batchnorm or cfg.mode == "scratch") else "BatchNorm frozen (inference mode)"
    _compile(model, cfg.lr, steps * cfg.epochs, cfg, decay=True, roles=roles)
    return f"{cfg.mode}: {n} backbone layers trainable ({bn}), lr {cfg.lr:g} cosine-decayed over {cfg.epochs} epochs"


def _fit_head_on_embeddings(cfg: FitConfig, model: keras.Model, embeddings: tuple[np.ndarray, np.ndarray | None],
                            y_train: np.ndarray, y_val: np.ndarray | None, n_classes: int,
                            cw: dict[int, float], init: tuple[np.ndarray, np.ndarray] | None,
                            roles: np.ndarray | None) -> dict:
    """Train Dropout+Dense on cached pooled features (from ``init``, when given), then copy it into ``model``'s head."""
    import keras

    e_train, e_val = embeddings
    validation = None if e_val is None else (e_val, keras.utils.to_categorical(y_val, n_classes))
    inp = keras.Input((e_train.shape[1],), name="features")
    x = keras.layers.Dropout(cfg.dropout, seed=cfg.draw_seed)(inp) if cfg.dropout else inp
    out = keras.layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    head = keras.Model(inp, out, name="head")
    if init is not None:
        head.get_layer("probabilities").set_weights(list(init))
    head.compile(
        optimizer=keras.optimizers.AdamW(cfg.head_lr, weight_decay=cfg.weight_decay),
        loss=training_loss(cfg, roles),
        metrics=["accuracy"],
    )
    h = head.fit(
        e_train, keras.utils.to_categorical(y_train, n_classes),
        validation_data=validation,
        epochs=cfg.embedding_head_epochs, batch_size=cfg.batch_size, class_weight=cw, verbose=0,
        callbacks=[] if validation is None else [keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=max(5, 2 * cfg.patience), restore_best_weights=True)],
    )
    model.get_layer("probabilities").set_weights(head.get_layer("probabilities").get_weights())
    return h.history


def _fit_logreg(cfg: FitConfig, built: Built, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
                y_val: np.ndarray, n_classes: int, cw: dict[int, float],
                embeddings: tuple[np.ndarray, np.ndarray] | None, notes: list[str]) -> keras.Model:
    import keras
    from sklearn.linear_model import LogisticRegression

    if embeddings is None:
        e_train = embed(built.model, x_train, desc="embedding train")
        e_val = embed(built.model, x_val, desc="embedding val")
    else:
        e_train, e_val = embeddings
    best = None
    for c in cfg.logreg_c:
        clf = LogisticRegression(C=c, max_iter=3000, class_weight=cw if cfg.class_weighting else None)
        clf.fit(e_train, y_train)
        acc = float((clf.predict(e_val) == y_val).mean())
        notes.append(f"logreg C={c:g}: val accuracy {100 * acc:.2f} %")
        if best is None or acc > best[0]:
            best = (acc, c, clf)
    _, c, clf = best
    notes.append(f"logreg: chose C={c:g} on validation")
    model = classifier(built, n_classes, 0.0, cfg.draw_seed)
    dense = model.get_layer("probabilities")
    w = np.zeros((clf.coef_.shape[1], n_classes), np.float32)
    b = np.full((n_classes,), -1e4, np.float32)  # classes absent from training never win
    for j, cls in enumerate(clf.classes_):
        w[:, cls] = clf.coef_[j] if clf.coef_.shape[0] > 1 else (clf.coef_[0] if j == 1 else -clf.coef_[0]) / 2
        b[cls] = clf.intercept_[j] if clf.intercept_.shape[0] > 1 else (clf.intercept_[0] if j == 1 else -clf.intercept_[0]) / 2
    dense.set_weights([w, b])
    keras.utils.set_random_seed(cfg.draw_seed)
    return model


def chosen_epochs(history: dict) -> dict[str, int]:
    """Epochs per training phase up to the one early stopping kept (lowest validation loss).

    These are what a refit on train+val runs, without validation to stop on.
    """
    best: dict[str, tuple[float, int]] = {}
    counts: dict[str, int] = {}
    for phase, loss in zip(history.get("phase", []), history.get("val_loss", [])):
        counts[phase] = counts.get(phase, 0) + 1
        if phase not in best or loss < best[phase][0]:
            best[phase] = (loss, counts[phase])
    return {phase: n for phase, (_, n) in best.items()}


def refit_config(cfg: FitConfig, history: dict) -> FitConfig:
    """``cfg`` with each phase's epochs fixed to what validation chose (see :func:`chosen_epochs`)."""
    from dataclasses import replace

    if cfg.mode == "logreg":
        raise ConfigError("--refit works with the features, finetune and scratch modes",
                          "drop --refit, or use --mode finetune")
    n = chosen_epochs(history)
    head = n.get("head")
    return replace(
        cfg, refit=False,
        head_epochs=head if head and not cfg.head_on_embeddings else cfg.head_epochs,
        embedding_head_epochs=head if head and cfg.head_on_embeddings else cfg.embedding_head_epochs,
        epochs=n.get(cfg.mode, cfg.epochs) if cfg.mode in ("finetune", "scratch") else cfg.epochs,
    )


def predict(model: keras.Model, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Class probabilities of a Keras classifier on uint8 images."""
    return embed(model, x, batch_size, desc="predicting")

