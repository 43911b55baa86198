"""`zeroshot.poses.preview.overlay_poses` as this branch implements it (a minimal version for the app: the poses
engineer's `zeroshot/poses/preview.py` replaces it at merge, and this file goes with it)."""

import numpy as np
import pytest

from zeroshot.poses import PoseSequence
from zeroshot.poses.preview import overlay_poses


def _pose(x):
    body = np.zeros((1, 18, 3))
    body[0, 1] = (x, 0.3, 1.0)  # neck
    body[0, 2] = (x - 0.2, 0.35, 1.0)  # right shoulder
    body[0, 3] = (x - 0.25, 0.6, 1.0)  # right elbow
    return body


def test_overlay_blends_each_skeleton_over_its_picture():
    rng = np.random.default_rng(0)
    poses = PoseSequence(np.concatenate([_pose(0.4), _pose(0.6)]), size=(200, 100))
    frames = rng.integers(0, 256, (2, 50, 80, 3), dtype=np.uint8)
    result = overlay_poses(frames, poses)
    skeletons = poses.render(80, 50).astype(np.float64)  # drawn at the pictures' size, whatever the canvas
    for index in range(2):
        drawn = skeletons[index].any(axis=-1)
        assert 0 < drawn.mean() < 0.5
        expected = np.rint(0.2 * frames[index] + 0.8 * skeletons[index])  # SKELETON_OPACITY 0.8, written out
        np.testing.assert_array_equal(result[index][drawn], expected[drawn])
        np.testing.assert_array_equal(result[index][~drawn], frames[index][~drawn])  # the rest untouched
    # One image: every pose over the same picture; marked frames get a red border, the others none.
    single = overlay_poses(frames[0], poses, marks=np.array([False, True]))
    np.testing.assert_array_equal(single[0], result[0])
    assert (single[1, 0] == (255, 0, 0)).all() and (single[1, :, -1] == (255, 0, 0)).all()
    with pytest.raises(ValueError, match="3 frames for 2 poses"):
        overlay_poses(np.zeros((3, 8, 8, 3), np.uint8), poses)
