"""The training data path: features stay on disk, read by workers; files checked once."""

from __future__ import annotations

import numpy as np
import torch

from lagovad.data import feature_index, load_split
from lagovad.synthesis import DynamicSynthesizer, Neighbours
from lagovad.train import epoch_batches
from tests.lagovad.helpers import DIM, MODEL_ID, make_store


def test_workers_give_the_same_batches_as_the_training_thread(tmp_path):
    store = make_store(tmp_path / "store", n_train=4, n_val=1)
    data = load_split(store, "train", MODEL_ID, DIM)
    synth = DynamicSynthesizer(data, Neighbours.from_lists([[]] * len(data)), max_len=64, seed=1)
    order = [list(range(i, min(i + 5, len(synth)))) for i in range(0, len(synth), 5)][::-1]
    inline = list(epoch_batches(synth, 2, order, workers=0))
    forked = list(epoch_batches(synth, 2, order, workers=2))
    assert len(inline) == len(forked) == len(order)
    for a, b in zip(inline, forked, strict=True):
        assert torch.equal(a.features, b.features) and torch.equal(a.mask, b.mask)
        assert a.categories == b.categories and a.descriptions == b.descriptions
    # the rows are read from the store's files: equal to loading them whole
    video = data.videos[3]
    np.testing.assert_array_equal(data.read(3, 2, 7), video.features[2:7])


def test_feature_files_are_read_once_and_reread_when_they_change(tmp_path):
    store = make_store(tmp_path / "store", n_train=2, n_val=1)
    data = load_split(store, "train", MODEL_ID, DIM)
    first = feature_index(store, data)
    assert first.read == len(data)
    np.testing.assert_allclose(first.means[0], data.read(0).mean(axis=0), rtol=1e-6)
    again = feature_index(store, data)
    assert again.read == 0 and again.checksums == first.checksums
    path = store.root / data.locations[1]
    arr = np.load(path)
    np.save(path, arr * 2.0)
    changed = feature_index(store, data)
    assert changed.read == 1
    assert changed.checksums[1] != first.checksums[1]
    assert changed.checksums[:1] == first.checksums[:1]
