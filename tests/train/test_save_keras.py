"""A bundle's model.keras holds the weights and graph, not the optimizer's state."""

import zipfile

import numpy as np

from train.export import save_without_optimizer


def test_model_keras_is_saved_without_the_optimizer_and_the_model_keeps_it(tmp_path):
    import keras

    inputs = keras.Input((8,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(keras.layers.Dense(16)(inputs)))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    x, y = np.random.default_rng(0).normal(size=(32, 8)).astype("float32"), np.arange(32) % 3
    model.fit(x, y, epochs=1, verbose=0)  # Adam now has its moments
    opt = model.optimizer
    save_without_optimizer(model, tmp_path / "with.keras")
    assert model.optimizer is opt  # the caller's model is unchanged
    with zipfile.ZipFile(tmp_path / "with.keras") as z:
        import h5py

        z.extract("model.weights.h5", tmp_path)
    with h5py.File(tmp_path / "model.weights.h5") as h:
        assert "optimizer" not in h  # only the layers' weights
    back = keras.saving.load_model(tmp_path / "with.keras", compile=False, safe_mode=True)
    np.testing.assert_allclose(back.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    save_without_optimizer(back, tmp_path / "again.keras")  # an uncompiled model: saved as it is
    assert (tmp_path / "again.keras").stat().st_size > 0
