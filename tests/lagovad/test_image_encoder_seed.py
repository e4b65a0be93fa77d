"""Random-weight image encoders are seeded: features of two loads (two processes, ``extract``
and ``detect``, a store and a held-out folder) are comparable."""

from __future__ import annotations

import numpy as np
import torch

from lagovad.image_encoder import load_image_encoder


def test_random_encoder_is_the_same_on_every_load():
    frames = np.random.default_rng(0).integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = load_image_encoder("lagovad-clip-tiny", None, device="cpu").encode(frames)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is left alone
    torch.manual_seed(7)  # whatever the global RNG holds
    b = load_image_encoder("lagovad-clip-tiny", "none", device="cpu").encode(frames)
    c = load_image_encoder("lagovad-clip-tiny", None, device="cpu", seed=1).encode(frames)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)
