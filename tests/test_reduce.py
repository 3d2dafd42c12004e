"""Partial sums added up on the device (kernels/_reduce.py): every column summed in fp32 over
any number of splits, cast to the output's dtype, the same bits on every run, and one split
written by its kernel alone."""

import pytest
import torch

from gdm_engine import testing
from gdm_engine.kernels import recording_launches
from gdm_engine.kernels._reduce import partial_sums, sum_splits


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("splits, columns", [(2, 1), (5, 3), (7, 37), (13, 16)])
def test_sums_every_column_over_its_splits(splits, columns, dtype, device, generator):
    # odd and prime sizes, past one tile both ways (the interpreter's tile is 4 x 16)
    out = torch.full((columns,), float("nan"), dtype=dtype, device=device)
    parts = partial_sums(out, splits)
    assert parts.shape == (splits, columns) and parts.dtype == torch.float32
    parts.copy_(torch.randn(splits, columns, generator=generator))
    sum_splits(parts, out)
    assert out.dtype == dtype
    tolerance = 1e-6 if dtype == torch.float32 else 1e-2
    assert testing.relative_error(out, parts.double().sum(0)) < tolerance
    again = torch.full_like(out, float("nan"))
    sum_splits(parts, again)
    assert torch.equal(out, again)  # a fixed order: the same bits every run


def test_no_split_sums_to_zero(device):
    # an empty batch: no partial sum at all, and the output is still written (0), by the kernel
    out = torch.full((5,), float("nan"), device=device)
    parts = partial_sums(out, 0)
    assert parts.shape == (0, 5)
    sum_splits(parts, out)
    assert torch.equal(out, torch.zeros(5, device=device))


def test_one_split_is_the_output_itself_and_launches_nothing(device):
    out = torch.empty(4, device=device)
    assert partial_sums(out, 1) is out  # the reducing kernel writes the final sums
    with recording_launches() as launches:
        sum_splits(out, out)
        sum_splits(partial_sums(torch.empty(0, device=device), 3), torch.empty(0, device=device))
    assert launches == []  # nothing left to add; no column to write


def test_columns_switched_off_are_zero_and_their_parts_unread(device, generator):
    parts = torch.randn(3, 11, generator=generator).to(device)
    keep = (torch.arange(11) % 3 != 0).to(device=device, dtype=torch.uint8)
    parts[:, keep == 0] = float("nan")  # never written by a kernel that skips them
    out = torch.full((11,), float("nan"), device=device)
    sum_splits(parts, out, keep)
    want = torch.where(keep != 0, parts.nan_to_num().sum(0), 0.0)
    assert torch.equal(out.isnan(), torch.zeros(11, dtype=torch.bool, device=device))
    assert torch.allclose(out, want)
