"""Kernel banks to initialise or inspect a convolution layer.

Hand-designed: :func:`sobel` (image gradients) and :func:`gabor` / :func:`gabor_bank`
(oriented band-pass filters after the Gabor function). Learned without labels:
:func:`kmeans` (k-means on normalised, whitened image patches, Coates & Ng 2011).

Every bank is returned as a convolution weight of shape ``(out_channels, in_channels, kH, kW)``
for ``torch.nn.functional.conv2d`` / :class:`torch_cnn_ops.nn.Conv2d` (cross-correlation, as
torch); :func:`init_conv_` copies one into a layer.

Coordinates: ``x`` runs along the columns (left to right), ``y`` along the rows (top to bottom),
both centred on the kernel's middle; ``kernel[i, j]`` is the function at ``x = j - (kW - 1) / 2``,
``y = i - (kH - 1) / 2``.
"""

import math
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ._utils import ntuple

__all__ = ["sobel", "gabor", "gabor_bank", "kmeans", "init_conv_"]

_SOBEL_X = [[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]


def _factory(dtype, device):
    return {"dtype": torch.get_default_dtype() if dtype is None else dtype, "device": device}


def sobel(direction: str = "xy", *, dtype: Optional[torch.dtype] = None, device=None) -> Tensor:
    """The 3x3 Sobel kernels, as a conv weight.

    ``x`` is ``[[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]`` (positive where the intensity grows to the
    right, under cross-correlation), ``y`` its transpose (positive where it grows downwards).

    Args:
        direction: ``"xy"`` (both, ``x`` first), ``"x"`` or ``"y"``.

    Returns:
        ``(2, 1, 3, 3)`` for ``"xy"``, ``(1, 1, 3, 3)`` for ``"x"`` or ``"y"``.

    Example::

        >>> img = torch.arange(25.).reshape(1, 1, 5, 5)        # grows by 1 per column, 5 per row
        >>> torch.nn.functional.conv2d(img, tco.filters.sobel())[0, :, 0, 0]
        tensor([ 8., 40.])
    """
    gx = torch.tensor(_SOBEL_X, **_factory(dtype, device))
    kernels = {"x": [gx], "y": [gx.t()], "xy": [gx, gx.t()]}
    if direction not in kernels:
        raise ValueError(f"sobel: direction must be 'xy', 'x' or 'y', got {direction!r}")
    return torch.stack(kernels[direction]).unsqueeze(1).contiguous()


def _positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return float(value)


def gabor(size, theta: float, frequency: float, sigma: Optional[float] = None, phase: float = 0.0,
          gamma: float = 1.0, amplitude: float = 1.0, *, dtype: Optional[torch.dtype] = None,
          device=None) -> Tensor:
    """One Gabor kernel: a plane wave under a Gaussian envelope,

    ``w(x, y) = amplitude * exp(-beta_x x'^2 - beta_y y'^2) * cos(2 pi frequency x' + phase)``

    with the rotated coordinates ``x' = x cos(theta) + y sin(theta)``,
    ``y' = -x sin(theta) + y cos(theta)``, ``beta_x = 1 / (2 sigma^2)`` and
    ``beta_y = gamma^2 / (2 sigma^2)``. The wave runs along ``x'``, so its stripes lie at angle
    ``theta + pi/2`` (``theta = 0``: vertical stripes, an edge detector along ``x``).

    Args:
        size: ``k`` or ``(kH, kW)``.
        theta: orientation of the wave in radians (from the ``x`` axis towards ``y``, i.e.
            clockwise on screen since ``y`` points down).
        frequency: cycles per pixel along ``x'`` (wavelength ``1 / frequency``), in ``(0, 0.5]``
            for a kernel without aliasing.
        sigma: standard deviation of the envelope along ``x'`` in pixels; default
            ``0.56 / frequency`` (a bandwidth of one octave).
        phase: ``phi`` in radians: ``0`` even (symmetric, line detector), ``pi/2`` odd (edge detector).
        gamma: aspect ratio of the envelope (``sigma_y = sigma / gamma``); ``< 1`` elongates it along the stripes.
        amplitude: ``alpha``, the value at the centre for ``phase = 0``.

    Returns:
        ``(kH, kW)``.

    Example::

        >>> k = tco.filters.gabor(7, theta=0.0, frequency=0.25, sigma=2.0)
        >>> k.shape, k[3, 3].item()
        (torch.Size([7, 7]), 1.0)
    """
    kh, kw = ntuple(size, 2, "size")
    if kh < 1 or kw < 1:
        raise ValueError(f"gabor: size must be positive, got {size!r}")
    frequency = _positive("frequency", frequency)
    sigma = 0.56 / frequency if sigma is None else _positive("sigma", sigma)
    gamma = _positive("gamma", gamma)
    # Built in float64, rounded once: the kernel is tiny and the cosine is sensitive to x'.
    y = torch.arange(kh, dtype=torch.float64) - (kh - 1) / 2
    x = torch.arange(kw, dtype=torch.float64) - (kw - 1) / 2
    y, x = torch.meshgrid(y, x, indexing="ij")
    xr = x * math.cos(theta) + y * math.sin(theta)
    yr = -x * math.sin(theta) + y * math.cos(theta)
    beta_x = 1.0 / (2.0 * sigma**2)
    beta_y = gamma**2 / (2.0 * sigma**2)
    w = amplitude * torch.exp(-beta_x * xr**2 - beta_y * yr**2) * torch.cos(2 * math.pi * frequency * xr + phase)
    return w.to(**_factory(dtype, device))


def gabor_bank(orientations: int = 8, frequencies: Union[float, Sequence[float]] = (0.25,), size=7,
               in_channels: int = 1, sigma: Optional[float] = None, phases: Sequence[float] = (0.0, math.pi / 2),
               gamma: float = 1.0, normalize: bool = True, *, dtype: Optional[torch.dtype] = None,
               device=None) -> Tensor:
    """A bank of Gabor kernels (see :func:`gabor`) as a conv weight.

    Filter ``o`` is, in this order of nesting (the last varies fastest), the frequency
    ``frequencies[f]``, the orientation ``theta = pi * t / orientations`` (``t < orientations``)
    and the phase ``phases[p]``: ``o = (f * orientations + t) * len(phases) + p``. With
    ``normalize=True`` each kernel has its mean removed (no response to a flat image) and unit
    L2 norm. Every input channel gets the same kernel divided by ``in_channels``, so the bank
    filters the mean of the channels (e.g. the grey level of an RGB image).

    Args:
        orientations: the number of orientations, evenly spaced in ``[0, pi)``.
        frequencies: one or several frequencies in cycles per pixel.
        size, sigma, gamma: as :func:`gabor` (``sigma=None``: ``0.56 / frequency`` for each frequency).
        in_channels: input channels of the conv layer the bank is for.
        phases: the phases of each orientation; the default pair (even, odd) makes a quadrature pair.

    Returns:
        ``(len(frequencies) * orientations * len(phases), in_channels, kH, kW)``.

    Example::

        >>> w = tco.filters.gabor_bank(orientations=4, frequencies=(0.2, 0.3), size=7, in_channels=3)
        >>> w.shape
        torch.Size([16, 3, 7, 7])
        >>> conv = tco.filters.init_conv_(tco.nn.Conv2d(3, 16, 7, padding=3, bias=False), w)
    """
    if isinstance(orientations, bool) or not isinstance(orientations, int) or orientations < 1:
        raise ValueError(f"gabor_bank: orientations must be a positive int, got {orientations!r}")
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"gabor_bank: in_channels must be a positive int, got {in_channels!r}")
    freqs = [frequencies] if isinstance(frequencies, (int, float)) else list(frequencies)
    phases = list(phases)
    if not freqs or not phases:
        raise ValueError("gabor_bank: frequencies and phases must not be empty")
    kernels = []
    for f in freqs:
        for t in range(orientations):
            for p in phases:
                k = gabor(size, math.pi * t / orientations, f, sigma, p, gamma, dtype=torch.float64)
                if normalize:
                    k = k - k.mean()
                    k = k / k.norm().clamp_min(1e-12)
                kernels.append(k)
    bank = torch.stack(kernels).unsqueeze(1) / in_channels
    return bank.expand(-1, in_channels, -1, -1).to(**_factory(dtype, device)).contiguous()


def init_conv_(conv: torch.nn.Module, weight: Tensor, *, zero_bias: bool = False) -> torch.nn.Module:
    """Copies a bank into ``conv.weight`` in place (no autograd history; dtype and device of the
    layer kept) and returns ``conv``; ``zero_bias=True`` also zeroes its bias.

    The shapes must match exactly: ``weight.shape == conv.weight.shape``, e.g.
    ``(out_channels, in_channels // groups, kH, kW)`` for a Conv2d.

    Example::

        >>> conv = tco.nn.Conv2d(1, 2, 3, padding=1)
        >>> tco.filters.init_conv_(conv, tco.filters.sobel(), zero_bias=True).weight.shape
        torch.Size([2, 1, 3, 3])
    """
    target = getattr(conv, "weight", None)
    if not isinstance(target, Tensor):
        raise TypeError(f"init_conv_: expected a layer with a weight tensor, got {type(conv).__name__}")
    if not isinstance(weight, Tensor):
        raise TypeError(f"init_conv_: weight must be a Tensor, got {type(weight).__name__}")
    if weight.shape != target.shape:
        raise ValueError(f"init_conv_: weight of shape {tuple(weight.shape)} does not fit the layer's "
                         f"weight of shape {tuple(target.shape)}")
    with torch.no_grad():
        target.copy_(weight)
        if zero_bias and getattr(conv, "bias", None) is not None:
            conv.bias.zero_()
    return conv


# ---- k-means ---------------------------------------------------------------------------------
def _sample_patches(images: Tensor, num_patches: int, kh: int, kw: int, generator) -> Tensor:
    n, _, h, w = images.shape
    idx = torch.randint(n, (num_patches,), generator=generator)
    top = torch.randint(h - kh + 1, (num_patches,), generator=generator)
    left = torch.randint(w - kw + 1, (num_patches,), generator=generator)
    rows = top[:, None] + torch.arange(kh)  # (P, kh)
    cols = left[:, None] + torch.arange(kw)  # (P, kw)
    # images[idx, :, rows, cols] for every patch at once: (P, kh, kw, C) by advanced indexing.
    patches = images[idx[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return patches.permute(0, 3, 1, 2).reshape(num_patches, -1)


def _spherical_kmeans(x: Tensor, k: int, iterations: int, generator) -> Tensor:
    """Unit-norm centroids (k, D) of the rows of x, assigned by the largest dot product."""
    centroids = x[torch.randperm(x.shape[0], generator=generator)[:k]].clone()
    centroids = centroids / centroids.norm(dim=1, keepdim=True).clamp_min(1e-12)
    for _ in range(iterations):
        assign = (x @ centroids.t()).argmax(dim=1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k)
        empty = counts == 0
        if empty.any():
            # A centroid nobody chose restarts at a random patch rather than staying dead.
            picks = torch.randint(x.shape[0], (int(empty.sum()),), generator=generator)
            sums[empty] = x[picks]
        centroids = sums / sums.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return centroids


def kmeans(images: Tensor, num_filters: int, size, num_patches: int = 10000, iterations: int = 10,
           whiten: bool = True, norm_eps: float = 0.01, zca_eps: float = 0.1,
           generator: Optional[torch.Generator] = None) -> Tensor:
    """Filters learned without labels: spherical k-means on normalised image patches (Coates &
    Ng, "An analysis of single-layer networks in unsupervised feature learning", 2011).

    1. ``num_patches`` patches of ``size`` are drawn at random positions of random images.
    2. Each patch (flattened over channels and pixels) has its mean removed and is divided by
       ``sqrt(var + norm_eps * v)``, ``v`` the mean variance of the sampled patches: brightness and
       contrast normalisation that does not depend on the images' scale (0-1 or 0-255).
    3. With ``whiten=True`` the patches are ZCA-whitened, ``W = U (L + zca_eps)^(-1/2) U^T`` from
       the eigen-decomposition ``U L U^T`` of their covariance.
    4. Spherical k-means for ``iterations`` steps: unit-norm centroids, each patch assigned to the
       centroid of largest dot product, initialised from random patches; an empty cluster
       restarts at a random patch.

    The returned filters are ``W d`` for each centroid ``d`` (``d`` itself without whitening),
    scaled to unit L2 norm: the dot product of a filter with a normalised patch is then the
    whitened-space response ``d . (W x)`` up to a positive factor, so they can be used
    directly as conv weights on the (normalised) images.

    Args:
        images: ``(N, C, H, W)`` or ``(N, H, W)``, any real dtype (integers are converted).
        num_filters: the number of centroids ``K``.
        size: ``k`` or ``(kH, kW)``, at most the images' size.
        generator: a :class:`torch.Generator` for the sampling and initialisation; the same
            generator state gives the same filters.

    Returns:
        ``(K, C, kH, kW)`` of the images' dtype (the default dtype for integer images), each
        filter of unit L2 norm.

    Example::

        >>> images = torch.rand(20, 3, 32, 32)
        >>> w = tco.filters.kmeans(images, 16, 5, num_patches=2000, generator=torch.Generator().manual_seed(0))
        >>> w.shape
        torch.Size([16, 3, 5, 5])
    """
    if not isinstance(images, Tensor):
        raise TypeError(f"kmeans: images must be a Tensor, got {type(images).__name__}")
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if images.dim() != 4 or images.numel() == 0:
        raise ValueError(f"kmeans: images must be a non-empty (N, C, H, W) or (N, H, W), got shape "
                         f"{tuple(images.shape)}")
    if images.is_complex():
        raise TypeError("kmeans: complex images are not supported")
    out_dtype = images.dtype if images.is_floating_point() else torch.get_default_dtype()
    for name, value in (("num_filters", num_filters), ("num_patches", num_patches), ("iterations", iterations)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"kmeans: {name} must be a positive int, got {value!r}")
    if num_patches < num_filters:
        raise ValueError(f"kmeans: num_patches ({num_patches}) must be at least num_filters ({num_filters})")
    kh, kw = ntuple(size, 2, "size")
    if not (1 <= kh <= images.shape[2] and 1 <= kw <= images.shape[3]):
        raise ValueError(f"kmeans: size {(kh, kw)} does not fit images of size {tuple(images.shape[2:])}")
    norm_eps = _positive("norm_eps", norm_eps)
    zca_eps = _positive("zca_eps", zca_eps)

    # The work is small (num_patches x C*kH*kW); float64 on the CPU keeps the eigen-decomposition
    # accurate and makes the result the same whatever the device.
    x = _sample_patches(images.detach().to("cpu", torch.float64), num_patches, kh, kw, generator)
    x = x - x.mean(dim=1, keepdim=True)
    var = x.var(dim=1, keepdim=True)
    x = x / torch.sqrt(var + norm_eps * var.mean().clamp_min(1e-12))
    zca = None
    if whiten:
        cov = (x.t() @ x) / x.shape[0]  # the patches are centred per patch; the mean patch is ~0
        evals, evecs = torch.linalg.eigh(cov)
        zca = evecs @ torch.diag((evals.clamp_min(0) + zca_eps).rsqrt()) @ evecs.t()
        x = x @ zca
    centroids = _spherical_kmeans(x, num_filters, iterations, generator)
    if zca is not None:
        centroids = centroids @ zca  # W d (W is symmetric)
        centroids = centroids / centroids.norm(dim=1, keepdim=True).clamp_min(1e-12)
    c = images.shape[1]
    return centroids.reshape(num_filters, c, kh, kw).to(device=images.device, dtype=out_dtype)
