"""genlab.grids.save_grid: layout, row labels drawn at the left, errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from genlab.grids import save_grid


def test_grid_without_labels_is_images_and_padding(tmp_path):
    images = torch.zeros(6, 3, 8, 8)  # mid grey
    save_grid(images, tmp_path / "g.png", nrow=3)
    a = np.asarray(Image.open(tmp_path / "g.png"))
    assert a.shape == (2 * 10 + 2, 3 * 10 + 2, 3)
    assert (a[2:10, 2:10] == 128).all() and (a[0:2] == 255).all()


def test_row_labels_widen_the_grid_and_draw_on_the_left(tmp_path):
    images = torch.ones(4, 3, 16, 16)  # white images: only the labels are dark
    save_grid(images, tmp_path / "plain.png", nrow=2)
    save_grid(images, tmp_path / "labelled.png", nrow=2, row_labels=["Flags", "Food & Drink"])
    plain = np.asarray(Image.open(tmp_path / "plain.png"))
    lab = np.asarray(Image.open(tmp_path / "labelled.png"))
    assert lab.shape[0] == plain.shape[0] and lab.shape[1] > plain.shape[1]
    left = lab.shape[1] - plain.shape[1]
    assert (lab[:, left:] == plain).all()  # the images are where they were, shifted right
    dark = lab[:, :left].min(axis=2) < 128
    rows = [dark[2 + r * 18 : 2 + r * 18 + 16].any() for r in range(2)]
    assert all(rows), "each row has its label"
    assert dark[:, : left // 2].any() and dark.sum() > 20


def test_row_label_count_must_match(tmp_path):
    with pytest.raises(ValueError, match="2 row labels for 3 rows"):
        save_grid(torch.zeros(3, 3, 4, 4), tmp_path / "g.png", nrow=1, row_labels=["a", "b"])


def test_pipeline_reexports_save_grid():
    from genlab import grids, pipeline

    assert pipeline.save_grid is grids.save_grid
