"""videofolder: a user's clips (video files through PyAV, or folders of frames) in class folders, read as
(3, T, H, W) clips like moving-openmoji's; unreadable and too-short clips are one DataError naming the file."""

import numpy as np
import pytest
import torch
from PIL import Image

from genlab.data.base import DataError
from genlab.data.videofolder import VideoFolderDataset, count_frames

av = pytest.importorskip("av")


def frames(n, seed=0, size=16):
    """n random RGB frames (n, size, size, 3) uint8."""
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def write_video(path, pixels):
    """A lossless video (PNG frames in QuickTime), so decoded pixels equal the written ones."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("png", rate=8)
        stream.width, stream.height, stream.pix_fmt = pixels.shape[2], pixels.shape[1], "rgb24"
        for f in pixels:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(stream.encode())


def write_frame_folder(folder, pixels):
    folder.mkdir(parents=True)
    for k, f in enumerate(pixels):
        Image.fromarray(f).save(folder / f"{k:03d}.png")


def as_clip(pixels):
    return torch.from_numpy(pixels).permute(3, 0, 1, 2).float() / 127.5 - 1  # (3, T, H, W)


def dataset(root, **kw):
    return VideoFolderDataset(VideoFolderDataset.Config(root=str(root), resolution=16, **kw), progress=False)


def test_video_files_and_frame_folders_read_as_clips(tmp_path):
    a, b = frames(7, 0), frames(5, 1)
    (tmp_path / "train" / "cat").mkdir(parents=True)
    write_video(tmp_path / "train" / "cat" / "a.mov", a)
    write_frame_folder(tmp_path / "train" / "dog" / "b", b)
    ds = dataset(tmp_path, frames=3, stride=2)
    assert ds.class_names == ["cat", "dog"] and len(ds) == 2 and count_frames(ds.path(0)) == 7
    first, second = ds[0], ds[1]
    assert first["image"].shape == (3, 3, 16, 16) and int(first["label"]) == 0 and int(second["label"]) == 1
    assert torch.allclose(first["image"], as_clip(a[[0, 2, 4]]), atol=1e-6)  # frames 0, 2, 4: lossless
    assert torch.allclose(second["image"], as_clip(b[[0, 2, 4]]), atol=1e-6)
    flipped = VideoFolderDataset(VideoFolderDataset.Config(root=str(tmp_path), resolution=16, frames=3,
                                                           stride=2, hflip=True), progress=False)[(0, True)]  # fmt: skip
    assert torch.equal(flipped["image"], first["image"].flip(-1))


def test_frames_are_center_cropped_to_the_resolution(tmp_path):
    (tmp_path / "c").mkdir()
    write_video(tmp_path / "c" / "wide.mov", frames(3, 2, size=32)[:, :, :])
    item = dataset(tmp_path, frames=2)[0]
    assert item["image"].shape == (3, 2, 16, 16)


def test_a_too_short_clip_is_one_error_naming_it(tmp_path):
    (tmp_path / "c").mkdir()
    write_video(tmp_path / "c" / "short.mov", frames(4))
    with pytest.raises(DataError, match=r"short\.mov has 4 frames, needs 5"):
        dataset(tmp_path, frames=3, stride=2)
    write_frame_folder(tmp_path / "d" / "few", frames(2))
    with pytest.raises(DataError, match=r"few has 2 frames, needs 3"):
        dataset(tmp_path, frames=3)


def test_an_unreadable_clip_is_one_error_naming_it(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "broken.mp4").write_bytes(b"not a video at all" * 10)
    with pytest.raises(DataError, match=r"cannot read clip .*broken\.mp4"):
        dataset(tmp_path)


def test_no_clips_and_bad_config_are_errors(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="no clips in class folders"):
        dataset(tmp_path)
    with pytest.raises(ValueError, match="stride"):
        VideoFolderDataset.Config(root=str(tmp_path), stride=0).validate()
