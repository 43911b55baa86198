"""The One-Euro filter (Casiez, Roussel and Vogel, CHI 2012), the standard smoother of pose tracking.

An exponential low-pass filter whose cutoff rises with the filtered speed: slow motion is smoothed strongly (jitter
goes), fast motion hardly at all (no lag). Each keypoint is filtered on its own track, so a joint is never pulled
towards another one; a missing frame restarts its track.
"""

from __future__ import annotations

import math

import numpy as np


def one_euro_filter(
    points: np.ndarray,
    rate: float,
    *,
    min_cutoff: float = 1.0,
    beta: float = 1.0,
    derivative_cutoff: float = 1.0,
    unit: float = 1.0,
) -> np.ndarray:
    """Filters keypoint tracks over time.

    For each track, with `a(f) = 1 / (1 + rate / (2 pi f))`: the speed `(x_t - y_{t-1}) * rate` is low-passed at
    `derivative_cutoff`, giving `s_t`; then `y_t = y_{t-1} + a(min_cutoff + beta * |s_t|) * (x_t - y_{t-1})`. In 2D,
    both coordinates share the cutoff of the speed's length.

    Args:
        points (`np.ndarray`): `[frames, ..., 3]` keypoints `(x, y, confidence)`; confidence 0 marks a missing one.
        rate (`float`): frames per second.
        min_cutoff (`float`, *optional*, defaults to 1.0): cutoff frequency in Hz at rest.
        beta (`float`, *optional*, defaults to 1.0): how fast the cutoff rises with speed, in Hz per `unit` per
            second.
        derivative_cutoff (`float`, *optional*, defaults to 1.0): cutoff in Hz of the speed estimate.
        unit (`float`, *optional*, defaults to 1.0): the length that speeds are measured in (a body size, in the units
            of the coordinates), so `beta` does not depend on the picture's size.

    Returns:
        `np.ndarray`: the filtered keypoints, same shape; confidences and missing points unchanged.
    """
    if not rate > 0 or not min_cutoff > 0 or not derivative_cutoff > 0 or beta < 0 or not unit > 0:
        raise ValueError(
            f"rate, min_cutoff, derivative_cutoff and unit must be positive and beta not negative; got rate={rate}, "
            f"min_cutoff={min_cutoff}, beta={beta}, derivative_cutoff={derivative_cutoff}, unit={unit}."
        )

    def alpha(cutoff: np.ndarray | float) -> np.ndarray | float:
        return 1.0 / (1.0 + rate / (2 * math.pi * cutoff))

    result = np.array(points, dtype=np.float64, copy=True)
    flat = result.reshape(len(result), -1, 3)
    previous = flat[0, :, :2].copy()
    speed = np.zeros(flat.shape[1])
    tracking = flat[0, :, 2] > 0
    derivative_alpha = alpha(derivative_cutoff)
    for t in range(1, len(flat)):
        present = flat[t, :, 2] > 0
        going = present & tracking
        raw = flat[t, :, :2]
        velocity = np.linalg.norm(raw - previous, axis=-1) * rate / unit
        speed = np.where(going, speed + derivative_alpha * (velocity - speed), 0.0)
        weight = alpha(min_cutoff + beta * speed)[:, None]
        filtered = np.where(going[:, None], previous + weight * (raw - previous), raw)
        flat[t, :, :2] = np.where(present[:, None], filtered, raw)
        previous = np.where(present[:, None], filtered, previous)
        tracking = present
    return result
