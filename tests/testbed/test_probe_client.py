"""What the probe client counts as a correct answer."""

from __future__ import annotations

import numpy as np

from testbed.probe_client import answers_match


def test_fusion_rounding_is_correct_but_a_wrong_answer_is_not() -> None:
    expected = np.linspace(-11.7, 11.7, 1000, dtype=np.float32)
    # What a cut that splits Conv+BN fusion does to MobileNetV2's logits: about 4e-5.
    assert answers_match(expected + 3.6e-5, expected)
    assert not answers_match(expected + 1e-3, expected)
    assert not answers_match(expected[::-1], expected)
    small = np.full(10, 1e-3, np.float32)  # outputs near zero keep an absolute floor
    assert answers_match(small + 5e-6, small)
    assert not answers_match(small + 1e-4, small)
