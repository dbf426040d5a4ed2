"""The dense CRF that may refine pseudo labels: it follows colour edges, keeps what the network is sure of, and
takes the workflow's settings."""

from __future__ import annotations

import numpy as np
import pytest

from rlseg.crf import CrfParams, refine


def _two_regions(h: int = 60, w: int = 80) -> tuple[np.ndarray, np.ndarray]:
    image = np.zeros((h, w, 3), np.uint8)
    image[:, w // 2 :] = (200, 180, 40)
    truth = np.zeros((h, w), bool)
    truth[:, w // 2 :] = True
    return image, truth


def test_noisy_probability_snaps_to_the_colour_edge():
    image, truth = _two_regions()
    rng = np.random.default_rng(0)
    prob = np.clip(0.25 + 0.5 * truth + rng.normal(0, 0.3, truth.shape), 0.01, 0.99).astype(np.float32)
    out = refine(image, prob)
    assert out.shape == prob.shape and out.dtype == np.float32
    before, after = ((prob > 0.5) == truth).mean(), ((out > 0.5) == truth).mean()
    assert before < 0.85 and after > 0.99


def test_a_blurred_outline_moves_to_the_edge():
    image, truth = _two_regions()
    # the network's outline, 4 px off and soft, as an upsampled low-resolution output is
    x = np.arange(truth.shape[1])
    prob = np.tile(1 / (1 + np.exp(-(x - 44) / 3.0)), (truth.shape[0], 1)).astype(np.float32)
    err_before = ((prob > 0.5) != truth).mean()
    err_after = ((refine(image, prob) > 0.5) != truth).mean()
    assert err_after < err_before / 2


def test_a_confident_map_on_a_flat_image_is_kept():
    image = np.full((40, 50, 3), 128, np.uint8)
    prob = np.full((40, 50), 0.02, np.float32)
    prob[10:30, 15:35] = 0.98
    out = refine(image, prob)
    assert ((out > 0.5) == (prob > 0.5)).mean() > 0.97


def test_no_pairwise_weight_leaves_the_probability_as_it_is():
    image, truth = _two_regions(20, 24)
    prob = np.random.default_rng(1).uniform(0.05, 0.95, truth.shape).astype(np.float32)
    out = refine(image, prob, CrfParams(w_bilateral=0, w_gaussian=0))
    np.testing.assert_allclose(out, prob, atol=1e-5)


def test_workflow_settings_are_the_crf_params():
    from rlseg.settings import defaults

    params = defaults("pseudo_gt")["crf_params"]
    assert CrfParams(**params) == CrfParams()
    with pytest.raises(TypeError):
        CrfParams(**{**params, "unknown": 1})
