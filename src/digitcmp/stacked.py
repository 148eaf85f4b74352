"""The fast engine: train the R rounds of one model together, as one stacked network.

Batches of 100 pairs leave a CPU mostly idle between small kernels and Python dispatch. Here the
R rounds' batches are concatenated round-major along the batch dimension (rows r*B .. r*B+B-1
belong to round r), and each layer with state is swapped for a stacked version that keeps R
independent copies of it:

- ``Linear``: one batched matmul over R weight matrices (round by round where a batched matmul
  would round a round's block otherwise than the round alone: ``StackedLinear._batches``);
- ``Conv2d``: one convolution per round on channels_last feature maps, where oneDNN's kernels,
  pooling and BatchNorm are fast (oneDNN's grouped convolution, the obvious way to do R at
  once, is far slower in backward); a convolution of one or two input channels as im2col and
  one batched matmul instead; padding beyond kernel - 1 (outputs that see only zeros) added
  after the convolution, as the bias; on a CPU with one thread, ``directconv.py``'s C kernels
  instead (``use_direct_convs``);
- ``BatchNorm``: statistics per (round, channel): R folded into the channel dimension for
  features, one call per round for feature maps;
- ``Dropout``: masks drawn from a generator per round, so a round's masks do not depend on
  which other rounds it is stacked with.

Everything else (ReLU, pooling, reshapes, the model's own ``forward``) is per-sample and runs
unchanged, except that a ReLU followed by a max-pool is applied after it (``pool_before_relu``:
the same function, on a quarter of the values), and that on a CPU a BatchNorm followed by a
2 x 2 max-pool and a ReLU trains as one fused C kernel where there is one (``fuse_pool_relu``,
``fused.py``), taking its maps from a direct convolution before it in their lanes layout (in
training the pair runs as one autograd function per round, ``DeferredConv``, and several
rounds' maps travel between such layers apart, ``RoundMaps``). One
Adam steps all rounds: Adam is element-wise, and the loss is the *sum* of the per-round losses,
so each round's weights see exactly their own round's gradient and moments (``adam.Adam``
steps each round's slice apart where PyTorch's kernel would round it by its place in the stack).
Each round keeps its own data, initialisation (the reference engine's, copied in), batch order,
dropout masks, BatchNorm statistics and optimiser state, and its numbers do not depend on its
stack mates; what differs from the reference engine is float summation order and which random
numbers the dropout masks are made of.

A model stacks if every module of its members with parameters or buffers is one of the layers
above (true of every built-in model); ``stackable`` says whether a model does. The members of an
ensemble (probcmp) stack like rounds: R rounds of K members are R x K slots.
"""

from __future__ import annotations

import copy
import itertools
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from . import directconv, fused
from .models.registry import PairModel

_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


class RoundMaps(NamedTuple):
    """The feature maps of R > 1 rounds as a fused layer hands them to the layer after it (a
    convolution on the direct kernels, or a flatten): each round's lanes view, where one
    tensor of all rounds would cost a copy into it and one out of it per round."""

    maps: tuple[torch.Tensor, ...]


class DeferredConv(NamedTuple):
    """What a convolution passes on in training to the fused layer after it (``StackedConv2d``
    with ``lanes``): its input and itself; the fused layer runs the pair as one, round by
    round."""

    x: torch.Tensor | RoundMaps
    conv: StackedConv2d


def _rounds_of(x: torch.Tensor | RoundMaps, rounds: int) -> list[torch.Tensor]:
    """Each round's rows of ``x``; one round's without a chunk, whose backward would copy the
    whole gradient."""
    if isinstance(x, RoundMaps):
        return list(x.maps)
    return x.chunk(rounds) if rounds > 1 else [x]


def _round_params(t: torch.Tensor | None, rounds: int) -> list[torch.Tensor | None]:
    """A stacked parameter's slices, one per round: ``unbind`` (whose backward is one stack), or
    for a single round a ``squeeze``, whose backward is a view where indexing's would allocate a
    zero tensor and copy into it."""
    if t is None:
        return [None] * rounds
    return [t.squeeze(0)] if rounds == 1 else list(t.unbind())


class StackedLinear(nn.Module):
    def __init__(self, layers: list[nn.Linear]):
        super().__init__()
        self.rounds = len(layers)
        # Stored as R x in x out, so the forward is one baddbmm with no transpose.
        self.weight = nn.Parameter(torch.stack([m.weight.detach().t() for m in layers]).contiguous())
        self.bias = nn.Parameter(torch.stack([m.bias.detach() for m in layers]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x, bias = x.reshape(self.rounds, -1, shape[-1]), self.bias.unsqueeze(1)
        if self.rounds > 1 and not self._batches(x):
            # Each round's product apart, its operands copied into memory of their own (aligned
            # as a new tensor is), as a round alone has them.
            y = torch.cat([torch.baddbmm(b, xr.clone(), w.clone()) for b, xr, w
                           in zip(bias.split(1), x.split(1), self.weight.split(1), strict=True)])
        else:
            y = torch.baddbmm(bias, x, self.weight)
        return y.reshape(*shape[:-1], y.shape[-1])

    def _batches(self, x: torch.Tensor) -> bool:
        """Whether one batched matmul over the rounds (forward and backward) computes each
        round's block as the round alone would. Not for one output: a batch of matrix-vector
        products rounds a round's otherwise than the same product alone (as PyTorch's CPU
        matmuls run them). Not where a round's block of the input, output or weight, or of
        their gradients, starts off a 16-byte boundary: on some CPUs (AMD's, not Intel's)
        PyTorch's batched matmul then rounds it otherwise than the same block aligned."""
        rows, n_in = x.shape[1:]
        n_out = self.weight.shape[-1]
        return (n_out > 1 and x.data_ptr() % 16 == 0
                and (rows * n_in) % 4 == (rows * n_out) % 4 == (n_in * n_out) % 4 == 0)

    def unstacked(self, r: int, layer: nn.Linear) -> None:
        layer.weight.data.copy_(self.weight[r].t())
        layer.bias.data.copy_(self.bias[r])


class StackedConv2d(nn.Module):
    """R convolutions with the same shape, on channels_last feature maps.

    A convolution of one or two input channels (a first layer, on a digit or a pair of digits)
    runs as an explicit im2col and one batched matmul over the rounds: oneDNN's kernels for so
    few input channels use the CPU poorly, the weight gradient most of all. Others run as one
    oneDNN convolution per round. ``folded`` (on a GPU, where one launch per round would cost
    more than the work): the R rounds as the R groups of one grouped convolution.
    """

    folded = False
    direct = False  # set by ``use_direct_convs``: directconv.py's kernels where they run ...
    lanes = False  # ... and output in their lanes layout, for the fused layer next (which,
    # in training, runs this convolution too, round by round: ``DeferredConv``)

    def __init__(self, layers: list[nn.Conv2d]):
        super().__init__()
        c = layers[0]
        if c.groups != 1 or c.padding_mode != "zeros" or isinstance(c.padding, str):
            raise TypeError("only plain Conv2d layers with numeric zero padding can be stacked")
        self.rounds, self.stride, self.padding, self.dilation = len(layers), c.stride, c.padding, c.dilation
        plain = c.stride == (1, 1) and c.dilation == (1, 1)
        self.im2col = c.in_channels <= 2 and plain
        # Padding beyond kernel - 1 on a side adds an outer ring of outputs that see nothing but
        # zeros, i.e. equal the bias; oneDNN's kernels for such padding are slow (their backward
        # most), so the convolution runs with padding kernel - 1 and its output is padded with
        # the bias: the same function. ``ring``: F.pad's (left, right, top, bottom) widths.
        ring = [max(0, p - k + 1) if plain else 0 for p, k in zip(c.padding, c.kernel_size, strict=True)]
        self.inner_padding = tuple(p - r for p, r in zip(c.padding, ring, strict=True))
        self.ring = (ring[1], ring[1], ring[0], ring[0]) if any(ring) else None
        w = torch.stack([m.weight.detach() for m in layers])
        # channels_last weights make oneDNN pick its fast nhwc kernels, and are, per output
        # channel, the (kh, kw, in) rows the im2col path multiplies with.
        self.weight = nn.Parameter(w.flatten(0, 1).contiguous(memory_format=torch.channels_last)
                                   .unflatten(0, w.shape[:2]))
        self.bias = (nn.Parameter(torch.stack([m.bias.detach() for m in layers]))
                     if c.bias is not None else None)

    def forward(self, x: torch.Tensor | RoundMaps) -> torch.Tensor | DeferredConv:
        # In training and in inference a lanes convolution leaves itself to the fused layer
        # after it, which runs the two as one (``DeferredConv``).
        defers = self.training or not torch.is_grad_enabled()
        if isinstance(x, RoundMaps):  # from a fused layer, which hands them only to a lanes layer
            return DeferredConv(x, self) if defers else self._direct(x)
        if self.folded:
            return self._grouped(x)
        if self.direct and directconv.supports(x):
            if self.lanes and defers and fused.library() is not None:
                return DeferredConv(x, self)
            return self._direct(x)
        if self.im2col:
            return self._im2col(x)
        x = x.contiguous(memory_format=torch.channels_last)
        weights, biases = _round_params(self.weight, self.rounds), _round_params(self.bias, self.rounds)
        if self.rounds == 1:  # the per-round arithmetic below, without a chunk and a cat
            y = self._conv(x, weights[0], biases[0])
        else:
            # unbind/chunk rather than indexing: their backward is one stack/cat, not R scatters.
            parts = zip(x.chunk(self.rounds), weights, biases, strict=True)
            y = torch.cat([self._conv(xr, w, b) for xr, w, b in parts])
        # A one-channel input is NCHW and NHWC at once, and the convolution then answers in
        # NCHW; keep every feature map channels_last, where pooling and BatchNorm are fast.
        return y.contiguous(memory_format=torch.channels_last)

    def _conv(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        """One round's convolution by oneDNN (its outer ring of bias values added apart)."""
        if self.ring is None:
            return F.conv2d(x, w, b, self.stride, self.padding, self.dilation)
        y = F.pad(F.conv2d(x, w, None, self.stride, self.inner_padding, self.dilation), self.ring)
        return y if b is None else y + b.view(-1, 1, 1)

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        """Height and width of the output for an h x w input."""
        sizes = zip((h, w), self.padding, self.dilation, self.weight.shape[-2:], self.stride, strict=True)
        return tuple((n + 2 * p - d * (k - 1) - 1) // s + 1 for n, p, d, k, s in sizes)

    def _direct(self, x: torch.Tensor | RoundMaps) -> torch.Tensor | RoundMaps:
        weights, biases = _round_params(self.weight, self.rounds), _round_params(self.bias, self.rounds)
        # Lanes out where the next layer reads them: in training, and in inference.
        lanes = self.lanes and (self.training or not torch.is_grad_enabled())
        if self.rounds == 1:
            return directconv.DirectConv2d.apply(x, weights[0], biases[0], self.padding, lanes)
        parts = zip(_rounds_of(x, self.rounds), weights, biases, strict=True)
        ys = [directconv.DirectConv2d.apply(xr, w, b, self.padding, lanes) for xr, w, b in parts]
        return RoundMaps(tuple(ys)) if lanes else torch.cat(ys)

    def _grouped(self, x: torch.Tensor) -> torch.Tensor:
        r = self.rounds
        # (R*B) x C x H x W -> B x (R*C) x H x W: round r's channels are group r.
        folded = x.unflatten(0, (r, -1)).transpose(0, 1).flatten(1, 2)
        bias = self.bias.flatten() if self.bias is not None else None
        y = F.conv2d(folded, self.weight.flatten(0, 1), bias, self.stride, self.padding, self.dilation, r)
        return y.unflatten(1, (r, -1)).transpose(0, 1).flatten(0, 1)

    def _im2col(self, x: torch.Tensor) -> torch.Tensor:
        r, (ph, pw) = self.rounds, self.padding
        _, out_ch, in_ch, kh, kw = self.weight.shape
        xp = F.pad(x.contiguous(), (pw, pw, ph, ph))  # B x C x Hp x Wp
        b, _, hp, wp = xp.shape
        n, ho, wo, k = b // r, hp - kh + 1, wp - kw + 1, in_ch * kh * kw
        # Round r's columns: one row per (in, kh, kw) weight, plus a row of ones for the bias,
        # one column per output pixel; copied from shifted views of the padded input in runs
        # of a whole output row.
        cols = xp.new_empty(r, k + (self.bias is not None), n * ho * wo)
        cols[:, :k].view(r, in_ch, kh, kw, n, ho, wo).copy_(xp.as_strided(
            (r, in_ch, kh, kw, n, ho, wo), (n * in_ch * hp * wp, hp * wp, wp, 1, in_ch * hp * wp, wp, 1)))
        w = self.weight.reshape(r, out_ch, k)
        if self.bias is not None:  # the bias as one more weight: no separate pass to add it
            cols[:, k] = 1
            w = torch.cat((w, self.bias.unsqueeze(2)), 2)
        y = torch.bmm(cols.transpose(1, 2), w.transpose(1, 2))
        # Rows are (image, h, w) and columns channels: NHWC memory, i.e. channels_last NCHW.
        return y.view(b, ho, wo, out_ch).permute(0, 3, 1, 2)

    def unstacked(self, r: int, layer: nn.Conv2d) -> None:
        layer.weight.data.copy_(self.weight[r])
        if self.bias is not None:
            layer.bias.data.copy_(self.bias[r])


class StackedBatchNorm(nn.Module):
    """BatchNorm1d/2d with R x C channels: the round-major batch is viewed as N x (R*C) x ...
    (feature maps too when ``folded``, on a GPU, where that permuting copy is cheap).

    ``pool_relu`` (set by ``fuse_pool_relu``, which removes the max-pool and ReLU that followed
    it): the layer computes relu(max_pool2d(batch_norm(x), 2)), in training on the CPU by one
    fused kernel (``fused.py``).
    """

    folded = False
    pool_relu = False
    lanes = False  # set by ``use_direct_convs``: the fused kernel in directconv.py's lanes layout
    hands_maps = False  # ... and, for R > 1 rounds, the next layer takes them as ``RoundMaps``

    def __init__(self, layers: list[nn.modules.batchnorm._BatchNorm]):
        super().__init__()
        b = layers[0]
        if not (b.affine and b.track_running_stats):
            raise TypeError("only affine BatchNorm layers that track running stats can be stacked")
        self.rounds, self.eps, self.momentum = len(layers), b.eps, b.momentum
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in layers]))
        self.bias = nn.Parameter(torch.stack([m.bias.detach() for m in layers]))
        self.register_buffer("running_mean", torch.stack([m.running_mean for m in layers]).flatten())
        self.register_buffer("running_var", torch.stack([m.running_var for m in layers]).flatten())
        self.register_buffer("num_batches_tracked", layers[0].num_batches_tracked.clone())

    def forward(self, x: torch.Tensor | DeferredConv | RoundMaps) -> torch.Tensor | RoundMaps:
        if isinstance(x, DeferredConv):
            xs = _rounds_of(x.x, self.rounds)
            if fused.fits(x.conv.weight.shape[1], *x.conv.output_size(*xs[0].shape[2:])):
                if self.training:
                    return self._fused_with_conv(x.conv, xs)
                if not torch.is_grad_enabled():
                    return self._fused_eval_with_conv(x.conv, xs)
            x = x.conv._direct(x.x)  # maps the kernels do not take: the convolution apart
            if isinstance(x, RoundMaps):
                x = torch.cat(x.maps)
        if not self.pool_relu:
            return self._batch_norm(x)
        if self.training and fused.supports(x):
            return self._fused(x)
        return F.relu(F.max_pool2d(self._batch_norm(x), 2))

    def _batch_norm(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.num_batches_tracked += 1
        r = self.rounds
        if x.dim() == 2 or self.folded:
            # (R*N) x C x ... -> N x (R*C) x ...: a copy, then one fused kernel for all rounds.
            y = F.batch_norm(x.unflatten(0, (r, -1)).transpose(0, 1).flatten(1, 2), self.running_mean,
                             self.running_var, self.weight.flatten(), self.bias.flatten(),
                             self.training, self.momentum, self.eps)
            return y.unflatten(1, (r, -1)).transpose(0, 1).flatten(0, 1)
        # Feature maps: the same permute would be a strided 5-d copy, slow on a CPU, so each
        # round's contiguous slice gets its own call instead; the running statistics are
        # updated in place through views of the stacked buffers.
        xs = _rounds_of(x, r)
        ys = [F.batch_norm(xr, m, v, w, b, self.training, self.momentum, self.eps)
              for xr, m, v, w, b in zip(xs, self.running_mean.view(r, -1).unbind(),
                                        self.running_var.view(r, -1).unbind(), _round_params(self.weight, r),
                                        _round_params(self.bias, r), strict=True)]
        return ys[0] if r == 1 else torch.cat(ys)

    def _fused(self, x: torch.Tensor) -> torch.Tensor:
        """relu(max_pool2d(batch_norm(x), 2)) in training, by the fused kernel, its batch
        statistics updating the running ones as F.batch_norm's do. ``lanes``: round by round in
        the lanes layout, whatever the number of rounds (so that a round's arithmetic does not
        depend on its stack mates)."""
        self.num_batches_tracked += 1
        if self.lanes:
            outs = [fused.BNPoolReLU.apply(xr, w, b, 1, self.eps, True) for xr, w, b
                    in zip(_rounds_of(x, self.rounds), _round_params(self.weight, self.rounds),
                           _round_params(self.bias, self.rounds), strict=True)]
            y, mean, var = outs[0] if self.rounds == 1 else (torch.cat(t) for t in zip(*outs, strict=True))
        else:
            y, mean, var = fused.BNPoolReLU.apply(x, self.weight, self.bias, self.rounds, self.eps)
        self._update_running(mean, var, x.numel() // x.shape[1] // self.rounds)
        return y

    def _fused_with_conv(self, conv: StackedConv2d,
                         xs: list[torch.Tensor]) -> torch.Tensor | RoundMaps:
        """The same after the convolution ``conv`` on the rounds' inputs ``xs``, round by round:
        both as one autograd function (``fused.ConvBNPoolReLU``), the same kernels and numbers."""
        self.num_batches_tracked += 1
        r = self.rounds
        parts = zip(xs, _round_params(conv.weight, r), _round_params(conv.bias, r),
                    _round_params(self.weight, r), _round_params(self.bias, r), strict=True)
        outs = [fused.ConvBNPoolReLU.apply(xr, cw, cb, bw, bb, conv.padding, self.eps)
                for xr, cw, cb, bw, bb in parts]
        n, _, h, w = xs[0].shape
        ho, wo = conv.output_size(h, w)
        ys, means, variances = zip(*outs, strict=True)
        self._update_running(torch.cat(means), torch.cat(variances), n * ho * wo)
        return self._handed(ys)

    def _handed(self, ys: tuple[torch.Tensor, ...]) -> torch.Tensor | RoundMaps:
        """The rounds' outputs (lanes views) as the next layer takes them: the one round's
        view, the rounds' views where the next layer takes them apart (``hands_maps``), else
        one tensor."""
        if len(ys) == 1:
            return ys[0]
        return RoundMaps(tuple(ys)) if self.hands_maps else torch.cat(ys)

    def _update_running(self, mean: torch.Tensor, var: torch.Tensor, n: int) -> None:
        """Move the running statistics towards a batch's mean and biased variance over ``n``
        values per (round, channel), as F.batch_norm does (the running variance unbiased)."""
        with torch.no_grad():
            self.running_mean.lerp_(mean.float(), self.momentum)
            self.running_var.lerp_(var.float() * (n / (n - 1)), self.momentum)

    def _fused_eval_with_conv(self, conv: StackedConv2d, xs: list[torch.Tensor]) -> torch.Tensor | RoundMaps:
        """The same in inference (BatchNorm with the running statistics): the convolution and
        this layer as one kernel per round, ``directconv.conv_bn_pool_relu_eval`` (``lanes``
        layers only, like their training)."""
        r = self.rounds
        parts = zip(xs, _round_params(conv.weight, r), _round_params(conv.bias, r),
                    _round_params(self.weight, r), _round_params(self.bias, r),
                    self.running_mean.view(r, -1), self.running_var.view(r, -1), strict=True)
        return self._handed(tuple(
            directconv.conv_bn_pool_relu_eval(xr, cw, cb, w, b, m, v, self.eps, conv.padding)
            for xr, cw, cb, w, b, m, v in parts))

    def unstacked(self, r: int, layer: nn.modules.batchnorm._BatchNorm) -> None:
        c = self.weight.shape[1]
        layer.weight.data.copy_(self.weight[r])
        layer.bias.data.copy_(self.bias[r])
        layer.running_mean.copy_(self.running_mean[r * c:(r + 1) * c])
        layer.running_var.copy_(self.running_var[r * c:(r + 1) * c])
        layer.num_batches_tracked.copy_(self.num_batches_tracked)


class StackedDropout(nn.Module):
    """Dropout whose mask for round r's rows comes from round r's own generator."""

    def __init__(self, p: float, generators: list[torch.Generator]):
        super().__init__()
        self.p, self.generators = p, generators

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.empty_like(x, memory_format=torch.contiguous_format)
        if self.p == 0.5 and fused.masks_supported(keep, len(self.generators)):
            fused.dropout_masks(keep, self.generators)  # the masks below, already divided
            return x * keep
        for rows, g in zip(keep.chunk(len(self.generators)), self.generators, strict=True):
            if self.p == 0.5:
                rows.copy_(random_bits(rows.shape, g))
            else:
                rows.bernoulli_(1 - self.p, generator=g)
        return x * keep.div_(1 - self.p)


def random_bits(shape: torch.Size, g: torch.Generator) -> torch.Tensor:
    """Independent fair 0/1 values (float) from ``g``: a dropout mask for p = 0.5, every built-in
    model's. Each draw of the generator gives 63 of them, where ``bernoulli_`` draws once per
    value (README, Speed)."""
    n = shape.numel()
    words = torch.empty((n + 62) // 63, dtype=torch.int64, device=g.device).random_(generator=g)
    bits = (words.unsqueeze(1) >> torch.arange(63, device=g.device)) & 1  # [0, 2^63): 63 bits
    return bits.flatten()[:n].view(shape).float()


_STACKED = {nn.Linear: StackedLinear, nn.Conv2d: StackedConv2d,
            nn.BatchNorm1d: StackedBatchNorm, nn.BatchNorm2d: StackedBatchNorm}


def _foreign_layer(network: nn.Module) -> nn.Module | None:
    """The first layer of ``network`` with parameters or buffers that this engine cannot stack."""
    for m in network.modules():
        if type(m) not in _STACKED and (any(m.parameters(recurse=False)) or any(m.buffers(recurse=False))):
            return m
    return None


def stackable(model: nn.Module) -> bool:
    """Whether the model's members (the networks that train; usually the model itself) hold
    parameters and buffers only in layers this engine can stack."""
    return isinstance(model, PairModel) and all(_foreign_layer(m) is None for m in model.members())


def stack_models(models: list[nn.Module], dropout_generators: list[torch.Generator],
                 group: int | None = None, folded: bool = False, fuse: bool = False,
                 direct: bool = False) -> Slots:
    """The S ``models`` (same class and shape, each initialised for its own round, or ensemble
    members) as S slots, in stacked networks of ``group`` slots each (default: all in one);
    ``folded``: convolutions and BatchNorm with the slots folded into channels (for a GPU);
    ``fuse``: BatchNorm + max-pool + ReLU as one layer with a fused kernel (for a CPU that has
    it: ``fused.library()``); ``direct``: convolutions on ``directconv.py``'s kernels where
    ``use_direct_convs`` says (likewise)."""
    foreign = _foreign_layer(models[0])
    if foreign is not None:
        raise TypeError(f"{type(foreign).__name__} layers cannot be stacked")
    group = group or len(models)
    slots = Slots([_stack(models[i:i + group], dropout_generators[i:i + group])
                   for i in range(0, len(models), group)])
    for m in slots.modules():
        if isinstance(m, (StackedConv2d, StackedBatchNorm)):
            m.folded = folded
    if fuse:
        fuse_pool_relu(slots)
        pair_max_pools(slots)
    if direct:
        use_direct_convs(slots)
    return slots


def _stack(models: list[nn.Module], dropout_generators: list[torch.Generator]) -> nn.Module:
    """One network holding ``models`` (same class and shape)."""
    stacked = copy.deepcopy(models[0])
    modules = [dict(m.named_modules()) for m in models]
    for name, mod in list(stacked.named_modules()):
        if type(mod) in _STACKED:
            new = _STACKED[type(mod)]([ms[name] for ms in modules])
        elif isinstance(mod, nn.Dropout):
            new = StackedDropout(mod.p, dropout_generators)
        else:
            continue
        parent, _, attr = name.rpartition(".")
        setattr(stacked.get_submodule(parent) if parent else stacked, attr, new)
    pool_before_relu(stacked)
    stacked.slots = len(models)
    return stacked


class Slots(nn.Module):
    """S independent networks (slots) held by one or more stacked networks (groups), in slot
    order. Like each group, it takes S equal blocks of rows, block s for slot s, and returns the
    slots' outputs block by block.

    Groups keep a stack small where a large one would not pay: a convnet's activations for many
    slots no longer fit in the CPU's cache, and concatenating them costs more than stacking
    saves. Only the outputs of groups are concatenated, never their activations.
    """

    def __init__(self, groups: list[nn.Module]):
        super().__init__()
        self.groups = nn.ModuleList(groups)
        self.sizes = [g.slots for g in groups]

    def forward(self, x: torch.Tensor):
        if len(self.groups) == 1:
            return self.groups[0](x)
        rows = x.shape[0] // sum(self.sizes)
        outs = [g(part) for g, part in zip(self.groups, x.split([s * rows for s in self.sizes]), strict=True)]
        digits = None if outs[0][1] is None else torch.cat([o[1] for o in outs])
        return torch.cat([o[0] for o in outs]), digits

    def unstack(self, slot: int, model: nn.Module) -> nn.Module:
        """Copy slot ``slot``'s weights and statistics into ``model`` (of the stacked class)."""
        for g, size in zip(self.groups, self.sizes, strict=True):
            if slot < size:
                return unstack(g, slot, model)
            slot -= size
        raise IndexError(f"slot {slot} beyond the last one")


def pool_before_relu(model: nn.Module) -> None:
    """Swap each ReLU followed by a max-pool in a Sequential: max(relu(x)) = relu(max(x)), as
    ReLU never decreases, so the function is unchanged, and so are its gradients but for exact
    ties between positive values. ReLU then runs on the pooled map, a quarter of the size."""
    for seq in model.modules():
        if isinstance(seq, nn.Sequential):
            layers = list(seq)
            for i in range(len(layers) - 1):
                if type(layers[i]) is nn.ReLU and isinstance(layers[i + 1], (nn.MaxPool1d, nn.MaxPool2d)):
                    seq[i], seq[i + 1] = layers[i + 1], layers[i]


def fuse_pool_relu(model: nn.Module) -> None:
    """Make each StackedBatchNorm followed by a 2 x 2 max-pool and a ReLU in a
    Sequential (the order ``pool_before_relu`` leaves) one ``pool_relu`` layer; the pool and
    ReLU become identities, so every layer with state keeps its name."""
    for seq in model.modules():
        if isinstance(seq, nn.Sequential):
            layers = list(seq)
            for i in range(len(layers) - 2):
                bn, pool, relu = layers[i:i + 3]
                if (isinstance(bn, StackedBatchNorm) and isinstance(bn.momentum, float)
                        and type(pool) is nn.MaxPool2d and _is_2x2(pool) and type(relu) is nn.ReLU):
                    bn.pool_relu = True
                    seq[i + 1], seq[i + 2] = nn.Identity(), nn.Identity()


class RoundsFlatten(nn.Flatten):
    """nn.Flatten() that also takes ``RoundMaps``: the rounds' maps in one tensor, flattened."""

    def forward(self, x: torch.Tensor | RoundMaps) -> torch.Tensor:
        return torch.cat(x.maps).flatten(1) if isinstance(x, RoundMaps) else super().forward(x)


class PairMaxPool1d(nn.MaxPool1d):
    """MaxPool1d(2) by ``fused.PairMax`` where it takes the input (float32 on a CPU with the
    kernel, an even length), else as before: the same values and gradients."""

    def __init__(self):
        super().__init__(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused.PairMax.apply(x) if fused.pairs_supported(x) else super().forward(x)


def pair_max_pools(model: nn.Module) -> None:
    """Make each MaxPool1d(2) of ``model`` (the MLP's) a ``PairMaxPool1d``."""
    def is_pair_pool(m: nn.Module) -> bool:
        sizes = [v if isinstance(v, tuple) else (v,)
                 for v in (m.kernel_size, m.stride, m.padding, m.dilation)]
        return sizes == [(2,), (2,), (0,), (1,)] and not m.ceil_mode and not m.return_indices

    found = [(parent, name) for parent in model.modules() for name, m in parent.named_children()
             if type(m) is nn.MaxPool1d and is_pair_pool(m)]
    for parent, name in found:
        setattr(parent, name, PairMaxPool1d())


# The direct kernels' weight gradient re-reads the maps once per block of channels: beyond about
# 16 x 32 channels it fell behind oneDNN's (probcmp's 32 -> 32 and 64 -> 64 layers, 3-4x slower
# in benchmarks/kernel_ceiling.py's per-layer table), while at the study's 16 -> 20 it is faster.
DIRECT_MAX_CHANNEL_PRODUCT = 512


def use_direct_convs(model: nn.Module) -> None:
    """Run the stride-1 convolutions of ``model`` with few channels (input x output channels at
    most ``DIRECT_MAX_CHANNEL_PRODUCT``) on ``directconv.py``'s kernels: those of more than two
    input channels, and, where a convolution of one network is followed by a fused BatchNorm +
    max-pool + ReLU in a Sequential, that one too (first layers included), the two exchanging
    maps in the lanes layout (in training as one autograd function per round, ``DeferredConv``;
    several rounds' maps handed on apart, ``RoundMaps``). (A first layer whose output goes to
    PyTorch's operators keeps its im2col path, which was faster with the transposes around the
    kernel.) Which layers do so depends on the model alone, not on how many rounds are stacked."""
    def suits(m: nn.Module) -> bool:
        return (isinstance(m, StackedConv2d) and m.stride == (1, 1) and m.dilation == (1, 1)
                and m.weight.shape[1] * m.weight.shape[2] <= DIRECT_MAX_CHANNEL_PRODUCT)

    for m in model.modules():
        if suits(m):
            m.direct = not m.im2col
    for seq in model.modules():
        if isinstance(seq, nn.Sequential):
            for conv, nxt in itertools.pairwise(seq):
                if suits(conv) and isinstance(nxt, StackedBatchNorm) and nxt.pool_relu:
                    conv.direct = conv.lanes = nxt.lanes = True
    # Such a layer hands several rounds' maps on apart to the next convolution of this kind or
    # to a Flatten (past the identities its pool and ReLU left), which take them so.
    flattens = []
    for seq in model.modules():
        if isinstance(seq, nn.Sequential):
            layers = [(i, m) for i, m in enumerate(seq) if type(m) is not nn.Identity]
            for (_, bn), (i, nxt) in itertools.pairwise(layers):
                if not (isinstance(bn, StackedBatchNorm) and bn.lanes):
                    continue
                if isinstance(nxt, StackedConv2d) and nxt.lanes:
                    bn.hands_maps = True
                elif type(nxt) is nn.Flatten and (nxt.start_dim, nxt.end_dim) == (1, -1):
                    bn.hands_maps = True
                    flattens.append((seq, i))
    for seq, i in flattens:
        seq[i] = RoundsFlatten()


def has_fused_layers(model: nn.Module) -> bool:
    """Whether ``fuse_pool_relu`` made any layer of ``model`` a fused one."""
    return any(isinstance(m, StackedBatchNorm) and m.pool_relu for m in model.modules())


def has_direct_convs(model: nn.Module) -> bool:
    """Whether any convolution of ``model`` runs on ``directconv.py``'s kernels."""
    return any(isinstance(m, StackedConv2d) and m.direct for m in model.modules())


def _is_2x2(pool: nn.MaxPool2d) -> bool:
    """Whether ``pool`` is MaxPool2d(2): 2 x 2 windows, stride 2, no padding or dilation, floor."""
    sizes = [v if isinstance(v, tuple) else (v, v)
             for v in (pool.kernel_size, pool.stride, pool.padding, pool.dilation)]
    return sizes == [(2, 2), (2, 2), (0, 0), (1, 1)] and not pool.ceil_mode and not pool.return_indices


def unstack(stacked: nn.Module, r: int, model: nn.Module) -> nn.Module:
    """Copy round ``r``'s weights and statistics out of ``stacked`` into ``model`` (same class)."""
    layers = dict(model.named_modules())
    for name, mod in stacked.named_modules():
        if hasattr(mod, "unstacked"):
            mod.unstacked(r, layers[name])
    return model.eval()


def activation_bytes(model: nn.Module, batch: int) -> int:
    """Bytes of layer outputs one training step of ``model`` makes for a batch of ``batch`` pairs
    (measured on a copy: a forward pass in training mode would move BatchNorm's statistics)."""
    sizes = []
    probe = copy.deepcopy(model).cpu().train()
    for m in probe.modules():
        if not list(m.children()):
            m.register_forward_hook(lambda m, i, o: sizes.append(o.numel() * o.element_size()))
    with torch.no_grad():
        probe(torch.zeros(batch, 2, 14, 14))
    return sum(sizes)


# Stacking pays while one step's activations stay in cache: many small MLP steps gain from being
# one, while a convnet's step is large enough alone (README's Speed section). Where the
# convolutions run on the direct kernels, a convnet's blocks run round by round anyway and two
# `cnn` rounds gain from sharing the head, loss and Adam (model 3's step is still large enough
# alone): a larger budget there. (Elsewhere, PyTorch's convolutions and matmuls on several
# threads made a stacked round's numbers depend on its stack mates.)
STACK_BUDGET = 8 * 2**20
DIRECT_STACK_BUDGET = 20 * 2**20


def stack_size(model: nn.Module, batch: int, budget: int = STACK_BUDGET) -> int:
    """How many copies of ``model`` (rounds, or an ensemble's members) to stack on a CPU: as
    many as keep a training step's activations within budget."""
    return max(1, budget // max(1, activation_bytes(model, batch)))
