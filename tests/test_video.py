"""Video and image I/O: round trips, a real video, errors, and outputs that appear only once complete."""

import os
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zeroshot.errors import ZeroshotError
from zeroshot.testing import sample_video_path
from zeroshot.video import check_output_path, load_image, read_video, write_video


def _smooth_frames(count=6, height=48, width=64):
    """Gradients that move from frame to frame: compressible, so lossy codecs keep them close."""
    y, x = np.mgrid[0:height, 0:width]
    frames = [
        np.stack([(x * 4 + 10 * i) % 256, (y * 5) % 256, np.full_like(x, 40 * i % 256)], -1) for i in range(count)
    ]
    return np.stack(frames).astype(np.uint8)


@pytest.mark.parametrize("name, tolerance", [("clip.mp4", 6.0), ("clip.gif", 8.0)])
def test_video_round_trip(tmp_path, name, tolerance):
    frames = _smooth_frames()
    path = write_video(frames, tmp_path / name, fps=12.5)
    video = read_video(path)
    assert video.frames.shape == frames.shape and video.size == (64, 48)
    assert video.fps == pytest.approx(12.5, abs=0.05)
    assert np.abs(video.frames.astype(float) - frames).mean() < tolerance
    assert sorted(os.listdir(tmp_path)) == [name]  # nothing temporary left behind


def test_png_folder_round_trip_is_lossless(tmp_path):
    frames = _smooth_frames(count=3)
    folder = write_video(frames, tmp_path / "frames", fps=8)
    names = sorted(os.listdir(folder))
    assert names == ["frame_00000.png", "frame_00001.png", "frame_00002.png"]
    for frame, name in zip(frames, names, strict=True):
        np.testing.assert_array_equal(np.asarray(Image.open(folder / name)), frame)
    assert sorted(os.listdir(tmp_path)) == ["frames"]


def test_reads_a_real_video():
    video = read_video(sample_video_path("carphone"))
    assert video.frames.shape == (120, 144, 176, 3)
    assert video.fps == pytest.approx(29.97)
    assert 40 < video.frames.mean() < 220  # real content, not a blank decode
    assert len(read_video(sample_video_path("carphone"), max_frames=7)) == 7


def test_interrupted_write_leaves_nothing_that_looks_complete(tmp_path):
    """A signal arrives while ffmpeg is encoding (as Ctrl-C would): no file is left at the target, nor any staging
    file."""

    class Interrupted(Exception):
        pass

    def interrupt(signum, frame):
        raise Interrupted

    frames = np.random.default_rng(0).integers(0, 255, (1500, 96, 128, 3), dtype=np.uint8)  # noise: slow to encode
    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(Exception) as raised:  # imageio-ffmpeg may wrap the interruption in an OSError
            write_video(frames, tmp_path / "out.mp4", fps=10)
        chain = [raised.value, raised.value.__cause__, raised.value.__context__]
        assert any(isinstance(error, Interrupted) for error in chain)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert os.listdir(tmp_path) == []


def test_bad_paths_and_files(tmp_path):
    with pytest.raises(ZeroshotError, match=r"Video .*missing.mp4.* does not exist"):
        read_video(tmp_path / "missing.mp4")
    (tmp_path / "notes.mp4").write_text("not a video")
    with pytest.raises(ZeroshotError, match=r"Cannot read .*notes.mp4.* as a video"):
        read_video(tmp_path / "notes.mp4")
    with pytest.raises(ZeroshotError, match=r"use a .mp4 or .gif file or a folder path"):
        check_output_path(tmp_path / "out.avi")
    with pytest.raises(ZeroshotError, match=r"notes.mp4.* is a file, not a folder"):
        check_output_path(tmp_path / "notes.mp4" / "out.mp4")
    assert check_output_path(tmp_path / "nowhere" / "deeper" / "out.mp4")  # missing folders are made when writing
    assert not (tmp_path / "nowhere").exists()  # ... and only then
    write_video(np.zeros((2, 8, 8, 3), np.uint8), tmp_path / "nowhere" / "deeper" / "out.gif", 4)
    assert (tmp_path / "nowhere" / "deeper" / "out.gif").is_file()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.png").write_bytes(b"")
    with pytest.raises(ZeroshotError, match=r"is a folder that is not empty"):
        check_output_path(tmp_path / "full")
    folder_named_like_a_file = (tmp_path / "full").rename(tmp_path / "full.mp4")
    with pytest.raises(ZeroshotError, match=r"full.mp4.* names a folder, but a file is written there"):
        check_output_path(folder_named_like_a_file)
    with pytest.raises(ZeroshotError, match=r"Not enough free disk space .*out.mp4"):
        check_output_path(tmp_path / "out.mp4", num_frames=10**6, size=(4096, 4096))  # 50 TB of video
    with pytest.raises(ZeroshotError, match=r"Image .*nope.png.* does not exist"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ZeroshotError, match=r"is not an image that can be read"):
        load_image(tmp_path / "notes.mp4")


def test_unwritable_output_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        # Root ignores permission bits; /proc/sys is read-only even for root on Linux.
        unwritable = locked if not os.access(locked, os.W_OK) else Path("/proc/sys")
        assert not os.access(unwritable, os.W_OK)
        with pytest.raises(ZeroshotError, match="is not writable"):
            check_output_path(unwritable / "out.mp4")
    finally:
        locked.chmod(0o700)


def test_outputs_get_the_usual_permissions(tmp_path):
    """Staging files are private (0600) while written; finished outputs get the mode any new file gets."""
    umask = os.umask(0o022)
    os.umask(umask)
    file = write_video(_smooth_frames(count=2), tmp_path / "clip.gif", fps=4)
    folder = write_video(_smooth_frames(count=2), tmp_path / "frames", fps=4)
    assert file.stat().st_mode & 0o777 == 0o666 & ~umask
    assert folder.stat().st_mode & 0o777 == 0o777 & ~umask


def test_identical_consecutive_frames_are_all_kept(tmp_path):
    frames = _smooth_frames(count=5)
    frames[2] = frames[3] = frames[1]
    for name in ("clip.gif", "clip.mp4"):
        assert len(read_video(write_video(frames, tmp_path / name, fps=8))) == 5, name


def test_odd_frame_sizes_still_make_an_mp4(tmp_path):
    """H.264 needs even sizes: a finished video of odd size is padded by its edge rather than lost."""
    frames = _smooth_frames(count=3, height=47, width=63)
    video = read_video(write_video(frames, tmp_path / "odd.mp4", fps=8))
    assert video.frames.shape == (3, 48, 64, 3)
    assert np.abs(video.frames[:, :47, :63].astype(float) - frames).mean() < 6.0
    assert read_video(write_video(frames, tmp_path / "odd.gif", fps=8)).frames.shape == (3, 47, 63, 3)


def test_photos_are_turned_upright_by_their_exif_orientation(tmp_path):
    """A phone stores a portrait photo as landscape pixels with orientation 6 (rotate 90 degrees clockwise)."""
    upright = _smooth_frames(count=1, height=40, width=24)[0]
    stored = Image.fromarray(np.rot90(upright, k=1).copy())  # what the camera wrote: turned left
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    loaded = np.asarray(load_image(tmp_path / "phone.jpg"))
    assert loaded.shape == upright.shape
    assert np.abs(loaded.astype(float) - upright).mean() < 8.0


def test_json_is_strict(tmp_path):
    import json

    from zeroshot.atomic import write_json

    path = write_json(tmp_path / "scores.json", {"psnr": float("inf"), "values": [1.5, float("nan")], "n": 3})
    text = path.read_text()
    assert "Infinity" not in text and "NaN" not in text
    assert json.loads(text) == {"psnr": None, "values": [1.5, None], "n": 3}
