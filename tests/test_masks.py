"""Character masks: the real astronaut photo segmented where her pose is, user mask files, resizing to attention
resolutions against a block mean written here, and clear messages when there is no character or SAM is missing."""

import importlib.util

import numpy as np
import pytest
from PIL import Image

from zeroshot.errors import ZeroshotError
from zeroshot.masks import character_mask, load_mask, resize_mask
from zeroshot.poses import detect_source_pose
from zeroshot.testing import astronaut


@pytest.fixture(scope="module")
def photo():
    return astronaut()


@pytest.fixture(scope="module")
def pose_box(photo):
    """The box around the astronaut's detected joints, in pixels: (left, top, right, bottom)."""
    pose = detect_source_pose(photo)
    points = pose.pixels()[0][pose.visible[0]]
    (left, top), (right, bottom) = points.min(axis=0).astype(int), points.max(axis=0).astype(int)
    return left, top, right, bottom


@pytest.mark.parametrize("method", ["selfie", "pose"])
def test_astronaut_mask_covers_her_and_not_the_background(photo, pose_box, method):
    mask = character_mask(photo, method)
    assert mask.shape == (512, 512) and mask.dtype == bool
    left, top, right, bottom = pose_box
    assert mask[top:bottom, left:right].mean() > 0.75  # the body between her joints
    assert mask[:150, 400:].mean() < 0.05  # the space shuttle, top right
    assert mask[:60, :60].mean() < 0.05  # the flag, top left
    assert 0.25 < mask.mean() < 0.7


def test_no_character_asks_for_a_mask_file():
    sky = np.full((128, 128, 3), (120, 160, 220), np.uint8)
    for method in ("selfie", "pose"):
        with pytest.raises(ZeroshotError, match=rf"The {method} segmentation found no character.*give a mask file"):
            character_mask(sky, method)


def test_resize_mask_is_the_block_mean():
    rng = np.random.default_rng(0)
    mask = rng.uniform(size=(64, 96)) < 0.4
    for height, width in [(32, 48), (8, 12), (1, 1)]:
        block = mask.reshape(height, 64 // height, width, 96 // width).mean(axis=(1, 3))
        np.testing.assert_allclose(resize_mask(mask, height, width, threshold=None), block, atol=1e-6)
        np.testing.assert_array_equal(resize_mask(mask, height, width), block > 0.5)
    half = np.zeros((64, 64), bool)
    half[:, :32] = True
    np.testing.assert_array_equal(resize_mask(half, 8, 8), np.repeat([[True] * 4 + [False] * 4], 8, axis=0))


def test_user_mask_files(tmp_path):
    drawn = np.zeros((100, 200), np.uint8)
    drawn[20:80, 50:120] = 255
    Image.fromarray(drawn).save(tmp_path / "mask.png")
    np.testing.assert_array_equal(load_mask(tmp_path / "mask.png", (200, 100)), drawn > 127)
    # Half the size, same shape: resized; transparency marks the character when there is any.
    Image.fromarray(drawn[::2, ::2]).save(tmp_path / "small.png")
    assert load_mask(tmp_path / "small.png", (200, 100)).sum() == (drawn > 127).sum()
    rgba = np.zeros((100, 200, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[..., 3] = drawn
    Image.fromarray(rgba).save(tmp_path / "cutout.png")
    np.testing.assert_array_equal(load_mask(tmp_path / "cutout.png", (200, 100)), drawn > 127)

    with pytest.raises(ZeroshotError, match="is 200x100, which does not have the shape of the 100x100 source image"):
        load_mask(tmp_path / "mask.png", (100, 100))
    Image.fromarray(np.zeros((100, 200), np.uint8)).save(tmp_path / "black.png")
    with pytest.raises(ZeroshotError, match="marks nothing: paint the character white"):
        load_mask(tmp_path / "black.png", (200, 100))
    with pytest.raises(ZeroshotError, match="does not exist"):
        load_mask(tmp_path / "missing.png", (200, 100))
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ZeroshotError, match="Cannot read mask"):
        load_mask(tmp_path / "text.png", (200, 100))


def test_sam_says_what_it_needs(tmp_path, photo):
    with pytest.raises(ZeroshotError, match="need a local Segment Anything checkpoint"):
        character_mask(photo, "sam")
    with pytest.raises(ZeroshotError, match=r"SAM checkpoint .* does not exist"):
        character_mask(photo, "sam", sam_checkpoint=tmp_path / "sam_vit_b_01ec64.pth")
    unnamed = tmp_path / "weights.pth"
    unnamed.write_bytes(b"")
    with pytest.raises(ZeroshotError, match="give the model type, one of vit_h, vit_l, vit_b"):
        character_mask(photo, "sam", sam_checkpoint=unnamed)
    # The pinned environment has no segment-anything (it needs torchvision): the message names the extra.
    assert importlib.util.find_spec("segment_anything") is None
    with pytest.raises(ZeroshotError, match=r'pip install -e "\.\[sam\]"'):
        character_mask(photo, "sam", sam_checkpoint=unnamed, sam_model_type="vit_b")
