"""Pictures of samples: image grids as PNG (Pillow), 2-D point clouds as scatter plots and
1-D sequences as line plots (matplotlib)."""

import math

import numpy as np
import torch

# the shorter side of an image grid, at least, in pixels: 16 8x8 digits at 4 px a pixel made 133,
# too small to read
MIN_GRID_SIDE = 256


def image_grid(images, levels, columns=None, scale=None, gap=1):
    """One PIL image tiling `images` (N, C, H, W) of integer levels 0..levels-1, each pixel drawn
    as a scale x scale block (by default the smallest whole scale that makes the grid's shorter
    side MIN_GRID_SIDE pixels or more), with `gap` pixels of white between tiles."""
    from PIL import Image

    n, channels, height, width = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    if scale is None:
        scale = max(1, math.ceil(MIN_GRID_SIDE / min(rows * height, columns * width)))
    pixels = (images.detach().cpu().double().clamp(0, levels - 1) * (255 / (levels - 1))).round()
    pixels = pixels.to(torch.uint8).numpy().transpose(0, 2, 3, 1)
    pixels = pixels.repeat(scale, axis=1).repeat(scale, axis=2)
    cell_h, cell_w = height * scale + gap, width * scale + gap
    canvas = np.full((rows * cell_h + gap, columns * cell_w + gap, channels), 255, np.uint8)
    for i, tile in enumerate(pixels):
        top, left = gap + (i // columns) * cell_h, gap + (i % columns) * cell_w
        canvas[top : top + height * scale, left : left + width * scale] = tile
    return Image.fromarray(canvas[..., 0] if channels == 1 else canvas)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def scatter_plot(samples, reference, path, title="", log_density=None, resolution=200):
    """Side-by-side scatter plots of `reference` points (the data) and `samples`, to `path`; with
    `log_density` (points (M, 2) -> log-densities (M,)) a third panel shows the model's density
    on a resolution x resolution grid over the same window."""
    plt = _pyplot()
    points = [reference.detach().cpu().numpy(), samples.detach().cpu().numpy()]
    both = np.concatenate(points)
    low, high = np.percentile(both, 0.5, axis=0), np.percentile(both, 99.5, axis=0)
    panels = 2 if log_density is None else 3
    figure, axes = plt.subplots(1, panels, figsize=(4 * panels, 4), sharex=True, sharey=True)
    for axis, cloud, name in zip(axes, points, ["data", "samples"]):
        axis.scatter(cloud[:, 0], cloud[:, 1], s=1, alpha=0.4, linewidths=0)
        axis.set_title(f"{name} ({len(cloud)} points)")
    if log_density is not None:
        xs, ys = (torch.linspace(float(a), float(b), resolution) for a, b in zip(low, high))
        grid = torch.cartesian_prod(ys, xs).flip(1)  # rows of the picture: y
        with torch.no_grad():
            density = log_density(grid).exp().view(resolution, resolution).cpu().numpy()
        axes[2].imshow(
            density, origin="lower", extent=(low[0], high[0], low[1], high[1]), aspect="auto"
        )
        axes[2].set_title("model density")
    for axis in axes:
        axis.set_xlim(low[0], high[0])
        axis.set_ylim(low[1], high[1])
        axis.set_aspect("equal")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def line_plot(sequences, levels, path, title="", rows=4):
    """The first `rows` sequences (N, 1, L) of integer levels, one line plot each, to `path`."""
    plt = _pyplot()
    shown = sequences[:rows, 0].detach().cpu().numpy()
    figure, axes = plt.subplots(
        len(shown), 1, figsize=(10, 1.6 * len(shown)), sharex=True, squeeze=False
    )
    for axis, sequence in zip(axes[:, 0], shown):
        axis.plot(sequence, linewidth=0.7)
        axis.set_ylim(-0.5, levels - 0.5)
    axes[-1, 0].set_xlabel("step")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def can_draw(data):
    """Whether `data` has a picture: images (C, H, W) with 1 or 3 channels, sequences (1, L) of
    levels, or 2-D points."""
    if data.discrete:
        return (len(data.shape) == 3 and data.shape[0] in (1, 3)) or (
            len(data.shape) == 2 and data.shape[0] == 1
        )
    return data.shape == (2,)


def save_samples(samples, data, path, title="", log_density=None, columns=None):
    """A PNG of samples of `data` (a gdm_engine.data.Data): a grid for images (`columns` wide,
    default square), line plots for sequences, a scatter plot against the validation split for
    2-D points (training pictures never read the test split), beside the model's density where
    `log_density` is given."""
    if not can_draw(data):
        raise ValueError(f"no picture for examples of shape {data.shape}: save them as .npz")
    if data.discrete and len(data.shape) == 2:
        line_plot(samples, data.levels, path, title)
    elif data.discrete:
        image_grid(samples, data.levels, columns).save(path)
    else:
        scatter_plot(samples, data.valid, path, title, log_density)


def contact_sheet(paths, labels, path, columns=5, label_height=18):
    """The pictures `paths` side by side, `columns` to a row, each under its label: the results
    table's sample grids in one PNG."""
    from PIL import Image, ImageDraw

    tiles = [Image.open(p).convert("RGB") for p in paths]
    width, height = max(t.width for t in tiles), max(t.height for t in tiles) + label_height
    rows = math.ceil(len(tiles) / columns)
    sheet = Image.new("RGB", (width * min(columns, len(tiles)), height * rows), "white")
    for i, (tile, label) in enumerate(zip(tiles, labels)):
        left, top = (i % columns) * width, (i // columns) * height
        sheet.paste(tile, (left, top + label_height))
        ImageDraw.Draw(sheet).text((left + 4, top + 3), label, fill="black")
    sheet.save(path)
