"""The convolution engine of causal_conv1d and masked_conv2d: sequences (images are flattened to
sequences of their pixels) convolved with K taps, each tap reading the input at an offset.

* causal taps (WaveNet, van den Oord et al., 2016, sec. 2.1): tap k of output time t reads
  t - (K-1-k)·d, with x taken as zero before t = 0, and weighs it with weight position k;
* a tap table (masked_conv2d): an int32 (K, 3) tensor whose row k, (dh_k, dw_k, p_k), says that
  tap k reads the pixel (dh_k, dw_k) away on an image of width W, zero outside the image, and
  weighs it with position p_k = row·kw + column of the kernel window. Only the taps a mask leaves
  active are listed: no work goes to the others.

Every kernel reads the convolution as one matrix product per group over the reduction index
j = i·K + k (in-channel i, tap k), which runs taps and channels as a single pipelined loop:

    pre[o, t] = sum_j W[o, j] · X[j, t],   W[o, j] = w[o, i, p_k],
                                          X[j, t] = x[i, t + offset_k(t)]

w is the weight in its own contiguous (C_out, C_in_g, P) layout (P = K positions, or kh·kw), read
in place: no packed or transposed copy is made. A full mask laid out like the weight (bool), when
given, switches weights off as they are loaded: a masked weight is never read, so NaN or inf there
cannot reach a result. The input gradient is the mirrored convolution (every offset negated) of the
pre-activation gradient with the weight read transposed within each group (in-channels as rows),
run by the same kernels with REVERSE=True. The weight gradient is the product
dW[o, j] = sum_{n,t} dpre[n, o, t] · X[n, j, t], every tap of a channel in one program, cut into
partial sums over (sample, time) that fill the GPU; one last kernel adds them in a fixed order
(the same bits every run) and writes the gradient in the weight's layout and dtype, exactly zero
off the mask.

Two forms of each loop nest:
  * dot: tl.dot tiles (tensor cores), for groups with at least 16 in- and out-channels, and for
    every tap table;
  * direct: per-channel multiply-adds with the causal taps unrolled, for depthwise and small groups.
The gated unit computes both halves' pre-activations in one loop (two accumulators); the epilogue
adds the bias, applies the activation and an optional residual; the backward pass recomputes the
pre-activation with the activation's gradient fused into its epilogue.
"""

import dataclasses
from typing import Optional

import torch
import triton
import triton.language as tl

from ._reduce import sum_splits
from ._runtime import (
    INTERPRETED,
    autotune,
    cdiv,
    empty,
    launch,
    next_power_of_2,
    num_programs_target,
)

# Triton's interpreter multiplies bf16 dot operands as their raw 16-bit integers; products of bf16
# values are exact in fp32, so upcasting there gives the tensor cores' result.
_UPCAST_BF16_DOT = tl.constexpr(INTERPRETED)

ACTIVATIONS = {"none": 0, "tanh": 1, "relu": 2, "gated": 3}
NONE, TANH, RELU, GATED = 0, 1, 2, 3

# A dot-product tile needs at least 16 rows and columns; below that the direct form wastes less.
MIN_DOT_CHANNELS = 16
# The weight-gradient tiles the launcher assumes when it cuts the reduction into partial sums.
_WGRAD_DOT_TILE, _WGRAD_DIRECT_ROWS, _WGRAD_MIN_BLOCK_T = 64, 8, 32


# --------------------------------------------------------------------------------------------------
# shared device helpers
# --------------------------------------------------------------------------------------------------


@triton.jit
def _tanh(x):
    # tanh(x) = 2·sigmoid(2x) - 1: sigmoid is exact in the interpreter and on every backend.
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def _tanh_grad(x):
    # tanh'(x) = 4e / (1 + e)², e = exp(−2|x|): keeps its digits where tanh saturates
    # (1 − th² of an fp32 th near ±1 does not)
    e = tl.exp(-2.0 * tl.abs(x))
    return 4.0 * e / ((1.0 + e) * (1.0 + e))


@triton.jit
def _sigmoid_grad(x):
    # σ'(x) = e / (1 + e)², e = exp(−|x|), as tanh' above
    e = tl.exp(-tl.abs(x))
    return e / ((1.0 + e) * (1.0 + e))


@triton.jit
def _dot(a, b, acc, PRECISION: tl.constexpr):
    """acc + a @ b with fp32 accumulation."""
    if _UPCAST_BF16_DOT and a.dtype == tl.bfloat16:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc)
    return tl.dot(a, b, acc, input_precision=PRECISION)


@triton.jit
def _shifted_time(t, shift, REVERSE: tl.constexpr):
    """The time a tap reads for output time t: t - shift (causal) or t + shift (mirrored)."""
    if REVERSE:
        return t + shift
    return t - shift


@triton.jit
def _tap_column(taps_ptr, k, column, ok):
    """Column `column` (0: dh, 1: dw, 2: weight position) of the tap table's rows k."""
    return tl.load(taps_ptr + 3 * k + column, mask=ok, other=0)


@triton.jit
def _unfolded_x(
    x_group,
    j,
    t,
    J,
    L,
    DIL,
    sxc,
    sxt,
    taps_ptr,
    IMG_W,
    K: tl.constexpr,
    REVERSE: tl.constexpr,
    TAP_TABLE: tl.constexpr,
):
    """Tile X[j, t] = x[i, t + offset_k(t)] for reduction indices j = i·K + k, shape (j, t):
    causal taps t ∓ (K-1-k)·d, or table taps (dh_k, dw_k) on images IMG_W pixels wide."""
    i = (j // K).to(tl.int64)
    k = j % K
    if TAP_TABLE:
        # 32-bit pixel arithmetic (an image has fewer than 2^31 pixels): half the registers
        dh = _tap_column(taps_ptr, k, 0, j < J)
        dw = _tap_column(taps_ptr, k, 1, j < J)
        if REVERSE:
            dh, dw = -dh, -dw
        pixel = t.to(tl.int32)
        row = (pixel // IMG_W)[None, :] + dh[:, None]
        col = (pixel % IMG_W)[None, :] + dw[:, None]
        ok = (j < J)[:, None] & (row >= 0) & (row < L // IMG_W) & (col >= 0) & (col < IMG_W)
        src = row * IMG_W + col
    else:
        src = _shifted_time(t[None, :], ((K - 1 - k) * DIL)[:, None], REVERSE)
        ok = (j < J)[:, None] & (src >= 0) & (src < L)
    return tl.load(x_group + i[:, None] * sxc + src * sxt, mask=ok, other=0.0)


@triton.jit
def _weight_offsets(
    j, J, swi, taps_ptr, K: tl.constexpr, REVERSE: tl.constexpr, TAP_TABLE: tl.constexpr
):
    """Offsets, from the start of a weight row, of W[., j] for reduction indices j = i·K + k:
    channel i (stride swi) at tap k's position, k itself for causal taps (contiguous weight).
    Causal taps read forward have swi = K, so the offset is j: said so, the row's elements load
    in vectors."""
    offsets = j
    if REVERSE or TAP_TABLE:
        k = j % K
        if TAP_TABLE:
            k = _tap_column(taps_ptr, k, 2, j < J)
        offsets = (j // K).to(tl.int64) * swi + k
    return offsets


@triton.jit
def _weight_tile(w_ptr, mask_ptr, offsets, ok, HAS_MASK: tl.constexpr):
    """The weight at `offsets`, zero where not `ok` and, with a mask (laid out like the weight),
    where the mask is off: such weights are not loaded at all."""
    if HAS_MASK:
        ok = ok & (tl.load(mask_ptr + offsets, mask=ok, other=0) != 0)
    return tl.load(w_ptr + offsets, mask=ok, other=0.0)


@triton.jit
def _epilogue(
    a,
    b,
    bias_ptr,
    dy_ptr,
    res_ptr,
    out_ptr,
    n,
    c,
    c_ok,
    t,
    HALF,
    L,
    son,
    soc,
    sot,
    sdn,
    sdc,
    sdt,
    rsn,
    rsc,
    rst,
    ACTIVATION: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    GRAD: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
):
    """Finish the pre-activation tiles of channels c (`a`) and, for the gated unit, c + HALF (`b`).

    GRAD=False stores act(a, b) (+ the residual's channels c) to channels c of out. GRAD=True
    loads dy (channels c of the output gradient) and stores d loss / d pre-activation: channels
    c, and c + HALF when gated (a residual passes its gradient through untouched).
    """
    if HAS_BIAS:
        a += tl.load(bias_ptr + c, mask=c_ok, other=0.0).to(tl.float32)[:, None]
        if ACTIVATION == 3:
            b += tl.load(bias_ptr + c + HALF, mask=c_ok, other=0.0).to(tl.float32)[:, None]
    ok = c_ok[:, None] & (t < L)[None, :]
    out = out_ptr + n * son + c[:, None] * soc + t[None, :] * sot
    out_ty = out_ptr.dtype.element_ty
    if GRAD:
        dy = tl.load(dy_ptr + n * sdn + c[:, None] * sdc + t[None, :] * sdt, mask=ok, other=0.0)
        dy = dy.to(tl.float32)
        if ACTIVATION == 1:
            a = dy * _tanh_grad(a)
        elif ACTIVATION == 2:  # as torch.relu's gradient: a NaN pre-activation passes dy on
            a = tl.where(a <= 0.0, 0.0, dy)
        elif ACTIVATION == 3:
            gate_out = out_ptr + n * son + (c + HALF)[:, None] * soc + t[None, :] * sot
            tl.store(gate_out, (dy * _tanh(a) * _sigmoid_grad(b)).to(out_ty), mask=ok)
            a = dy * tl.sigmoid(b) * _tanh_grad(a)
    else:
        if ACTIVATION == 1:
            a = _tanh(a)
        elif ACTIVATION == 2:  # not tl.maximum, which would turn NaN into 0: NaN in, NaN out
            a = tl.where(a < 0.0, 0.0, a)
        elif ACTIVATION == 3:
            # WaveNet's gated activation unit (eq. 2): tanh(W_f * x) ⊙ σ(W_g * x).
            a = _tanh(a) * tl.sigmoid(b)
        if HAS_RESIDUAL:
            residual = tl.load(
                res_ptr + n * rsn + c[:, None] * rsc + t[None, :] * rst, mask=ok, other=0.0
            )
            a += residual.to(tl.float32)
    tl.store(out, a.to(out_ty), mask=ok)


# --------------------------------------------------------------------------------------------------
# forward, input-gradient and activation-gradient kernels
# --------------------------------------------------------------------------------------------------


def _dot_tiles(*tiles):
    """Autotune configurations of the dot kernels from (BLOCK_O, BLOCK_J, BLOCK_T, warps,
    stages) rows."""
    return [
        triton.Config(
            {"BLOCK_O": o, "BLOCK_J": j, "BLOCK_T": t}, num_warps=warps, num_stages=stages
        )
        for o, j, t, warps, stages in tiles
    ]


# Tiles per kind of product: 16-bit and TF32 inputs on the tensor cores (wgmma works on 64-row
# warp groups), IEEE fp32 on the FMA units, which hold their operands in registers too. Chosen
# with `gdm-engine compile`: every tile below builds without spills on sm_80 and sm_90 for the
# launches `_dot_fits` lets it serve.
_DOT_CONFIGS = {
    "16-bit": _dot_tiles(
        (128, 64, 64, 4, 3),
        (128, 32, 128, 8, 3),
        (64, 32, 128, 4, 3),
        (64, 64, 64, 4, 4),
        (64, 32, 64, 4, 2),
        (64, 16, 64, 4, 3),  # for the input gradient, which reads the weight transposed
    ),
    "tf32": _dot_tiles(
        (128, 32, 128, 8, 3),
        (64, 16, 64, 8, 3),  # (64, 32, 128) with 4 warps spilled on sm_80 for the gated unit
    ),
    "ieee": _dot_tiles(
        (32, 32, 64, 4, 3),
        (32, 16, 64, 4, 3),
    ),
}
# Tap tables spend registers on each element's pixel arithmetic, and read the weight through the
# table: narrower reduction tiles (a 16-bit (64, 16, 128) tile left a few bytes on sm_80's stack).
_TABLE_DOT_CONFIGS = {
    "16-bit": _dot_tiles(
        (128, 16, 64, 8, 3),
        (64, 16, 64, 4, 3),
        (64, 32, 64, 4, 2),
        (64, 32, 32, 4, 3),
        (64, 16, 32, 4, 3),
    ),
    "tf32": _dot_tiles(
        (128, 32, 64, 8, 3),
        (64, 16, 128, 4, 3),
        (64, 32, 64, 4, 2),
        (64, 16, 32, 4, 3),
    ),
    "ieee": _dot_tiles(  # (128, 16, 64) and (32, 16, 64) spilled on sm_90 with the tap table
        (32, 16, 32, 4, 3),
    ),
}
_INTERPRETER_DOT = triton.Config({"BLOCK_O": 16, "BLOCK_J": 16, "BLOCK_T": 32}, num_warps=2)
_DOT_KEY = ["C_IN_G", "C_OUT_G", "L_BUCKET", "K", "ACTIVATION", "REVERSE", "GRAD", "TAP_TABLE"]
# fp32 accumulator values per thread that leave room for operands and addresses: a tensor-core
# accumulator lives in registers beside the fragments; an FMA tile also holds its operands there.
_ACCUMULATOR_BUDGET = {"16-bit": 64, "tf32": 64, "ieee": 32}
# Pipelined operand tiles must fit the smaller of sm_80's and sm_90's shared memory per block.
_SHARED_BUDGET = 160 * 1024


# tl.dot's input_precision per kind of product (None: the inputs' own 16-bit type).
_INPUT_PRECISION = {"16-bit": None, "tf32": "tf32", "ieee": "ieee"}


def _products(dtype):
    """How a dot kernel multiplies: "16-bit" or, for fp32, "tf32" while PyTorch's switch for TF32
    convolutions (torch.backends.cudnn.allow_tf32, on by default) is on, else "ieee"."""
    if dtype != torch.float32:
        return "16-bit"
    return "tf32" if torch.backends.cudnn.allow_tf32 else "ieee"


def _dot_fits(config, args):
    """Whether a dot-kernel tile fits: accumulators (two for the gated unit) within the register
    budget, and its stages of weight and x tiles within shared memory. The mirrored convolution
    of the input gradient reads the weight transposed, one element at a time (no vector loads):
    with its 64-bit address an element of its weight tile costs about four accumulator values
    (larger tiles spilled on sm_80 and sm_90)."""
    meta = config.kwargs
    gated = args["ACTIVATION"] == GATED
    threads = 32 * config.num_warps
    accumulators = (2 if gated else 1) * meta["BLOCK_O"] * meta["BLOCK_T"] / threads
    if args["REVERSE"]:
        accumulators += 4 * meta["BLOCK_O"] * meta["BLOCK_J"] / threads
    weight_tiles = (2 if gated else 1) * meta["BLOCK_O"] * meta["BLOCK_J"]
    x_tiles = (2 if gated and args["GATE_GROUP_SHIFT"] else 1) * meta["BLOCK_J"] * meta["BLOCK_T"]
    shared = config.num_stages * (weight_tiles + x_tiles) * args["x_ptr"].element_size()
    budget = _ACCUMULATOR_BUDGET[args["PRECISION"] or "16-bit"]
    if gated and args["TAP_TABLE"]:  # two gathers' pixel arithmetic beside two accumulators
        budget //= 2
    return accumulators <= budget and shared <= _SHARED_BUDGET


@triton.jit
def _conv_dot_kernel(
    x_ptr,
    w_ptr,
    mask_ptr,
    bias_ptr,
    dy_ptr,
    res_ptr,
    out_ptr,
    taps_ptr,
    C_IN_G,
    C_OUT_G,
    ROWS,
    ROW_GROUPS,
    HALF,
    L,
    L_BUCKET,
    DIL,
    IMG_W,
    swr,
    swg,
    swi,
    sxn,
    sxc,
    sxt,
    son,
    soc,
    sot,
    sdn,
    sdc,
    sdt,
    rsn,
    rsc,
    rst,
    K: tl.constexpr,
    GATE_GROUP_SHIFT: tl.constexpr,
    ACTIVATION: tl.constexpr,
    REVERSE: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    GRAD: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    TAP_TABLE: tl.constexpr,
    HAS_MASK: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_O: tl.constexpr,
    BLOCK_J: tl.constexpr,
    BLOCK_T: tl.constexpr,
):
    # One program: BLOCK_O output channels (and their gate channels) x BLOCK_T times of sample n.
    # The channel block varies fastest, so the programs that share an x tile run side by side and
    # find it in L2. Each row group has ROWS channels inside one weight group. Row c of group g
    # starts at (c - g·C_OUT_G)·swr + g·swg in the weight (swr, swg, swi: _weight_strides).
    pid = tl.program_id(0).to(tl.int64)
    c_blocks = tl.cdiv(ROWS, BLOCK_O)
    row_group = (pid // c_blocks) % ROW_GROUPS
    nt = pid // (c_blocks * ROW_GROUPS)
    t_blocks = tl.cdiv(L, BLOCK_T)
    n = nt // t_blocks
    t = (nt % t_blocks) * BLOCK_T + tl.arange(0, BLOCK_T)
    c_local = (pid % c_blocks) * BLOCK_O + tl.arange(0, BLOCK_O)
    c_ok = c_local < ROWS
    c = row_group * ROWS + c_local  # output channel, of the first half when gated
    g = (row_group * ROWS) // C_OUT_G
    J = C_IN_G * K
    x_a = x_ptr + n * sxn + (g * C_IN_G) * sxc
    x_b = x_ptr + n * sxn + ((g + GATE_GROUP_SHIFT) * C_IN_G) * sxc  # the gate half's group
    w_row = (c - g * C_OUT_G) * swr + g * swg

    acc_a = tl.zeros((BLOCK_O, BLOCK_T), dtype=tl.float32)
    acc_b = tl.zeros((BLOCK_O, BLOCK_T), dtype=tl.float32)
    for j0 in range(0, J, BLOCK_J):
        j = j0 + tl.arange(0, BLOCK_J)
        w_ok = c_ok[:, None] & (j < J)[None, :]
        w_at = w_row[:, None] + _weight_offsets(j, J, swi, taps_ptr, K, REVERSE, TAP_TABLE)[None, :]
        xa = _unfolded_x(x_a, j, t, J, L, DIL, sxc, sxt, taps_ptr, IMG_W, K, REVERSE, TAP_TABLE)
        wa = _weight_tile(w_ptr, mask_ptr, w_at, w_ok, HAS_MASK)
        acc_a = _dot(wa, xa, acc_a, PRECISION)
        if ACTIVATION == 3:
            xb = xa
            if GATE_GROUP_SHIFT != 0:
                xb = _unfolded_x(
                    x_b, j, t, J, L, DIL, sxc, sxt, taps_ptr, IMG_W, K, REVERSE, TAP_TABLE
                )
            # the gate rows c + HALF (gated launches run forward, where swg = C_OUT_G·swr)
            wb = _weight_tile(w_ptr, mask_ptr, w_at + HALF * swr, w_ok, HAS_MASK)
            acc_b = _dot(wb, xb, acc_b, PRECISION)
    _epilogue(
        acc_a,
        acc_b,
        bias_ptr,
        dy_ptr,
        res_ptr,
        out_ptr,
        n,
        c,
        c_ok,
        t,
        HALF,
        L,
        son,
        soc,
        sot,
        sdn,
        sdc,
        sdt,
        rsn,
        rsc,
        rst,
        ACTIVATION,
        HAS_BIAS,
        GRAD,
        HAS_RESIDUAL,
    )


# (products, tap table?) -> the autotuned convolution kernel
_CONV_DOT = {
    (products, table): autotune(configs, _DOT_KEY, _INTERPRETER_DOT, _dot_fits)(_conv_dot_kernel)
    for table, lists in [(False, _DOT_CONFIGS), (True, _TABLE_DOT_CONFIGS)]
    for products, configs in lists.items()
}


@triton.jit
def _direct_rows(
    x_ptr,
    w_ptr,
    n,
    o,
    o_ok,
    t,
    C_IN_G,
    C_OUT_G,
    L,
    DIL,
    swr,
    swg,
    swi,
    sxn,
    sxc,
    sxt,
    K: tl.constexpr,
    REVERSE: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_T: tl.constexpr,
):
    """Pre-activation tile [BLOCK_C, BLOCK_T] of rows o; each row may lie in its own group."""
    # a 32-bit division (channels are fewer than 2^31): a 64-bit one by a run-time value is a
    # subroutine call, whose stack frame the builds report as spilled bytes
    g = (o.to(tl.int32) // C_OUT_G).to(tl.int64)
    x_i = x_ptr + n * sxn + (g * C_IN_G)[:, None] * sxc
    w_i = w_ptr + (o - g * C_OUT_G) * swr + g * swg
    acc = tl.zeros((BLOCK_C, BLOCK_T), dtype=tl.float32)
    for i32 in range(0, C_IN_G):
        i = tl.cast(i32, tl.int64)  # so that i·sxc cannot wrap past 2^31
        for k in tl.static_range(K):  # unrolled: the shifts are constants times the dilation
            src = _shifted_time(t, (K - 1 - k) * DIL, REVERSE)
            ok = o_ok[:, None] & ((src >= 0) & (src < L))[None, :]
            w = tl.load(w_i + i * swi + k, mask=o_ok, other=0.0).to(tl.float32)
            xs = tl.load(x_i + i * sxc + src[None, :] * sxt, mask=ok, other=0.0)
            acc += w[:, None] * xs.to(tl.float32)
    return acc


# Tiles laid along time for wide loads: 8 to 16 values per thread (the first four), down to 2 for
# long kernels. `_direct_fits` keeps 16 or fewer per thread (both halves' tiles for the gated
# unit; 8 for its backward), larger ones spilled on sm_80; 64 or fewer over the K taps, as every
# unrolled tap holds its own x tile and addresses (K = 9 with 16 spilled); and of those the
# widest, down to half as wide: a narrower tile loads in narrower vectors, so it only serves
# kernels too long for the wide ones.
_DIRECT_CONFIGS = [
    triton.Config({"BLOCK_C": 2, "BLOCK_T": 512}, num_warps=4),
    triton.Config({"BLOCK_C": 4, "BLOCK_T": 1024}, num_warps=8),
    triton.Config({"BLOCK_C": 8, "BLOCK_T": 512}, num_warps=8),
    triton.Config({"BLOCK_C": 16, "BLOCK_T": 256}, num_warps=8),
    triton.Config({"BLOCK_C": 2, "BLOCK_T": 1024}, num_warps=8),
    triton.Config({"BLOCK_C": 2, "BLOCK_T": 512}, num_warps=8),
    triton.Config({"BLOCK_C": 1, "BLOCK_T": 512}, num_warps=8),
]
_INTERPRETER_DIRECT = triton.Config({"BLOCK_C": 4, "BLOCK_T": 32}, num_warps=1)


def _direct_values(config, args):
    """fp32 values per thread of a direct tile (both halves' for the gated unit)."""
    tiles = 2 if args["ACTIVATION"] == GATED else 1
    return tiles * config.kwargs["BLOCK_C"] * config.kwargs["BLOCK_T"] / (32 * config.num_warps)


def _direct_fits(config, args):
    # the gated unit's backward also holds both halves' derivatives: 16 values spilled 8 bytes
    # on sm_80 (K = 3, fp16 and bf16, 1024-wide tiles); 8 leave room for them
    most = 8 if args["ACTIVATION"] == GATED and args.get("GRAD") else 16

    def fits(c):
        return _direct_values(c, args) <= most and _direct_values(c, args) * args["K"] <= 64

    widest = max((_direct_values(c, args) for c in _DIRECT_CONFIGS if fits(c)), default=0)
    return fits(config) and 2 * _direct_values(config, args) >= widest


@autotune(
    _DIRECT_CONFIGS,
    ["C_IN_G", "C_OUT_G", "ROWS", "L_BUCKET", "K", "ACTIVATION", "REVERSE", "GRAD"],
    _INTERPRETER_DIRECT,
    _direct_fits,
)
@triton.jit
def _conv_direct_kernel(
    x_ptr,
    w_ptr,
    bias_ptr,
    dy_ptr,
    res_ptr,
    out_ptr,
    C_IN_G,
    C_OUT_G,
    ROWS,
    HALF,
    L,
    L_BUCKET,
    DIL,
    SEGMENTS,
    swr,
    swg,
    swi,
    sxn,
    sxc,
    sxt,
    son,
    soc,
    sot,
    sdn,
    sdc,
    sdt,
    rsn,
    rsc,
    rst,
    K: tl.constexpr,
    ACTIVATION: tl.constexpr,
    REVERSE: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    GRAD: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_T: tl.constexpr,
):
    # One program: BLOCK_C channels of sample n over one of SEGMENTS stretches of the sequence,
    # walked in BLOCK_T steps (the launcher cuts the sequence only as far as the GPU needs).
    pid = tl.program_id(0).to(tl.int64)
    c_blocks = tl.cdiv(ROWS, BLOCK_C)
    segment = (pid // c_blocks) % SEGMENTS
    n = pid // (c_blocks * SEGMENTS)
    c = (pid % c_blocks) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < ROWS
    t_blocks = tl.cdiv(L, BLOCK_T)
    per_segment = tl.cdiv(t_blocks, SEGMENTS)
    first = segment * per_segment
    for block in range(first, tl.minimum(first + per_segment, t_blocks)):
        t = block * BLOCK_T + tl.arange(0, BLOCK_T)  # int64, as `first` is
        a = _direct_rows(
            x_ptr,
            w_ptr,
            n,
            c,
            c_ok,
            t,
            C_IN_G,
            C_OUT_G,
            L,
            DIL,
            swr,
            swg,
            swi,
            sxn,
            sxc,
            sxt,
            K,
            REVERSE,
            BLOCK_C,
            BLOCK_T,
        )
        b = a
        if ACTIVATION == 3:
            b = _direct_rows(
                x_ptr,
                w_ptr,
                n,
                c + HALF,
                c_ok,
                t,
                C_IN_G,
                C_OUT_G,
                L,
                DIL,
                swr,
                swg,
                swi,
                sxn,
                sxc,
                sxt,
                K,
                REVERSE,
                BLOCK_C,
                BLOCK_T,
            )
        _epilogue(
            a,
            b,
            bias_ptr,
            dy_ptr,
            res_ptr,
            out_ptr,
            n,
            c,
            c_ok,
            t,
            HALF,
            L,
            son,
            soc,
            sot,
            sdn,
            sdc,
            sdt,
            rsn,
            rsc,
            rst,
            ACTIVATION,
            HAS_BIAS,
            GRAD,
            HAS_RESIDUAL,
        )


# --------------------------------------------------------------------------------------------------
# weight- and bias-gradient kernels: reductions over (sample, time), split for parallelism
# --------------------------------------------------------------------------------------------------

# Chosen like _DOT_CONFIGS: each builds without spills on sm_80 and sm_90 at every catalog shape.
_WGRAD_DOT_CONFIGS = {
    "16-bit": _dot_tiles(
        (128, 64, 64, 8, 3),
        (64, 64, 64, 4, 3),
        (64, 64, 32, 4, 4),
        (64, 32, 64, 4, 3),
    ),
    "tf32": _dot_tiles(
        (64, 64, 64, 4, 3),
        (64, 64, 32, 4, 3),
        (64, 32, 64, 4, 3),
    ),
    "ieee": _dot_tiles(
        (32, 32, 32, 4, 3),
        (32, 64, 32, 4, 3),
    ),
}
_TABLE_WGRAD_DOT_CONFIGS = {
    "16-bit": _dot_tiles(
        (128, 32, 32, 8, 3),
        (64, 64, 32, 8, 3),
        (64, 32, 64, 8, 3),
        (64, 32, 32, 4, 3),
    ),
    "tf32": _dot_tiles(
        (128, 32, 32, 8, 3),
        (64, 64, 32, 8, 3),
    ),
    "ieee": _dot_tiles(
        (128, 32, 32, 8, 3),
        (64, 32, 64, 8, 3),
        (32, 32, 32, 4, 3),
    ),
}
_WGRAD_KEY = ["C_IN_G", "C_OUT_G", "N_BUCKET", "L_BUCKET", "K", "TAP_TABLE"]


@triton.jit
def _weight_grad_dot_kernel(
    x_ptr,
    dy_ptr,
    dw_ptr,
    db_ptr,
    taps_ptr,
    N,
    N_BUCKET,
    C_IN_G,
    C_OUT_G,
    C_OUT,
    POSITIONS,
    L,
    L_BUCKET,
    DIL,
    IMG_W,
    sxn,
    sxc,
    sxt,
    sdn,
    sdc,
    sdt,
    K: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    TAP_TABLE: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_O: tl.constexpr,
    BLOCK_J: tl.constexpr,
    BLOCK_T: tl.constexpr,
):
    # dW[o, j] = sum_{n, t} dpre[n, o, t] · X[n, j, t]: the partial sum of split program_id(1),
    # which takes every SPLITS-th (sample, time) block. A j block holds every tap of its channels,
    # so dpre is read once per channel block, not once per tap.
    pid = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1).to(tl.int64)  # so the loop's index and n are 64-bit too
    SPLITS = tl.num_programs(1)
    J = C_IN_G * K
    j_blocks = tl.cdiv(J, BLOCK_J)
    o_blocks = tl.cdiv(C_OUT_G, BLOCK_O)
    j = (pid % j_blocks) * BLOCK_J + tl.arange(0, BLOCK_J)
    g = pid // (j_blocks * o_blocks)
    o_local = ((pid // j_blocks) % o_blocks) * BLOCK_O + tl.arange(0, BLOCK_O)
    o_ok = o_local < C_OUT_G
    o = g * C_OUT_G + o_local
    t_blocks = tl.cdiv(L, BLOCK_T)
    acc = tl.zeros((BLOCK_O, BLOCK_J), dtype=tl.float32)
    bias_acc = tl.zeros((BLOCK_O,), dtype=tl.float32)
    for r in range(split, N * t_blocks, SPLITS):
        n = r // t_blocks
        t = (r % t_blocks) * BLOCK_T + tl.arange(0, BLOCK_T)
        dy = tl.load(
            dy_ptr + n * sdn + o[:, None] * sdc + t[None, :] * sdt,
            mask=o_ok[:, None] & (t < L)[None, :],
            other=0.0,
        )
        xs = _unfolded_x(
            x_ptr + n * sxn + (g * C_IN_G) * sxc,
            j,
            t,
            J,
            L,
            DIL,
            sxc,
            sxt,
            taps_ptr,
            IMG_W,
            K,
            False,
            TAP_TABLE,
        )
        acc = _dot(dy, tl.trans(xs), acc, PRECISION)
        if HAS_BIAS:
            bias_acc += tl.sum(dy.to(tl.float32), axis=1)
    # partial sums of this split, at their places in the weight's (C_out, C_in_g, POSITIONS)
    row = split * C_OUT + o
    at = (row * (C_IN_G * POSITIONS))[:, None] + _weight_offsets(
        j, J, POSITIONS, taps_ptr, K, False, TAP_TABLE
    )[None, :]
    tl.store(dw_ptr + at, acc, mask=o_ok[:, None] & (j < J)[None, :])
    if HAS_BIAS:  # the same for every j block: the first stores it
        if pid % j_blocks == 0:
            tl.store(db_ptr + row, bias_acc, mask=o_ok)


_WEIGHT_GRAD_DOT = {
    (products, table): autotune(configs, _WGRAD_KEY, _INTERPRETER_DOT)(_weight_grad_dot_kernel)
    for table, lists in [(False, _WGRAD_DOT_CONFIGS), (True, _TABLE_WGRAD_DOT_CONFIGS)]
    for products, configs in lists.items()
}


# (channel, tap, time) tiles: each thread holds BLOCK_C·K_POW2·BLOCK_T / threads accumulator
# values, and an x tile as large. The wide tiles serve short kernels; the narrow ones long kernels.
_WGRAD_DIRECT_CONFIGS = [
    triton.Config({"BLOCK_C": 4, "BLOCK_T": 256}, num_warps=4),
    triton.Config({"BLOCK_C": 8, "BLOCK_T": 128}, num_warps=4),
    triton.Config({"BLOCK_C": 8, "BLOCK_T": 256}, num_warps=8),
    triton.Config({"BLOCK_C": 2, "BLOCK_T": 256}, num_warps=8),
    triton.Config({"BLOCK_C": 1, "BLOCK_T": 256}, num_warps=8),
]
# Accumulator values per thread of the direct weight-gradient kernel: 64 built without spills on
# sm_80 and sm_90 (at most ~210 registers, with the bias's tile), 128 spilled.
_WGRAD_DIRECT_BUDGET = 64


def _weight_grad_direct_fits(config, args):
    """Whether a tile's (channel, tap, time) accumulator fits the registers."""
    meta = config.kwargs
    per_thread = meta["BLOCK_C"] * args["K_POW2"] * meta["BLOCK_T"] / (32 * config.num_warps)
    return per_thread <= _WGRAD_DIRECT_BUDGET


@autotune(
    _WGRAD_DIRECT_CONFIGS,
    ["C_IN_G", "C_OUT_G", "C_OUT", "N_BUCKET", "L_BUCKET", "K"],
    _INTERPRETER_DIRECT,
    _weight_grad_direct_fits,
)
@triton.jit
def _weight_grad_direct_kernel(
    x_ptr,
    dy_ptr,
    dw_ptr,
    db_ptr,
    N,
    N_BUCKET,
    C_IN_G,
    C_OUT_G,
    C_OUT,
    L,
    L_BUCKET,
    DIL,
    sxn,
    sxc,
    sxt,
    sdn,
    sdc,
    sdt,
    K: tl.constexpr,
    K_POW2: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_T: tl.constexpr,
):
    # dw[o, i, k] for BLOCK_C out-channels o, one in-channel i and every tap k at once: a
    # (channel, tap, time) tile, so each dpre tile is read once for all taps. Without in-channels
    # one program per channel block still sums the bias.
    pid = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1).to(tl.int64)  # so the loop's index and n are 64-bit too
    SPLITS = tl.num_programs(1)
    c_blocks = tl.cdiv(C_OUT, BLOCK_C)
    i = pid // c_blocks
    o = (pid % c_blocks) * BLOCK_C + tl.arange(0, BLOCK_C)
    o_ok = o < C_OUT
    w_ok = tl.where(i < C_IN_G, o_ok, False)  # the rows whose weights this program sums
    k = tl.arange(0, K_POW2)
    shift = ((K - 1 - k) * DIL)[None, :, None]
    x_row = x_ptr + ((o // C_OUT_G) * C_IN_G + i)[:, None, None] * sxc
    t_blocks = tl.cdiv(L, BLOCK_T)
    acc = tl.zeros((BLOCK_C, K_POW2, BLOCK_T), dtype=tl.float32)
    bias_acc = tl.zeros((BLOCK_C, BLOCK_T), dtype=tl.float32)
    for r in range(split, N * t_blocks, SPLITS):
        n = r // t_blocks
        t = (r % t_blocks) * BLOCK_T + tl.arange(0, BLOCK_T)
        dy = tl.load(
            dy_ptr + n * sdn + o[:, None] * sdc + t[None, :] * sdt,
            mask=o_ok[:, None] & (t < L)[None, :],
            other=0.0,
        ).to(tl.float32)
        src = t[None, None, :] - shift
        ok = w_ok[:, None, None] & (k < K)[None, :, None] & (src >= 0) & (src < L)
        xs = tl.load(x_row + n * sxn + src * sxt, mask=ok, other=0.0)
        acc += dy[:, None, :] * xs.to(tl.float32)
        if HAS_BIAS:
            bias_acc += dy
    row = split * C_OUT + o
    tl.store(
        dw_ptr + ((row * C_IN_G + i) * K)[:, None] + k[None, :],
        tl.sum(acc, axis=2),
        mask=w_ok[:, None] & (k < K)[None, :],
    )
    if HAS_BIAS:  # the same for every in-channel: the first stores it
        if i == 0:
            tl.store(db_ptr + row, tl.sum(bias_acc, axis=1), mask=o_ok)


# --------------------------------------------------------------------------------------------------
# launchers: tensors in, tensors out
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Taps:
    """Where the K taps of a convolution read, and which weight positions they use: causal taps
    of a dilation (tap k of time t reads t - (K-1-k)·dilation, with position k), or a tap table
    (K, 3) of (dh, dw, position) rows on images `width` wide, flattened to sequences (an int32
    tensor on the inputs' device; see the module's docstring)."""

    count: int
    dilation: int = 1
    table: Optional[torch.Tensor] = None
    width: int = 1

    def arguments(self, like):
        """(table pointer, image width) kernel arguments; any tensor stands in without a table."""
        return (self.table if self.table is not None else like), self.width


def _bucket(size, floor=1):
    """Autotuning key of a length or batch: its power of two, so new sizes rarely re-tune, and
    at least `floor`: lengths within a kernel's longest time tile cost every configuration one
    tile per program, so they all tune alike (WaveNet's naive sampler, whose length grows by
    one a step, then re-tunes once for the short lengths instead of at every power of two)."""
    return next_power_of_2(max(int(size), floor))


def _longest_tile(*config_sets):
    """The longest time tile (BLOCK_T) of the configurations: lists, or dicts of lists."""
    lists = [c for s in config_sets for c in (s.values() if isinstance(s, dict) else [s])]
    return max(config.kwargs["BLOCK_T"] for configs in lists for config in configs)


_DOT_TILE_T = _longest_tile(_DOT_CONFIGS, _TABLE_DOT_CONFIGS)
_DIRECT_TILE_T = _longest_tile(_DIRECT_CONFIGS)
_WGRAD_TILE_T = _longest_tile(_WGRAD_DOT_CONFIGS, _TABLE_WGRAD_DOT_CONFIGS, _WGRAD_DIRECT_CONFIGS)


def _use_dot(c_in_g, c_out_g, groups, activation, taps):
    # The dot form keeps a channel block inside one group; for the gated unit the two halves must
    # then be whole groups each (groups == 1 or even). Otherwise the direct form serves, which
    # knows causal taps only: tap tables always take the dot form (masked loads pad its tiles).
    if taps.table is not None:
        return True
    gated_ok = activation != GATED or groups == 1 or groups % 2 == 0
    return c_in_g >= MIN_DOT_CHANNELS and c_out_g >= MIN_DOT_CHANNELS and gated_ok


def _weight_strides(weight, groups, reverse):
    """(row, group, reduction channel) strides with which a kernel reads the weight
    (C_out, C_in_g, P): rows are out-channels, or in-channels for the mirrored convolution of
    the input gradient, which reads each group's weight transposed."""
    s_out, s_in, _ = weight.stride()
    c_out_g = weight.shape[0] // groups
    if reverse:
        return s_in, c_out_g * s_out, s_out
    return s_out, c_out_g * s_out, s_in


def _as_bytes(mask):
    """A bool mask as the uint8 view the kernels load (or None)."""
    return mask.contiguous().view(torch.uint8) if mask is not None else None


def _strides(t):
    return t.stride() if t is not None else (0, 0, 0)


def _conv(
    x,
    weight,
    mask,
    bias,
    dy,
    residual,
    out,
    groups,
    c_in_g,
    c_out_g,
    taps,
    activation,
    reverse,
    grad,
):
    """Launch one convolution form. weight: (C_out, C_in_g, P), contiguous; mask: its uint8
    layout or None. c_in_g, c_out_g: channels per group of the reduction and of the rows
    (swapped when reverse). Forward (grad=False) writes act(pre) + residual to out; grad=True
    writes d loss / d pre given dy; reverse=True runs the mirrored convolution of the input
    gradient."""
    if out.numel() == 0:
        return out
    N, _, L = x.shape
    half = groups * c_out_g // 2 if activation == GATED else 0
    rows = half if activation == GATED else groups * c_out_g  # output channels (of one half)
    # tensors that a launch does not use (no bias, no dy, no residual) stand in as `out`
    args = [t if t is not None else out for t in (bias, dy, residual)]
    flags = dict(
        K=taps.count,
        ACTIVATION=activation,
        REVERSE=reverse,
        HAS_BIAS=bias is not None,
        GRAD=grad,
        HAS_RESIDUAL=residual is not None,
    )
    strides = (
        *_weight_strides(weight, groups, reverse),
        *x.stride(),
        *out.stride(),
        *_strides(dy),
        *_strides(residual),
    )
    if _use_dot(c_in_g, c_out_g, groups, activation, taps):
        # Row groups: channel ranges inside one weight group. With the gated unit and several
        # groups, each half is groups/2 whole groups and the gate reads the group groups/2 on.
        gated_groups = activation == GATED and groups > 1
        row_groups = groups // 2 if gated_groups else groups
        gate_shift = groups // 2 if gated_groups else 0

        def grid(meta):
            return (
                N
                * cdiv(L, meta["BLOCK_T"])
                * row_groups
                * cdiv(rows // row_groups, meta["BLOCK_O"]),
            )

        products = _products(x.dtype)
        table, width = taps.arguments(out)
        launch(
            _CONV_DOT[products, taps.table is not None],
            grid,
            x,
            weight,
            mask if mask is not None else weight,
            *args,
            out,
            table,
            c_in_g,
            c_out_g,
            rows // row_groups,
            row_groups,
            half,
            L,
            _bucket(L, _DOT_TILE_T),
            taps.dilation,
            width,
            *strides,
            GATE_GROUP_SHIFT=gate_shift,
            TAP_TABLE=taps.table is not None,
            HAS_MASK=mask is not None,
            PRECISION=_INPUT_PRECISION[products],
            **flags,
        )
    else:  # causal taps without a mask
        c_blocks_min = cdiv(rows, 16)  # the widest channel block of any configuration
        segments = max(
            1, min(cdiv(L, 256), num_programs_target(x.device) // max(N * c_blocks_min, 1))
        )

        def grid(meta):
            return (N * segments * cdiv(rows, meta["BLOCK_C"]),)

        launch(
            _conv_direct_kernel,
            grid,
            x,
            weight,
            *args,
            out,
            c_in_g,
            c_out_g,
            rows,
            half,
            L,
            _bucket(L, _DIRECT_TILE_T),
            taps.dilation,
            segments,
            *strides,
            **flags,
        )
    return out


def convolve(x, weight, bias, groups, taps, activation, residual=None, mask=None):
    """act(conv(x, weight) + bias) + residual for x (N, C_in, L) and weight (C_out, C_in_g, P),
    whose positions the taps weigh with (P = K for causal taps); `mask`, bool and shaped like
    the weight, switches weights off (None: all on); `activation` is a name from ACTIVATIONS."""
    N, _, L = x.shape
    c_out, c_in_g, _ = weight.shape
    act = ACTIVATIONS[activation]
    y = empty((N, c_out // 2 if act == GATED else c_out, L), x.dtype, x.device)
    bias = bias.contiguous() if bias is not None else None
    return _conv(
        x,
        weight.contiguous(),
        _as_bytes(mask),
        bias,
        None,
        residual,
        y,
        groups,
        c_in_g,
        c_out // groups,
        taps,
        act,
        reverse=False,
        grad=False,
    )


def _splits(device, programs, reduction_blocks):
    """How many partial sums a weight-gradient reduction is cut into, to fill the device."""
    return max(1, min(reduction_blocks, num_programs_target(device) // max(programs, 1)))


def _weight_grad(x, dpre, weight, keep, groups, taps, with_bias):
    """(dweight, dbias or None) in the weight's layout and dtype: partial sums over (sample,
    time) blocks in float32, added up by _reduce.sum_splits."""
    N, _, L = x.shape
    c_out, c_in_g, positions = weight.shape
    K = taps.count
    c_out_g = c_out // groups
    reduction_blocks = N * cdiv(L, _WGRAD_MIN_BLOCK_T)
    buckets = dict(N_BUCKET=_bucket(N), L_BUCKET=_bucket(L, _WGRAD_TILE_T))
    strides = (*x.stride(), *dpre.stride())
    # Without in-channels only the bias has a gradient: the direct kernel sums it (and loads
    # nothing else, so it serves tap tables too).
    if c_in_g and _use_dot(c_in_g, c_out_g, groups, NONE, taps):
        tile = _WGRAD_DOT_TILE
        programs = groups * cdiv(c_out_g, tile) * cdiv(c_in_g * K, tile)
        splits = _splits(x.device, programs, reduction_blocks)
        grid = lambda meta: (  # noqa: E731
            groups * cdiv(c_out_g, meta["BLOCK_O"]) * cdiv(c_in_g * K, meta["BLOCK_J"]),
            splits,
        )
        products = _products(x.dtype)
        table, width = taps.arguments(x)
        parts = empty((splits, c_out, c_in_g, positions), torch.float32, x.device)
        bias_parts = empty((splits, c_out), torch.float32, x.device) if with_bias else parts
        launch(
            _WEIGHT_GRAD_DOT[products, taps.table is not None],
            grid,
            x,
            dpre,
            parts,
            bias_parts,
            table,
            N,
            buckets["N_BUCKET"],
            c_in_g,
            c_out_g,
            c_out,
            positions,
            L,
            buckets["L_BUCKET"],
            taps.dilation,
            width,
            *strides,
            K=K,
            HAS_BIAS=with_bias,
            TAP_TABLE=taps.table is not None,
            PRECISION=_INPUT_PRECISION[products],
        )
    else:
        programs = cdiv(c_out, _WGRAD_DIRECT_ROWS) * c_in_g
        splits = _splits(x.device, programs, reduction_blocks)
        grid = lambda meta: (  # noqa: E731
            cdiv(c_out, meta["BLOCK_C"]) * max(c_in_g, 1),
            splits,
        )
        parts = empty((splits, c_out, c_in_g, K), torch.float32, x.device)
        bias_parts = empty((splits, c_out), torch.float32, x.device) if with_bias else parts
        launch(
            _weight_grad_direct_kernel,
            grid,
            x,
            dpre,
            parts,
            bias_parts,
            N,
            buckets["N_BUCKET"],
            c_in_g,
            c_out_g,
            c_out,
            L,
            buckets["L_BUCKET"],
            taps.dilation,
            *strides,
            K=K,
            K_POW2=next_power_of_2(K),
            HAS_BIAS=with_bias,
        )
    grad_w = empty(weight.shape, weight.dtype, x.device)
    # off `keep` the gradient is 0: the partial sums there (of no tap) were never written
    sum_splits(parts.view(splits, -1), grad_w.view(-1), keep.view(-1) if keep is not None else None)
    grad_b = None
    if with_bias:
        grad_b = empty((c_out,), weight.dtype, x.device)
        sum_splits(bias_parts.view(splits, c_out), grad_b)
    return grad_w, grad_b


def convolution_backward(grad_y, x, weight, bias, groups, taps, activation, mask=None, keep=None):
    """Gradients (dx, dweight, dbias or None) of convolve's output (a residual's gradient is
    grad_y itself). `mask` is convolve's; dweight is exactly zero where `keep` (bool, shaped
    like the weight; the mask when not given) is off."""
    N, _, L = x.shape
    c_out, c_in_g, _ = weight.shape
    act = ACTIVATIONS[activation]
    c_out_g = c_out // groups
    weight, mask = weight.contiguous(), _as_bytes(mask)
    keep = _as_bytes(keep) if keep is not None else mask
    if act == NONE:
        dpre = grad_y
    else:
        # Recompute the pre-activation rather than keep it from the forward pass, and turn it
        # into its gradient in the same kernel's epilogue: no activation-sized tensor is held
        # for the backward pass, and none is written and read back.
        dpre = empty((N, c_out, L), x.dtype, x.device)
        bias_arg = bias.contiguous() if bias is not None else None
        _conv(
            x,
            weight,
            mask,
            bias_arg,
            grad_y,
            None,
            dpre,
            groups,
            c_in_g,
            c_out_g,
            taps,
            act,
            reverse=False,
            grad=True,
        )
    dx = empty(x.shape, x.dtype, x.device)
    # dx is the mirrored convolution of dpre with the weight read transposed: in-channels become
    # the rows, each group's out-channels (and taps) the reduction.
    _conv(
        dpre,
        weight,
        mask,
        None,
        None,
        None,
        dx,
        groups,
        c_out_g,
        c_in_g,
        taps,
        NONE,
        reverse=True,
        grad=False,
    )
    grad_w, grad_b = _weight_grad(x, dpre, weight, keep, groups, taps, bias is not None)
    return dx, grad_w, grad_b
