"""Normalization modules: drop-in twins of torch.nn's.

Each subclasses its torch.nn twin, so constructors, parameters and buffers (``weight``,
``bias``, ``running_mean``, ``running_var``, ``num_batches_tracked``), ``state_dict`` keys
and ``extra_repr`` are torch's, and the input checks raise torch's errors; only the
computation is ours. One difference by design: a call that raises leaves the module's state
as it was (torch counts the batch in ``num_batches_tracked`` before computing it).

The forwards trace with ``torch.fx.symbolic_trace`` (our modules, unlike torch.nn's, are not
leaves of it): what depends on the input's shape or on a buffer's value happens inside fx
leaves (the functionals and the small checks here), so a traced graph computes, checks and
updates the running statistics and ``num_batches_tracked`` as the module does.
"""

import inspect
import warnings
from typing import Optional, Tuple

import torch
import torch.distributed as dist
from torch import Tensor

from .._fx import leaf, traced_attr
from ..functional import norm as F

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm", "GroupNorm", "LayerNorm",
           "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d"]

ops = torch.ops.cnn_ops


@leaf
def _check_input_dim(input: Tensor, dims: Tuple[int, ...]) -> Tensor:
    """``input``, once its number of dimensions is one of ``dims``; otherwise the ValueError
    of torch's ``_check_input_dim``. A leaf of fx tracing that passes its input on, so that a
    traced graph checks the input before the layer computes, as the module does."""
    if input.dim() not in dims:
        raise ValueError(f"expected {' or '.join(f'{d}D' for d in dims)} input (got {input.dim()}D input)")
    return input


@leaf
@leaf
def _counted_batch_norm(input: Tensor, num_batches_tracked: Tensor, running_mean: Tensor, running_var: Tensor,
                        weight: Optional[Tensor], bias: Optional[Tensor], momentum: Optional[float],
                        eps: float) -> Tensor:
    """Training batch norm with running statistics, counting the batch first as torch's layers
    do (``momentum=None``: the running statistics become the plain average of the batches,
    ``1 / num_batches_tracked``), and taking the count back when the normalisation fails, so that
    a failed call changes nothing. Under torch.func transforms, where the buffers are captured,
    the count is the in-place update that raises, before the statistics move, as in torch's.
    One fx leaf, so that a traced graph counts and normalises as the module does (and its
    output keeps the count from dead-code elimination)."""
    num_batches_tracked.add_(1)
    try:
        factor = 1.0 / float(num_batches_tracked) if momentum is None else momentum
        return F.batch_norm(input, running_mean, running_var, weight, bias, True, factor, eps)
    except Exception:
        num_batches_tracked.sub_(1)
        raise


@leaf
def _check_sync_batch_norm_input(input: Tensor) -> Tensor:
    """``input``, once it has at least 2 dimensions and a channel; otherwise the ValueErrors of
    torch.nn.SyncBatchNorm's input checks. A leaf of fx tracing that passes its input on."""
    if input.dim() < 2:
        raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")
    if input.size(1) == 0:
        raise ValueError("SyncBatchNorm number of input channels should be non-zero")
    return input


class _BatchNormForward:
    """The forward of torch's ``_BatchNorm`` on our ops, counting the batch first (as torch's) and
    taking the count back when the call fails.

    It traces with torch.fx: every test on the input runs inside the leaves above or in
    ``F.batch_norm``, and the batch count is read and moved through a Proxy of the buffer, so a
    traced graph updates ``num_batches_tracked`` and the running statistics as the module does.
    """

    _input_dims: Tuple[int, ...]

    def _counts(self) -> bool:
        """Whether this call counts the batch and moves the running statistics."""
        return self.training and self.track_running_stats and self.num_batches_tracked is not None

    def _plain_batch_norm(self, input: Tensor) -> Tensor:
        """Batch norm that counts nothing: eval mode, or no running statistics to move."""
        # Buffers and parameters are read once each: every read goes through Module.__getattr__.
        running_mean, running_var, training = self.running_mean, self.running_var, self.training
        use_batch_stats = training or (running_mean is None and running_var is None)
        track = not training or self.track_running_stats
        momentum = self.momentum
        return F.batch_norm(input, running_mean if track else None, running_var if track else None,
                            self.weight, self.bias, use_batch_stats, 0.0 if momentum is None else momentum, self.eps)

    def forward(self, input: Tensor) -> Tensor:
        return self._normalize(_check_input_dim(input, self._input_dims))

    def _normalize(self, input: Tensor) -> Tensor:
        if not self._counts():
            return self._plain_batch_norm(input)
        return _counted_batch_norm(input, traced_attr(self, "num_batches_tracked", input), self.running_mean,
                                   self.running_var, self.weight, self.bias, self.momentum, self.eps)


class BatchNorm1d(_BatchNormForward, torch.nn.BatchNorm1d):
    """Batch normalization over a ``(N, C)`` or ``(N, C, L)`` input; arguments of
    ``torch.nn.BatchNorm1d``.

    Example::

        >>> bn = BatchNorm1d(16)
        >>> bn(torch.randn(32, 16, 10)).shape
        torch.Size([32, 16, 10])
    """

    _input_dims = (2, 3)


class BatchNorm2d(_BatchNormForward, torch.nn.BatchNorm2d):
    """Batch normalization over an ``(N, C, H, W)`` input (NCHW or channels_last); arguments of
    ``torch.nn.BatchNorm2d``.

    Example::

        >>> bn = BatchNorm2d(16)
        >>> bn(torch.randn(8, 16, 32, 32)).shape
        torch.Size([8, 16, 32, 32])
    """

    _input_dims = (4,)


class BatchNorm3d(_BatchNormForward, torch.nn.BatchNorm3d):
    """Batch normalization over an ``(N, C, D, H, W)`` input; arguments of ``torch.nn.BatchNorm3d``.

    Example::

        >>> BatchNorm3d(4)(torch.randn(2, 4, 3, 8, 8)).shape
        torch.Size([2, 4, 3, 8, 8])
    """

    _input_dims = (5,)


class _SyncBatchNormFunction(torch.autograd.Function):
    """Batch norm whose statistics span every process of `group`: each process contributes
    (count, mean, biased variance) per channel, combined exactly; in backward the per-channel
    sums of grad_output and grad_output * (x - mean) are all-reduced, so that W processes
    compute what one process would on the W-times larger batch. The weight and bias
    gradients stay per process (DistributedDataParallel sums them), as in torch's."""

    @staticmethod
    def forward(ctx, input, weight, bias, running_mean, running_var, eps, momentum, group, world_size):
        c = input.shape[1]
        mean, var = ops.batch_norm_stats(input)
        count = torch.full((1,), float(F._values_per_channel(input)), dtype=mean.dtype, device=mean.device)
        packed = torch.cat([count, mean, var])
        gathered = [torch.empty_like(packed) for _ in range(world_size)]
        dist.all_gather(gathered, packed, group=group)
        stats = torch.stack(gathered)  # (world, 1 + 2C)
        counts, means, variances = stats[:, :1], stats[:, 1:1 + c], stats[:, 1 + c:]
        total = counts.sum()
        if int(total.item()) == 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {input.size()}")
        mean = (counts * means).sum(0) / total
        var = (counts * (variances + (means - mean).square())).sum(0) / total
        invstd = torch.rsqrt(var + eps)
        out = ops.batch_norm_elemt(input, weight, bias, mean, invstd)
        if running_mean is not None:
            ops.batch_norm_update_stats(running_mean, running_var, mean, var, int(total.item()), float(momentum))
        ctx.save_for_backward(input, weight, mean, invstd)
        ctx.total, ctx.group = int(total.item()), group
        ctx.bias_dtype = None if bias is None else bias.dtype
        return out

    @staticmethod
    def backward(ctx, grad_output):
        input, weight, mean, invstd = ctx.saved_tensors
        sum_dy, sum_dy_xmu = ops.batch_norm_backward_reduce(grad_output, input, mean)
        grad_weight = (sum_dy_xmu * invstd).to(weight.dtype) if weight is not None and ctx.needs_input_grad[1] \
            else None
        grad_bias = sum_dy.to(ctx.bias_dtype) if ctx.needs_input_grad[2] else None
        grad_input = None
        if ctx.needs_input_grad[0]:
            sums = torch.cat([sum_dy, sum_dy_xmu])
            dist.all_reduce(sums, group=ctx.group)
            c = sum_dy.numel()
            grad_input = ops.batch_norm_backward_elemt(grad_output, input, mean, invstd, weight, sums[:c], sums[c:],
                                                       ctx.total)
        return grad_input, grad_weight, grad_bias, None, None, None, None, None, None


# torch 2.13 gave its batch norms a `bias` argument (False: an affine layer without bias);
# torch 2.11 and 2.12 have none.
_BATCH_NORM_HAS_BIAS_ARG = "bias" in inspect.signature(torch.nn.modules.batchnorm._BatchNorm.__init__).parameters


class SyncBatchNorm(_BatchNormForward, torch.nn.modules.batchnorm._BatchNorm):
    """Batch normalization whose batch statistics span the processes of ``process_group``
    (all of them by default) when ``torch.distributed`` is initialised and the module trains;
    otherwise exactly ``BatchNorm``. Constructor, parameters and buffers of
    ``torch.nn.SyncBatchNorm``, but it runs on every backend ``torch.distributed`` offers,
    gloo on CPUs included (torch's is GPU-only), also inside ``DistributedDataParallel``.
    (It derives from torch's ``_BatchNorm`` rather than ``torch.nn.SyncBatchNorm`` because
    DistributedDataParallel refuses CPU modules holding the latter.) ``torch.fx.symbolic_trace``
    traces it where it computes as BatchNorm (no process group of several processes, or eval
    mode); the cross-process path does not trace, as a process group cannot be a graph value.

    Example (each of W processes, after ``dist.init_process_group``)::

        >>> model = SyncBatchNorm.convert_sync_batchnorm(model)
        >>> loss = model(local_batch).sum(); loss.backward()   # statistics of all W batches
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum=0.1, affine: bool = True,
                 track_running_stats: bool = True, process_group=None, device=None, dtype=None, *,
                 bias: bool = True) -> None:
        if _BATCH_NORM_HAS_BIAS_ARG:
            extra = {"bias": bias}
        elif not bias:
            raise TypeError(f"SyncBatchNorm(bias=False) needs torch 2.13 or newer (torch {torch.__version__}'s "
                            "batch norms have no bias argument)")
        else:
            extra = {}
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype,
                         **extra)
        self.process_group = process_group

    def forward(self, input: Tensor) -> Tensor:
        input = _check_sync_batch_norm_input(input)
        group = self.process_group if self.process_group is not None else (
            dist.group.WORLD if dist.is_available() and dist.is_initialized() else None)
        world_size = dist.get_world_size(group) if group is not None else 1
        if not (self.training and world_size > 1):
            return self._normalize(input)
        # Statistics across processes (not traceable: a process group is no graph value).
        counts = self._counts()
        running_mean, running_var = (self.running_mean, self.running_var) if counts else (None, None)
        if counts:
            self.num_batches_tracked.add_(1)
        try:
            factor = (1.0 / float(self.num_batches_tracked) if counts else 0.0) if self.momentum is None \
                else self.momentum
            return _SyncBatchNormFunction.apply(input, self.weight, self.bias, running_mean, running_var, self.eps,
                                                factor, group, world_size)
        except Exception:
            if counts:
                self.num_batches_tracked.sub_(1)
            raise

    @classmethod
    def convert_sync_batchnorm(cls, module, process_group=None):
        """``module`` with every BatchNorm*D layer (torch's or ours) replaced by this
        SyncBatchNorm sharing its parameters and buffers."""
        output = module
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(module, cls):
            output = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats,
                         process_group, **({"bias": False} if module.affine and module.bias is None else {}))
            if module.affine:
                with torch.no_grad():
                    output.weight = module.weight
                    output.bias = module.bias
            output.running_mean = module.running_mean
            output.running_var = module.running_var
            output.num_batches_tracked = module.num_batches_tracked
            output.training = module.training
        for name, child in module.named_children():
            output.add_module(name, cls.convert_sync_batchnorm(child, process_group))
        return output


class GroupNorm(torch.nn.GroupNorm):
    """Group normalization; arguments of ``torch.nn.GroupNorm(num_groups, num_channels, eps, affine)``.

    Example::

        >>> GroupNorm(4, 16)(torch.randn(2, 16, 8, 8)).shape
        torch.Size([2, 16, 8, 8])
    """

    def forward(self, input: Tensor) -> Tensor:
        return F.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)


class LayerNorm(torch.nn.LayerNorm):
    """Layer normalization over the trailing ``normalized_shape``; arguments of ``torch.nn.LayerNorm``.

    Example::

        >>> LayerNorm([16, 8, 8])(torch.randn(2, 16, 8, 8)).shape
        torch.Size([2, 16, 8, 8])
    """

    def forward(self, input: Tensor) -> Tensor:
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)


@leaf
def _instance_norm_input(input: Tensor, no_batch_dim: int, num_features: int, affine: bool) -> Tensor:
    """``input`` with a batch dimension, after the checks of torch's ``_InstanceNorm.forward``:
    ``no_batch_dim`` dimensions (unbatched: a batch of one is put in front) or one more, and
    ``num_features`` channels (a ValueError when ``affine``, a warning otherwise). A leaf of fx
    tracing, so that a traced graph checks and handles unbatched inputs as the module does."""
    if input.dim() not in (no_batch_dim, no_batch_dim + 1):
        raise ValueError(f"expected {no_batch_dim}D or {no_batch_dim + 1}D input (got {input.dim()}D input)")
    feature_dim = input.dim() - no_batch_dim
    if input.size(feature_dim) != num_features:
        if affine:
            raise ValueError(f"expected input's size at dim={feature_dim} to match num_features"
                             f" ({num_features}), but got: {input.size(feature_dim)}.")
        warnings.warn(f"input's size at dim={feature_dim} does not match num_features. You can silence this "
                      "warning by not passing in num_features, which is not used because affine=False",
                      stacklevel=3)
    return input.unsqueeze(0) if input.dim() == no_batch_dim else input


@leaf
def _instance_norm_output(output: Tensor, input: Tensor, no_batch_dim: int) -> Tensor:
    """``output`` without the batch dimension that ``_instance_norm_input`` put in front of an
    unbatched ``input``. A leaf of fx tracing."""
    return output.squeeze(0) if input.dim() == no_batch_dim else output


class _InstanceNormForward:
    """torch's ``_InstanceNorm.forward`` on our functional, tracing with torch.fx: the tests on
    the input run inside the leaves above and ``F.instance_norm``."""

    def forward(self, input: Tensor) -> Tensor:
        no_batch_dim = self._get_no_batch_dim()
        batched = _instance_norm_input(input, no_batch_dim, self.num_features, self.affine)
        return _instance_norm_output(self._apply_instance_norm(batched), input, no_batch_dim)

    def _apply_instance_norm(self, input: Tensor) -> Tensor:
        return F.instance_norm(input, self.running_mean, self.running_var, self.weight, self.bias,
                               self.training or not self.track_running_stats,
                               self.momentum if self.momentum is not None else 0.0, self.eps)


class InstanceNorm1d(_InstanceNormForward, torch.nn.InstanceNorm1d):
    """Instance normalization of ``(N, C, L)`` or unbatched ``(C, L)`` inputs; arguments of
    ``torch.nn.InstanceNorm1d``.

    Example::

        >>> InstanceNorm1d(3)(torch.randn(2, 3, 10)).shape
        torch.Size([2, 3, 10])
    """


class InstanceNorm2d(_InstanceNormForward, torch.nn.InstanceNorm2d):
    """Instance normalization of ``(N, C, H, W)`` or unbatched ``(C, H, W)`` inputs; arguments of
    ``torch.nn.InstanceNorm2d``.

    Example::

        >>> InstanceNorm2d(3, affine=True)(torch.randn(2, 3, 8, 8)).shape
        torch.Size([2, 3, 8, 8])
    """


class InstanceNorm3d(_InstanceNormForward, torch.nn.InstanceNorm3d):
    """Instance normalization of ``(N, C, D, H, W)`` or unbatched ``(C, D, H, W)`` inputs; arguments
    of ``torch.nn.InstanceNorm3d``.

    Example::

        >>> InstanceNorm3d(3)(torch.randn(2, 3, 4, 8, 8)).shape
        torch.Size([2, 3, 4, 8, 8])
    """
