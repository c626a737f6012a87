"""A golden vector inside the repository: a tiny official-layout model's whole chain, pinned.

The official test vectors (../shared/reference) prove that our networks, schedule and sampler are the
official ones; this file keeps the full chain pinned when ../shared is absent. A tiny configuration of
the official architecture (VQGAN f4 and Swin-UNet, the shapes of `conftest.tiny_config`) gets its
weights from the official vectors' recipe (`official_reference.recipe_state_dict`), restores a seeded
16x16 input in 4 steps with a seeded generator, and must give the stored latent and image.

The stored values were made once, by `python tests/equivalence/test_golden_chain.py --write`, with the
code that passes the official equivalence tests (to <= 3e-5 of the official code's own outputs).
Regenerate them only for a change that is meant to alter the numbers, and say why in the commit.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from conftest import tiny_config
from official_reference import UNET_SEED, VQGAN_SEED, recipe_state_dict
from resshift.pipeline import ResShiftPipeline

GOLDEN = Path(__file__).with_name("golden_tiny_chain.npz")


def golden_run() -> dict[str, np.ndarray]:
    """The chain's inputs and outputs, computed now."""
    pipe = ResShiftPipeline.from_config(tiny_config())
    pipe.unet.load_state_dict(recipe_state_dict(pipe.unet, UNET_SEED))
    pipe.autoencoder.load_state_dict(recipe_state_dict(pipe.autoencoder, VQGAN_SEED))
    lq = torch.rand((1, 3, 16, 16), generator=torch.Generator().manual_seed(1))
    latents = []
    with torch.inference_mode():
        image = pipe.restore(lq, generator=torch.Generator().manual_seed(5),
                             callback=lambda info: latents.append(info["x_prev"].clone()))
    return {"lq": lq.numpy(), "x0": latents[-1].numpy(), "image": image.numpy()}


def test_the_tiny_chain_reproduces_its_golden_vector(one_thread):
    golden = dict(np.load(GOLDEN))
    now = golden_run()
    np.testing.assert_array_equal(now["lq"], golden["lq"])                 # the same seeded input
    np.testing.assert_allclose(now["x0"], golden["x0"], rtol=0, atol=2e-5)
    np.testing.assert_allclose(now["image"], golden["image"], rtol=0, atol=1e-4)
    assert golden["image"].shape == (1, 3, 64, 64) and np.ptp(golden["image"]) > 0.1     # not a flat image


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    np.savez_compressed(GOLDEN, **golden_run())
    print(f"wrote {GOLDEN}")
