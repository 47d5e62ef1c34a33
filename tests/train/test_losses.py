"""The training loss: species cross-entropy, plus the weed/crop/background groups' with ``--group-loss``."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from train import cli  # noqa: E402
from train.fit import FitConfig, training_loss  # noqa: E402
from train.losses import GroupedCrossentropy, membership  # noqa: E402
from edge.core.errors import ConfigError  # noqa: E402

# classes: background, black_grass (weed), loose_silky_bent (weed), common_wheat (crop)
ROLES = np.array([-1, 1, 1, 0])
BLACK_GRASS = [0.0, 1.0, 0.0, 0.0]


def _loss(loss, y_true, y_pred) -> float:
    return float(loss(np.array([y_true], np.float32), np.array([y_pred], np.float32)))


def test_membership_is_one_group_per_class():
    m = membership(ROLES)
    assert m.shape == (4, 3) and m.dtype == np.float32
    np.testing.assert_array_equal(m, [[0, 0, 1], [1, 0, 0], [1, 0, 0], [0, 1, 0]])


def test_membership_refuses_an_unknown_role():
    with pytest.raises(ValueError, match="roles must be"):
        membership([1, 2])


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("pred", [[0.1, 0.2, 0.6, 0.1], [0.05, 0.05, 0.1, 0.8], [0.25, 0.25, 0.25, 0.25]])
def test_weight_zero_is_the_species_cross_entropy(smoothing, pred):
    plain = keras.losses.CategoricalCrossentropy(label_smoothing=smoothing)
    grouped = GroupedCrossentropy(membership(ROLES), 0.0, smoothing)
    assert _loss(grouped, BLACK_GRASS, pred) == pytest.approx(_loss(plain, BLACK_GRASS, pred), rel=1e-5)


@pytest.mark.parametrize("pred, group_term", [
    ([0.1, 0.2, 0.6, 0.1], -np.log(0.8)),  # mostly loose silky-bent: a weed either way, small group term
    ([0.1, 0.2, 0.1, 0.6], -np.log(0.3)),  # mostly wheat: a weed left standing, a large group term
    ([0.6, 0.2, 0.1, 0.1], -np.log(0.3)),  # mostly background
])
def test_group_term_is_the_cross_entropy_of_the_summed_groups(pred, group_term):
    grouped = GroupedCrossentropy(membership(ROLES), 2.0, 0.0)
    species = -np.log(pred[1])
    assert _loss(grouped, BLACK_GRASS, pred) == pytest.approx(species + 2.0 * group_term, rel=1e-5)


def test_a_confusion_across_groups_costs_more_than_one_within():
    grouped = GroupedCrossentropy(membership(ROLES), 1.0, 0.1)
    within = _loss(grouped, BLACK_GRASS, [0.05, 0.25, 0.6, 0.1])
    across = _loss(grouped, BLACK_GRASS, [0.05, 0.25, 0.1, 0.6])
    plain = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)
    assert _loss(plain, BLACK_GRASS, [0.05, 0.25, 0.6, 0.1]) == pytest.approx(
        _loss(plain, BLACK_GRASS, [0.05, 0.25, 0.1, 0.6]), rel=1e-5)
    assert across - within == pytest.approx(np.log(0.85 / 0.35), rel=1e-4)  # groups' weed mass 0.85 vs 0.35


def test_the_loss_survives_keras_serialisation():
    grouped = GroupedCrossentropy(membership(ROLES), 1.5, 0.1)
    again = keras.losses.deserialize(keras.losses.serialize(grouped))
    assert isinstance(again, GroupedCrossentropy)
    assert again.weight == 1.5 and again.label_smoothing == pytest.approx(0.1)
    np.testing.assert_array_equal(again.groups, grouped.groups)


def test_training_loss_is_plain_without_group_loss_and_grouped_with_it():
    assert isinstance(training_loss(FitConfig(), None), keras.losses.CategoricalCrossentropy)
    loss = training_loss(FitConfig(group_loss=1.0), ROLES)
    assert isinstance(loss, GroupedCrossentropy) and loss.weight == 1.0


def test_group_loss_without_roles_says_how_to_fix_it():
    with pytest.raises(ConfigError, match="--roles"):
        training_loss(FitConfig(group_loss=1.0), None)


def test_negative_group_loss_is_refused():
    with pytest.raises(ConfigError, match="group_loss"):
        FitConfig(group_loss=-1.0)


@pytest.mark.parametrize("words, weight", [([], 0.0), (["--group-loss", "1"], 1.0), (["--group-loss", "0.5"], 0.5)])
def test_the_option_reaches_the_fit_config(words, weight):
    a = cli.build_parser().parse_args(["train", "--data", "d", "--weeds", "w", *words])
    assert cli._fit_config(a).group_loss == weight


def test_the_backbone_phase_compiles_the_grouped_loss():
    """backbone_phase (also augment-bench's) compiles the run's loss from the roles it is given."""
    from train.fit import backbone_phase, build_backbone, classifier

    cfg = FitConfig(weights="none", input_size=32, group_loss=1.0)
    built = build_backbone(cfg)
    model = classifier(built, len(ROLES), cfg.dropout, cfg.seed)
    backbone_phase(cfg, built, model, steps=1, roles=ROLES)
    assert isinstance(model.loss, GroupedCrossentropy) and model.loss.weight == 1.0
    np.testing.assert_array_equal(model.loss.groups, membership(ROLES))
