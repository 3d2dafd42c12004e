"""Sample pictures: image grids large enough to see, their pixels the samples' levels."""

import pytest
import torch

from gdm_engine.pictures import MIN_GRID_SIDE, image_grid


@pytest.mark.parametrize("n, shape", [(16, (1, 8, 8)), (2, (1, 8, 8)), (64, (3, 32, 32))])
def test_a_grid_s_shorter_side_is_at_least_the_minimum(n, shape, generator):
    images = torch.randint(0, 17, (n, *shape), generator=generator)
    assert min(image_grid(images, 17).size) >= MIN_GRID_SIDE


def test_each_pixel_is_a_block_of_its_level_between_white_gaps():
    images = torch.tensor([[[[0, 16]]], [[[8, 16]]]])  # two 1x2 images
    grid = image_grid(images, 17, columns=2, scale=3, gap=1)
    assert grid.size == (2 * (2 * 3 + 1) + 1, 3 + 2)
    pixels = torch.tensor(list(grid.getdata())).view(5, 15)
    assert (pixels[1:4, 1:4] == 0).all() and (pixels[1:4, 4:7] == 255).all()
    assert (pixels[1:4, 8:11] == 128).all()
    assert (pixels[0] == 255).all() and (pixels[:, 7] == 255).all()
