"""Causal dilated 1-D convolution: the layer of WaveNet (van den Oord et al., 2016, sec. 2.1).

    y[n, o, t] = act( b[o] + sum_{i, k} w[o, i, k] * x[n, g(o)·C_in_g + i, t - (K-1-k)·d] )

with x taken as zero before t = 0, so position t sees only t, t-d, ..., t-(K-1)d. No padded copy of
x is made: taps that fall before the sequence start are masked loads.

The same two kernels serve the forward pass and the input gradient. The input gradient is the
mirrored (anti-causal) convolution of the output gradient with the transposed weight,
    dx[n, c, s] = sum_{o, k} w[o, c_l, k] * dpre[n, o, s + (K-1-k)·d],
so the launchers pass the weight with its "out" and "in" strides swapped and REVERSE=True.

Two forms of the same loop nest:
  * `_conv_dot_kernel`: per group a tiled matrix product (tl.dot) over (channels x time) tiles, for
    groups with many channels (dense convolutions).
  * `_conv_direct_kernel`: a per-channel multiply-add, for few channels per group (depthwise).
"""

import torch
import triton
import triton.language as tl

from ._buffers import INTERPRETED, empty, num_programs_target

# Triton's interpreter multiplies bf16 dot operands as their raw 16-bit integers; products of bf16
# values are exact in fp32, so upcasting there gives the tensor cores' result.
_UPCAST_BF16_DOT = tl.constexpr(INTERPRETED)

ACTIVATIONS = {"none": 0, "tanh": 1, "relu": 2, "gated": 3}
NONE, TANH, RELU, GATED = 0, 1, 2, 3

# A dot-product tile needs at least 16 rows and columns; below that the direct form wastes less.
MIN_DOT_CHANNELS = 16


def _configs(configs):
    """Autotune on a GPU; under the interpreter a single small tile keeps the tests quick."""
    return configs[:1] if INTERPRETED else configs


# --------------------------------------------------------------------------------------------------
# shared device helpers
# --------------------------------------------------------------------------------------------------


@triton.jit
def _tanh(x):
    # tanh(x) = 2·sigmoid(2x) - 1: sigmoid is exact in the interpreter and on every backend.
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def _activate(a, b, ACTIVATION: tl.constexpr):
    """The epilogue: `b` is the second half's pre-activation, used by the gated unit only."""
    if ACTIVATION == 1:
        a = _tanh(a)
    elif ACTIVATION == 2:
        a = tl.maximum(a, 0.0)
    elif ACTIVATION == 3:
        # WaveNet's gated activation unit (eq. 2): tanh(W_f * x) ⊙ σ(W_g * x).
        a = _tanh(a) * tl.sigmoid(b)
    return a


@triton.jit
def _epilogue(acc, gate, bias_ptr, y_ptr, n, c, c_ok, t, HALF, L, syn, syc, syt,
              ACTIVATION: tl.constexpr, HAS_BIAS: tl.constexpr):
    """Add the bias, apply the activation and store the tile of output channels c."""
    if HAS_BIAS:
        acc += tl.load(bias_ptr + c, mask=c_ok, other=0.0).to(tl.float32)[:, None]
        if ACTIVATION == 3:
            gate += tl.load(bias_ptr + c + HALF, mask=c_ok, other=0.0).to(tl.float32)[:, None]
    out = _activate(acc, gate, ACTIVATION)
    y_ptrs = y_ptr + n * syn + c[:, None] * syc + t[None, :] * syt
    tl.store(y_ptrs, out.to(y_ptr.dtype.element_ty), mask=c_ok[:, None] & (t < L)[None, :])


@triton.jit
def _dot(a, b, acc, PRECISION: tl.constexpr):
    """acc + a @ b with fp32 accumulation."""
    if _UPCAST_BF16_DOT and a.dtype == tl.bfloat16:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc)
    return tl.dot(a, b, acc, input_precision=PRECISION)


@triton.jit
def _source_time(t, k, K, DIL, REVERSE: tl.constexpr):
    """Time index that tap k reads for output time t: t - (K-1-k)·d, or t + (K-1-k)·d mirrored."""
    shift = (K - 1 - k) * DIL
    if REVERSE:
        return t + shift
    return t - shift


# --------------------------------------------------------------------------------------------------
# forward and input-gradient kernels
# --------------------------------------------------------------------------------------------------


@triton.jit
def _dot_tile(x_ptr, w_ptr, n, g, o_local, t, C_IN_G, C_OUT_G, L, K, DIL,
              sxn, sxc, sxt, swg, swo, swi, swk,
              REVERSE: tl.constexpr, PRECISION: tl.constexpr,
              BLOCK_O: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_T: tl.constexpr):
    """Pre-activation tile [BLOCK_O, BLOCK_T] of group g: sum over in-channels and taps."""
    o_ok = o_local < C_OUT_G
    x_base = x_ptr + n * sxn + (g * C_IN_G) * sxc
    w_base = w_ptr + g * swg
    acc = tl.zeros((BLOCK_O, BLOCK_T), dtype=tl.float32)
    for k in range(0, K):
        src = _source_time(t, k, K, DIL, REVERSE)
        src_ok = (src >= 0) & (src < L)
        for i0 in range(0, C_IN_G, BLOCK_I):
            i = i0 + tl.arange(0, BLOCK_I)
            i_ok = i < C_IN_G
            w = tl.load(w_base + o_local[:, None] * swo + i[None, :] * swi + k * swk,
                        mask=o_ok[:, None] & i_ok[None, :], other=0.0)
            xs = tl.load(x_base + i[:, None] * sxc + src[None, :] * sxt,
                         mask=i_ok[:, None] & src_ok[None, :], other=0.0)
            acc = _dot(w, xs, acc, PRECISION)
    return acc


@triton.autotune(
    configs=_configs([
        triton.Config({"BLOCK_O": 16, "BLOCK_I": 16, "BLOCK_T": 32}, num_warps=2),
        triton.Config({"BLOCK_O": 64, "BLOCK_I": 32, "BLOCK_T": 128}, num_warps=4, num_stages=3),
        triton.Config({"BLOCK_O": 128, "BLOCK_I": 32, "BLOCK_T": 128}, num_warps=8, num_stages=3),
        triton.Config({"BLOCK_O": 128, "BLOCK_I": 64, "BLOCK_T": 64}, num_warps=4, num_stages=4),
        triton.Config({"BLOCK_O": 64, "BLOCK_I": 64, "BLOCK_T": 256}, num_warps=8, num_stages=3),
    ]),
    key=["C_IN_G", "C_OUT_G", "L", "K", "ACTIVATION", "REVERSE"],
)
@triton.jit
def _conv_dot_kernel(x_ptr, w_ptr, bias_ptr, y_ptr,
                     C_IN_G, C_OUT_G, Y_PER_GROUP, HALF, L, K, DIL,
                     sxn, sxc, sxt, swg, swo, swi, swk, syn, syc, syt,
                     ACTIVATION: tl.constexpr, REVERSE: tl.constexpr, HAS_BIAS: tl.constexpr,
                     PRECISION: tl.constexpr,
                     BLOCK_O: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_T: tl.constexpr):
    # axis 0: (sample, time block); axis 1: (output group, channel block). Every output channel
    # block lies inside one weight group, so its in-channels are a single contiguous range.
    t_blocks = tl.cdiv(L, BLOCK_T)
    pid_nt = tl.program_id(0).to(tl.int64)
    pid_c = tl.program_id(1).to(tl.int64)
    n = pid_nt // t_blocks
    t = (pid_nt % t_blocks) * BLOCK_T + tl.arange(0, BLOCK_T)
    c_blocks = tl.cdiv(Y_PER_GROUP, BLOCK_O)
    y_group = pid_c // c_blocks
    c_local = (pid_c % c_blocks) * BLOCK_O + tl.arange(0, BLOCK_O)
    c_ok = c_local < Y_PER_GROUP
    c = y_group * Y_PER_GROUP + c_local  # output channel of y, and of the first (or only) half

    first = y_group * Y_PER_GROUP + (pid_c % c_blocks) * BLOCK_O
    g = first // C_OUT_G
    acc = _dot_tile(x_ptr, w_ptr, n, g, c - g * C_OUT_G, t, C_IN_G, C_OUT_G, L, K, DIL,
                    sxn, sxc, sxt, swg, swo, swi, swk, REVERSE, PRECISION, BLOCK_O, BLOCK_I, BLOCK_T)
    gate = acc
    if ACTIVATION == 3:
        g2 = (first + HALF) // C_OUT_G
        gate = _dot_tile(x_ptr, w_ptr, n, g2, c + HALF - g2 * C_OUT_G, t, C_IN_G, C_OUT_G, L, K,
                         DIL, sxn, sxc, sxt, swg, swo, swi, swk, REVERSE, PRECISION,
                         BLOCK_O, BLOCK_I, BLOCK_T)
    _epilogue(acc, gate, bias_ptr, y_ptr, n, c, c_ok, t, HALF, L, syn, syc, syt,
              ACTIVATION, HAS_BIAS)


@triton.jit
def _direct_tile(x_ptr, w_ptr, n, o, o_ok, t, C_IN_G, C_OUT_G, L, K, DIL,
                 sxn, sxc, sxt, swg, swo, swi, swk,
                 REVERSE: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_T: tl.constexpr):
    """Pre-activation tile [BLOCK_C, BLOCK_T]; each row o may belong to its own group."""
    g = o // C_OUT_G
    o_local = o - g * C_OUT_G
    w_row = w_ptr + g * swg + o_local * swo
    x_row = x_ptr + n * sxn + (g * C_IN_G)[:, None] * sxc
    acc = tl.zeros((BLOCK_C, BLOCK_T), dtype=tl.float32)
    for k in range(0, K):
        src = _source_time(t, k, K, DIL, REVERSE)
        m = o_ok[:, None] & ((src >= 0) & (src < L))[None, :]
        for i in range(0, C_IN_G):
            w = tl.load(w_row + i * swi + k * swk, mask=o_ok, other=0.0).to(tl.float32)
            xs = tl.load(x_row + i * sxc + src[None, :] * sxt, mask=m, other=0.0)
            acc += w[:, None] * xs.to(tl.float32)
    return acc


@triton.autotune(
    configs=_configs([
        triton.Config({"BLOCK_C": 4, "BLOCK_T": 32}, num_warps=1),
        triton.Config({"BLOCK_C": 4, "BLOCK_T": 512}, num_warps=4),
        triton.Config({"BLOCK_C": 8, "BLOCK_T": 512}, num_warps=4),
        triton.Config({"BLOCK_C": 8, "BLOCK_T": 1024}, num_warps=8),
        triton.Config({"BLOCK_C": 16, "BLOCK_T": 256}, num_warps=4),
        triton.Config({"BLOCK_C": 32, "BLOCK_T": 128}, num_warps=4),
    ]),
    key=["C_IN_G", "C_OUT_G", "C_Y", "L", "K", "ACTIVATION", "REVERSE"],
)
@triton.jit
def _conv_direct_kernel(x_ptr, w_ptr, bias_ptr, y_ptr,
                        C_IN_G, C_OUT_G, C_Y, HALF, L, K, DIL,
                        sxn, sxc, sxt, swg, swo, swi, swk, syn, syc, syt,
                        ACTIVATION: tl.constexpr, REVERSE: tl.constexpr, HAS_BIAS: tl.constexpr,
                        BLOCK_C: tl.constexpr, BLOCK_T: tl.constexpr):
    t_blocks = tl.cdiv(L, BLOCK_T)
    pid_nt = tl.program_id(0).to(tl.int64)
    n = pid_nt // t_blocks
    t = (pid_nt % t_blocks) * BLOCK_T + tl.arange(0, BLOCK_T)
    c = tl.program_id(1).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C_Y
    acc = _direct_tile(x_ptr, w_ptr, n, c, c_ok, t, C_IN_G, C_OUT_G, L, K, DIL,
                       sxn, sxc, sxt, swg, swo, swi, swk, REVERSE, BLOCK_C, BLOCK_T)
    gate = acc
    if ACTIVATION == 3:
        gate = _direct_tile(x_ptr, w_ptr, n, c + HALF, c_ok, t, C_IN_G, C_OUT_G, L, K, DIL,
                            sxn, sxc, sxt, swg, swo, swi, swk, REVERSE, BLOCK_C, BLOCK_T)
    _epilogue(acc, gate, bias_ptr, y_ptr, n, c, c_ok, t, HALF, L, syn, syc, syt,
              ACTIVATION, HAS_BIAS)


# --------------------------------------------------------------------------------------------------
# weight- and bias-gradient kernels: reductions over (sample, time), split for parallelism
# --------------------------------------------------------------------------------------------------


@triton.autotune(
    configs=_configs([
        triton.Config({"BLOCK_O": 16, "BLOCK_I": 16, "BLOCK_T": 32}, num_warps=2),
        triton.Config({"BLOCK_O": 64, "BLOCK_I": 64, "BLOCK_T": 64}, num_warps=4, num_stages=3),
        triton.Config({"BLOCK_O": 128, "BLOCK_I": 64, "BLOCK_T": 64}, num_warps=8, num_stages=3),
        triton.Config({"BLOCK_O": 64, "BLOCK_I": 64, "BLOCK_T": 128}, num_warps=4, num_stages=3),
    ]),
    key=["C_IN_G", "C_OUT_G", "N", "L", "K"],
)
@triton.jit
def _weight_grad_dot_kernel(x_ptr, dy_ptr, dw_ptr, db_ptr,
                            N, C_IN_G, C_OUT_G, C_OUT, L, K, DIL, SPLITS,
                            sxn, sxc, sxt, sdn, sdc, sdt,
                            HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr,
                            BLOCK_O: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_T: tl.constexpr):
    # dw[o, i, k] = sum_{n, t} dpre[n, o, t] · x[n, i, t - (K-1-k)·d]   (partial sum of one split)
    o_blocks = tl.cdiv(C_OUT_G, BLOCK_O)
    pid_o = tl.program_id(0).to(tl.int64)
    pid_i = tl.program_id(1).to(tl.int64)
    pid_ks = tl.program_id(2).to(tl.int64)
    g = pid_o // o_blocks
    k = pid_ks // SPLITS
    split = pid_ks % SPLITS
    o = (pid_o % o_blocks) * BLOCK_O + tl.arange(0, BLOCK_O)
    i = pid_i * BLOCK_I + tl.arange(0, BLOCK_I)
    o_ok = o < C_OUT_G
    i_ok = i < C_IN_G
    t_blocks = tl.cdiv(L, BLOCK_T)
    acc = tl.zeros((BLOCK_O, BLOCK_I), dtype=tl.float32)
    bias_acc = tl.zeros((BLOCK_O,), dtype=tl.float32)
    for j in range(split, N * t_blocks, SPLITS):
        n = j // t_blocks
        t = (j % t_blocks) * BLOCK_T + tl.arange(0, BLOCK_T)
        src = _source_time(t, k, K, DIL, False)
        dy = tl.load(dy_ptr + n * sdn + (g * C_OUT_G + o)[:, None] * sdc + t[None, :] * sdt,
                     mask=o_ok[:, None] & (t < L)[None, :], other=0.0)
        xs = tl.load(x_ptr + n * sxn + (g * C_IN_G + i)[None, :] * sxc + src[:, None] * sxt,
                     mask=i_ok[None, :] & ((src >= 0) & (src < L))[:, None], other=0.0)
        acc = _dot(dy, xs, acc, PRECISION)
        if HAS_BIAS:
            bias_acc += tl.sum(dy.to(tl.float32), axis=1)
    row = split * C_OUT + g * C_OUT_G + o  # partial sums of split `split`, laid out like w
    tl.store(dw_ptr + (row[:, None] * C_IN_G + i[None, :]) * K + k, acc,
             mask=o_ok[:, None] & i_ok[None, :])
    if HAS_BIAS:  # the bias gradient is the same for every (i, k): one program column stores it
        if (pid_i == 0) & (k == 0):
            tl.store(db_ptr + row, bias_acc, mask=o_ok)


@triton.autotune(
    configs=_configs([
        triton.Config({"BLOCK_C": 4, "BLOCK_T": 32}, num_warps=1),
        triton.Config({"BLOCK_C": 4, "BLOCK_T": 512}, num_warps=4),
        triton.Config({"BLOCK_C": 8, "BLOCK_T": 512}, num_warps=4),
        triton.Config({"BLOCK_C": 16, "BLOCK_T": 256}, num_warps=4),
    ]),
    key=["C_IN_G", "C_OUT_G", "C_OUT", "N", "L", "K"],
)
@triton.jit
def _weight_grad_direct_kernel(x_ptr, dy_ptr, dw_ptr, db_ptr,
                               N, C_IN_G, C_OUT_G, C_OUT, L, K, DIL, SPLITS,
                               sxn, sxc, sxt, sdn, sdc, sdt,
                               HAS_BIAS: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_T: tl.constexpr):
    o = tl.program_id(0).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
    pid_ik = tl.program_id(1).to(tl.int64)
    split = tl.program_id(2).to(tl.int64)
    i = pid_ik // K
    k = pid_ik % K
    o_ok = o < C_OUT
    x_channel = (o // C_OUT_G) * C_IN_G + i
    t_blocks = tl.cdiv(L, BLOCK_T)
    acc = tl.zeros((BLOCK_C, BLOCK_T), dtype=tl.float32)
    bias_acc = tl.zeros((BLOCK_C, BLOCK_T), dtype=tl.float32)
    for j in range(split, N * t_blocks, SPLITS):
        n = j // t_blocks
        t = (j % t_blocks) * BLOCK_T + tl.arange(0, BLOCK_T)
        src = _source_time(t, k, K, DIL, False)
        dy = tl.load(dy_ptr + n * sdn + o[:, None] * sdc + t[None, :] * sdt,
                     mask=o_ok[:, None] & (t < L)[None, :], other=0.0).to(tl.float32)
        xs = tl.load(x_ptr + n * sxn + x_channel[:, None] * sxc + src[None, :] * sxt,
                     mask=o_ok[:, None] & ((src >= 0) & (src < L))[None, :], other=0.0)
        acc += dy * xs.to(tl.float32)
        if HAS_BIAS:
            bias_acc += dy
    row = split * C_OUT + o
    tl.store(dw_ptr + (row * C_IN_G + i) * K + k, tl.sum(acc, axis=1), mask=o_ok)
    if HAS_BIAS:  # the same for every (i, k): one program column stores it
        if pid_ik == 0:
            tl.store(db_ptr + row, tl.sum(bias_acc, axis=1), mask=o_ok)


# --------------------------------------------------------------------------------------------------
# activation gradient: d loss / d pre-activation from d loss / d output
# --------------------------------------------------------------------------------------------------


@triton.jit
def _activation_grad_kernel(dy_ptr, pre_ptr, dpre_ptr, C_Y, HALF, L,
                            sdn, sdc, sdt, spn, spc, spt, sgn, sgc, sgt,
                            ACTIVATION: tl.constexpr, BLOCK_T: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)  # (sample, output channel of y)
    n = row // C_Y
    c = row % C_Y
    t = tl.program_id(1).to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)
    m = t < L
    dy = tl.load(dy_ptr + n * sdn + c * sdc + t * sdt, mask=m, other=0.0).to(tl.float32)
    a = tl.load(pre_ptr + n * spn + c * spc + t * spt, mask=m, other=0.0).to(tl.float32)
    out_a = dpre_ptr + n * sgn + c * sgc + t * sgt
    if ACTIVATION == 1:
        th = _tanh(a)
        tl.store(out_a, (dy * (1.0 - th * th)).to(dpre_ptr.dtype.element_ty), mask=m)
    elif ACTIVATION == 2:
        tl.store(out_a, tl.where(a > 0.0, dy, 0.0).to(dpre_ptr.dtype.element_ty), mask=m)
    else:
        b = tl.load(pre_ptr + n * spn + (c + HALF) * spc + t * spt, mask=m, other=0.0)
        th = _tanh(a)
        sg = tl.sigmoid(b.to(tl.float32))
        tl.store(out_a, (dy * sg * (1.0 - th * th)).to(dpre_ptr.dtype.element_ty), mask=m)
        tl.store(dpre_ptr + n * sgn + (c + HALF) * sgc + t * sgt,
                 (dy * th * sg * (1.0 - sg)).to(dpre_ptr.dtype.element_ty), mask=m)


# --------------------------------------------------------------------------------------------------
# launchers: tensors in, tensors out
# --------------------------------------------------------------------------------------------------


def _precision(dtype):
    """fp32 inputs keep full fp32 products (IEEE, not tf32) so results meet fp32 tolerances;
    16-bit inputs take the tensor cores' native path, accumulating in fp32 either way."""
    return "ieee" if dtype == torch.float32 else None


def _use_dot(c_in_g, c_out_g, groups, activation):
    # The dot form keeps a channel block inside one group; for the gated unit the two halves must
    # then be whole groups each (groups == 1 or even). Otherwise the direct form serves.
    gated_ok = activation != GATED or groups == 1 or groups % 2 == 0
    return c_in_g >= MIN_DOT_CHANNELS and c_out_g >= MIN_DOT_CHANNELS and gated_ok


def _conv(x, w_strides, w, bias, y, groups, c_in_g, c_out_g, dilation, activation, reverse):
    """Launch the forward form (reverse=False) or the input-gradient form (reverse=True)."""
    N, _, L = x.shape
    K = w.shape[2]
    c_y = y.shape[1]
    half = c_y if activation == GATED else 0
    swg, swo, swi, swk = w_strides
    bias_arg = bias.contiguous() if bias is not None else y  # unused when there is no bias
    common = (c_in_g, c_out_g)
    strides = (*x.stride(), swg, swo, swi, swk, *y.stride())
    flags = dict(ACTIVATION=activation, REVERSE=reverse, HAS_BIAS=bias is not None)
    if _use_dot(c_in_g, c_out_g, groups, activation):
        # With the gated unit and several groups, each half of the channels is groups/2 groups.
        y_groups = groups // 2 if activation == GATED and groups > 1 else groups
        y_per_group = c_y // y_groups

        def grid(meta):
            c_blocks = triton.cdiv(y_per_group, meta["BLOCK_O"])
            return (N * triton.cdiv(L, meta["BLOCK_T"]), y_groups * c_blocks)

        _conv_dot_kernel[grid](x, w, bias_arg, y, *common, y_per_group, half, L, K, dilation,
                               *strides, PRECISION=_precision(x.dtype), **flags)
    else:
        def grid(meta):
            return (N * triton.cdiv(L, meta["BLOCK_T"]), triton.cdiv(c_y, meta["BLOCK_C"]))

        _conv_direct_kernel[grid](x, w, bias_arg, y, *common, c_y, half, L, K, dilation,
                                  *strides, **flags)
    return y


def causal_conv1d_forward(x, weight, bias, dilation, groups, activation):
    """y = act(causal_conv1d(x, weight, bias)); `activation` is a name from ACTIVATIONS."""
    N, c_in, L = x.shape
    c_out, c_in_g, _ = weight.shape
    act = ACTIVATIONS[activation]
    c_y = c_out // 2 if act == GATED else c_out
    y = empty((N, c_y, L), x.dtype, x.device)
    if y.numel() == 0:
        return y
    s0, s1, s2 = weight.stride()
    return _conv(x, (c_out // groups * s0, s0, s1, s2), weight, bias, y, groups, c_in_g,
                 c_out // groups, dilation, act, reverse=False)


def _activation_grad(grad_y, pre, activation):
    N, c_y, L = grad_y.shape
    dpre = empty(pre.shape, pre.dtype, pre.device)
    block_t = 64 if INTERPRETED else 1024
    grid = (N * c_y, triton.cdiv(L, block_t))
    _activation_grad_kernel[grid](grad_y, pre, dpre, c_y, c_y, L, *grad_y.stride(), *pre.stride(),
                                  *dpre.stride(), ACTIVATION=activation, BLOCK_T=block_t)
    return dpre


def _splits(device, programs, reduction_blocks):
    """How many partial sums the weight-gradient reduction is cut into, to fill the device."""
    return max(1, min(reduction_blocks, num_programs_target(device) // max(programs, 1)))


def _weight_grad(x, dpre, weight, groups, dilation, with_bias):
    N, _, L = x.shape
    c_out, c_in_g, K = weight.shape
    c_out_g = c_out // groups
    block_t = 32 if INTERPRETED else 128
    splits = _splits(x.device, c_out * max(c_in_g // 64, 1) * K, N * triton.cdiv(L, block_t))
    dw = empty((splits, c_out, c_in_g, K), torch.float32, x.device)
    db = empty((splits, c_out), torch.float32, x.device) if with_bias else dw
    strides = (*x.stride(), *dpre.stride())
    if _use_dot(c_in_g, c_out_g, groups, NONE):
        grid = lambda meta: (groups * triton.cdiv(c_out_g, meta["BLOCK_O"]),  # noqa: E731
                             triton.cdiv(c_in_g, meta["BLOCK_I"]), K * splits)
        _weight_grad_dot_kernel[grid](x, dpre, dw, db, N, c_in_g, c_out_g, c_out, L, K, dilation,
                                      splits, *strides, HAS_BIAS=with_bias,
                                      PRECISION=_precision(x.dtype))
    else:
        grid = lambda meta: (triton.cdiv(c_out, meta["BLOCK_C"]), c_in_g * K, splits)  # noqa: E731
        _weight_grad_direct_kernel[grid](x, dpre, dw, db, N, c_in_g, c_out_g, c_out, L, K, dilation,
                                         splits, *strides, HAS_BIAS=with_bias)
    grad_w = dw.sum(0).to(weight.dtype)
    grad_b = db.sum(0).to(weight.dtype) if with_bias else None
    return grad_w, grad_b


def causal_conv1d_backward(grad_y, x, weight, bias, dilation, groups, activation):
    """Gradients (dx, dweight, dbias or None) of causal_conv1d_forward's output."""
    N, c_in, L = x.shape
    c_out, c_in_g, K = weight.shape
    act = ACTIVATIONS[activation]
    if x.numel() == 0 or c_out == 0:
        zeros_b = torch.zeros_like(bias) if bias is not None else None
        return torch.zeros_like(x), torch.zeros_like(weight), zeros_b
    if act == NONE:
        dpre = grad_y
    else:
        # Recompute the pre-activation rather than keep it from the forward pass: one more
        # convolution, and no activation-sized tensor held for the whole backward pass.
        pre = causal_conv1d_forward(x, weight, bias, dilation, groups, "none")
        dpre = _activation_grad(grad_y, pre, act)
    dx = empty(x.shape, x.dtype, x.device)
    s0, s1, s2 = weight.stride()
    c_out_g = c_out // groups
    # dx is the mirrored convolution of dpre with the transposed weight: out = in-channel,
    # in = out-channel of the group.
    _conv(dpre, (c_out_g * s0, s1, s0, s2), weight, None, dx, groups, c_out_g, c_in_g,
          dilation, NONE, reverse=True)
    grad_w, grad_b = _weight_grad(x, dpre, weight, groups, dilation, bias is not None)
    return dx, grad_w, grad_b
