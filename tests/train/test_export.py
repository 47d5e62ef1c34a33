"""Export helpers that need no conversion: calibration set, compare table."""

from __future__ import annotations

import logging

import numpy as np

from train.compare import render_table
from train.export import representative_images


def test_representative_images_spread_over_classes_and_warn_when_few(caplog):
    x = np.arange(1000).reshape(1000, 1, 1, 1).astype(np.uint8)
    y = np.repeat(np.arange(4), 250)
    rep = representative_images(x, y, n=100, seed=1)
    assert len(rep) == 100
    again = representative_images(x, y, n=100, seed=1)
    assert np.array_equal(rep, again)
    with caplog.at_level(logging.WARNING):
        few = representative_images(x[:50], y[:50], n=100)
    assert len(few) == 50 and "fewer than 300" in caplog.text


def test_compare_table_has_one_row_per_run():
    rows = [
        {"backbone": "mobilenet_v2", "mode": "logreg", "input": 160, "species_accuracy": 0.83,
         "crop_vs_weed_accuracy": 0.95, "weed_miss": 0.03, "crop_sprayed": 0.11, "background_fired": 0.0,
         "int8_bytes": 2_770_000, "p50_ms_2_threads": 1.2, "train_s": 40.0},
        {"backbone": "xception", "mode": "finetune", "input": 160, "error": "weights 'kitchenware-xception' are not installed"},
    ]
    table = render_table(rows)
    lines = table.splitlines()
    assert len(lines) == 4
    assert "83.00 %" in lines[2] and "2.77 MB" in lines[2]
    assert "skipped" in lines[3] and "not installed" in lines[3]
