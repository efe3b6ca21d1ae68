"""The tests' table of norms: one row per norm of ``numbanorm._specs.NORMS``.

A row holds what a test needs besides the specification: the arguments a
test passes that the specification leaves open.  :class:`NormCase` calls the
public functions of numbanorm, or the same-named functions of the float64
reference (``reference.py``), with the positional arguments the
specification gives.  A new norm needs its row here (collection fails
without it) and its reference functions.
"""

import dataclasses

import numbanorm as nbn
from numbanorm._specs import NORMS, Norm

# norm name -> arguments the tests pass: num_groups, and the reference's
# required eps for RMS norm.
ROWS = {
    "batch_norm": {},
    "instance_norm": {},
    "group_norm": {"num_groups": 3},
    "layer_norm": {},
    "rms_norm": {"eps": 1e-5},
}


@dataclasses.dataclass(frozen=True)
class NormCase:
    """One norm as the tests call it, with ``axis`` (None: the norm's default)."""

    norm: Norm
    num_groups: int | None = None
    eps: float | None = None
    axis: object = None

    @property
    def name(self):
        return self.norm.name

    def _options(self):
        options = {} if self.eps is None else {"eps": self.eps}
        if self.axis is not None:
            options["axis"] = self.axis
        return options

    def forward(self, x, weight=None, bias=None, *, module=nbn, **options):
        """``module``'s ``<name>_forward(x, ...)``: ``(y, *statistics)``."""
        function = getattr(module, self.name + "_forward")
        return function(
            *self.norm.forward_arguments(x, weight, bias, num_groups=self.num_groups),
            **self._options(),
            **options,
        )

    def plain(self, x, weight=None, bias=None, **options):
        """numbanorm's ``<name>(x, ...)``: ``y``."""
        function = getattr(nbn, self.name)
        return function(
            *self.norm.forward_arguments(x, weight, bias, num_groups=self.num_groups),
            **self._options(),
            **options,
        )

    def backward(self, dy, x, stats, weight=None, *, module=nbn, **options):
        """``module``'s ``<name>_backward``: ``(dx, dweight[, dbias])``."""
        function = getattr(module, self.name + "_backward")
        axis = {} if self.axis is None else {"axis": self.axis}
        return function(
            *self.norm.backward_arguments(dy, x, stats, weight, num_groups=self.num_groups),
            **axis,
            **options,
        )

    def with_axis(self, axis):
        return dataclasses.replace(self, axis=axis)


NORM_CASES = {norm.name: NormCase(norm, **ROWS[norm.name]) for norm in NORMS}
