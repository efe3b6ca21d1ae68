"""Every norm as a specification: what it reduces, what it computes, what it takes.

A :class:`Norm` is data.  The generic driver (``_driver.py``) computes any
norm from its specification; the public functions (``_norms.py``), the
layers, the JAX wrappers, ``warmup``, the benchmarks and the tests' tables
are derived from the same objects.  A :class:`Layout` is a specification
applied to one input: the roles of its axes in the canonical ``(B, O, C,
I)`` view (see ``_layout.py``) and the shapes of the parameters and
statistics.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from ._arrays import axes_tuple, axis_index, check_rank, integer


@dataclasses.dataclass(frozen=True)
class Norm:
    """One normalization, as the driver and everything derived from it need it.

    Attributes
    ----------
    name : str
        The public function's name (``"batch_norm"``); ``name + "_forward"``
        and ``name + "_backward"`` are the others.
    per_channel : bool
        ``axis`` is the channel axis, and the statistics are per channel or
        group of channels (batch, instance, group norm).  Otherwise ``axis``
        names the normalized axes (layer and RMS norm).
    per_sample : bool
        The sample axis is kept: statistics per sample (instance, group norm).
    grouped : bool
        The channels are split into ``num_groups`` groups (group norm).
    centered : bool
        The mean is subtracted; RMS norm is not centered.
    bias : bool
        The affine transform has a bias as well as a weight.
    running_stats : bool
        The norm keeps running statistics and may normalize with them.
    mode_argument : str or None
        The public name of the switch between the input's statistics and the
        running ones (``"training"``, ``"use_input_stats"``), None if the
        statistics always come from the input.
    default_eps : float or None
        None means the machine epsilon of the result dtype.
    default_axis : int
        The public functions' default ``axis``.
    min_ndim : int
        The dimension the input needs.
    example_shape : tuple of int
        A typical float32 input, for ``warmup`` and the benchmarks.
    layer : str
        The name of the layer class.
    """

    name: str
    per_channel: bool
    per_sample: bool
    grouped: bool
    centered: bool
    bias: bool
    running_stats: bool
    mode_argument: str | None
    default_eps: float | None
    default_axis: int
    min_ndim: int
    example_shape: tuple[int, ...]
    layer: str

    @property
    def statistics(self) -> tuple[str, ...]:
        """The names of the statistics the forward returns and the backward takes."""
        return ("mean", "rstd") if self.centered else ("rrms",)

    @property
    def parameters(self) -> tuple[str, ...]:
        return ("weight", "bias") if self.bias else ("weight",)

    @property
    def gradients(self) -> tuple[str, ...]:
        """What the backward returns after ``dx``."""
        return tuple("d" + p for p in self.parameters)

    def forward_arguments(
        self,
        x: Any,
        weight: Any = None,
        bias: Any = None,
        *,
        num_groups: Any = None,
        running_mean: Any = None,
        running_var: Any = None,
    ) -> list[Any]:
        """The positional arguments of the public ``name`` and ``name + "_forward"``."""
        arguments = [x]
        if self.grouped:
            arguments.append(num_groups)
        if self.running_stats:
            arguments += [running_mean, running_var]
        arguments.append(weight)
        if self.bias:
            arguments.append(bias)
        return arguments

    def backward_arguments(
        self, dy: Any, x: Any, stats: tuple[Any, ...], weight: Any = None, *, num_groups: Any = None
    ) -> list[Any]:
        """The positional arguments of the public ``name + "_backward"``."""
        return [dy, x, *([num_groups] if self.grouped else []), *stats, weight]

    def layout(
        self, shape: tuple[int, ...], axis: Any, num_groups: Any = None, *, what: str | None = None
    ) -> Layout:
        """The axis roles of an input of ``shape`` (``what`` names the caller in errors)."""
        check_rank(shape, self.min_ndim, what or self.name)
        if self.per_channel:
            return ChannelLayout(
                shape,
                axis,
                per_sample=self.per_sample,
                num_groups=integer(num_groups, "num_groups") if self.grouped else None,
            )
        return NormalizedLayout(shape, axis)

    def check_statistics(self, layout: Layout, input_stats: bool, has_running_stats: bool) -> None:
        """Refuse a forward whose statistics cannot be had.

        An empty group has none; a training group of one element has no
        variance (PyTorch refuses it too); evaluation needs the running
        statistics.
        """
        if self.grouped and layout.count == 0:
            raise ValueError(f"cannot normalize over an empty set: input of shape {layout.shape}")
        if not (self.running_stats and isinstance(layout, ChannelLayout)):
            return
        if input_stats:
            layout.check_training(self.per_sample)
        elif not has_running_stats:
            raise ValueError(
                f"{self.name} without input statistics needs running_mean and running_var"
            )


class Layout:
    """A norm's view of one input: axis roles, parameter and statistics shapes.

    Attributes
    ----------
    shape : tuple of int
        The input's shape.
    split_shape : tuple of int
        The shape the input is reshaped to (group norm splits its channel axis).
    roles : str
        One role per axis of ``split_shape`` (see ``_layout.py``).
    weight_shape : tuple of int
        The shape of the affine parameters and their gradients.
    stat_axes : list of int
        The axes of ``split_shape`` that the statistics keep, in order.
    stat_shape : tuple of int
        The public shape of the statistics.
    count : int
        The number of elements in a group.
    param_shape2 : tuple of int
        The kernels' ``(C, W)`` shape of the parameters.
    """

    shape: tuple[int, ...]
    split_shape: tuple[int, ...]
    roles: str
    weight_shape: tuple[int, ...]
    stat_axes: list[int]
    stat_shape: tuple[int, ...]
    count: int
    param_shape2: tuple[int, int]


class ChannelLayout(Layout):
    """Axis roles of batch, instance and group norm.

    ``x`` is viewed with its channel axis split into ``(groups, channels per
    group)``; batch and instance norm have one channel per group.  Statistics
    are per group (batch norm) or per (sample, group) (``per_sample``).
    """

    def __init__(self, shape, axis, *, per_sample, num_groups=None):
        self.shape = shape
        self.axis = axis_index(axis, len(shape))
        self.channels = shape[self.axis]
        if num_groups is None:
            num_groups = self.channels
        elif num_groups < 1 or self.channels % num_groups:
            raise ValueError(
                f"num_groups must be a positive integer dividing the number of channels "
                f"({self.channels}), got {num_groups!r}"
            )
        self.groups = int(num_groups)
        self.per_group = self.channels // self.groups if self.groups else 1
        self.sample = (1 if self.axis == 0 else 0) if per_sample else None
        reduced = [a for a in range(len(shape)) if a not in (self.axis, self.sample)]
        self.spatial = math.prod(shape[a] for a in reduced)
        self.count = self.spatial * self.per_group
        self.n_samples = shape[self.sample] if per_sample else 1
        self.split_shape = (
            shape[: self.axis] + (self.groups, self.per_group) + shape[self.axis + 1 :]
        )
        roles = ["R"] * len(self.split_shape)
        roles[self.axis] = "C"
        roles[self.axis + 1] = "W"
        self.stat_axes = [self.axis]
        if per_sample:
            split_sample = self.sample + (self.sample > self.axis)
            roles[split_sample] = "S"
            self.stat_axes.insert(0, split_sample)
        self.roles = "".join(roles)
        self.weight_shape = (self.channels,)
        self.stat_shape = (self.n_samples,) * per_sample + (self.groups,)
        self.param_shape2 = (self.groups, self.per_group)

    def check_training(self, per_sample: bool, selected: bool = False) -> None:
        """Refuse to compute statistics from one element per group, as PyTorch does.

        With ``selected`` the caller found a channel with too few elements
        selected by a mask, whatever the shape.
        """
        if per_sample and (selected or self.spatial <= 1):
            raise ValueError(
                f"Expected more than 1 spatial element when training, got input size {self.shape}"
                + (" with fewer than 2 selected in every instance of a channel" * selected)
            )
        if not per_sample and (selected or self.count <= 1):
            raise ValueError(
                f"Expected more than 1 value per channel when training, got input size {self.shape}"
                + (" with fewer than 2 selected in a channel" * selected)
            )


class NormalizedLayout(Layout):
    """Axis roles of layer and RMS norm: ``axis`` is normalized together."""

    def __init__(self, shape, axis):
        self.shape = shape
        self.split_shape = shape
        self.axes = axes_tuple(axis, len(shape))
        self.roles = "".join("W" if a in self.axes else "S" for a in range(len(shape)))
        self.weight_shape = tuple(shape[a] for a in self.axes)
        self.count = math.prod(self.weight_shape)
        if self.count == 0:
            raise ValueError(
                f"cannot normalize over an empty set: axis {axis!r} of an array of shape {shape}"
            )
        self.stat_axes = [a for a in range(len(shape)) if a not in self.axes]
        self.stat_shape = tuple(shape[a] for a in self.stat_axes)
        self.param_shape2 = (1, self.count)


BATCH_NORM = Norm(
    "batch_norm",
    per_channel=True,
    per_sample=False,
    grouped=False,
    centered=True,
    bias=True,
    running_stats=True,
    mode_argument="training",
    default_eps=1e-5,
    default_axis=1,
    min_ndim=2,
    example_shape=(32, 64, 28, 28),
    layer="BatchNorm",
)
INSTANCE_NORM = Norm(
    "instance_norm",
    per_channel=True,
    per_sample=True,
    grouped=False,
    centered=True,
    bias=True,
    running_stats=True,
    mode_argument="use_input_stats",
    default_eps=1e-5,
    default_axis=1,
    min_ndim=3,
    example_shape=(8, 64, 28, 28),
    layer="InstanceNorm",
)
GROUP_NORM = Norm(
    "group_norm",
    per_channel=True,
    per_sample=True,
    grouped=True,
    centered=True,
    bias=True,
    running_stats=False,
    mode_argument=None,
    default_eps=1e-5,
    default_axis=1,
    min_ndim=2,
    example_shape=(8, 64, 28, 28),
    layer="GroupNorm",
)
LAYER_NORM = Norm(
    "layer_norm",
    per_channel=False,
    per_sample=True,
    grouped=False,
    centered=True,
    bias=True,
    running_stats=False,
    mode_argument=None,
    default_eps=1e-5,
    default_axis=-1,
    min_ndim=1,
    example_shape=(256, 1024),
    layer="LayerNorm",
)
RMS_NORM = Norm(
    "rms_norm",
    per_channel=False,
    per_sample=True,
    grouped=False,
    centered=False,
    bias=False,
    running_stats=False,
    mode_argument=None,
    default_eps=None,
    default_axis=-1,
    min_ndim=1,
    example_shape=(256, 1024),
    layer="RMSNorm",
)

NORMS: tuple[Norm, ...] = (BATCH_NORM, INSTANCE_NORM, GROUP_NORM, LAYER_NORM, RMS_NORM)
