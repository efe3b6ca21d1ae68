"""The shared shape of every norm benchmark.

A benchmark is parameterized by the implementation (numbanorm or a peer, so
that ``asv run`` shows them side by side), the dtype, the case (shape and
layout), the direction and the mask (``where``).  ``setup`` builds seeded
data and runs the call once, so that JIT compilation never counts; an
implementation that is not importable or has no such operation raises
``NotImplementedError``, which asv reports as skipped.

The masked calls, compared with the unmasked ones beside them, are timed
for numbanorm only (no peer has masked normalization), on the first case of
each norm in float32, forward and backward: enough to follow their cost
without tripling the suite.
"""

import abc

from .peers import DIRECTIONS, IMPLEMENTATIONS, WHERE, Case, build, cases

DTYPES = ("float32", "float64")
MASKED_DIRECTIONS = ("forward", "backward")


class NormBenchmark(abc.ABC):
    """Forward (allocating), forward with ``out=`` and backward of one norm.

    Abstract, so that asv collects only the subclasses, which name their norm.
    """

    directions = DIRECTIONS
    timeout = 300
    param_names = ["impl", "dtype", "case", "direction", "where"]

    @property
    @abc.abstractmethod
    def norm(self):
        """The function name in numbanorm."""

    def __init_subclass__(cls):
        super().__init_subclass__()
        cls.cases = cases(cls.norm)
        cls.params = [
            list(IMPLEMENTATIONS),
            list(DTYPES),
            list(cls.cases),
            list(cls.directions),
            list(WHERE),
        ]

    def setup(self, impl, dtype, case, direction, where):
        if where is not None and (
            dtype != "float32"
            or case != next(iter(self.cases))
            or direction not in MASKED_DIRECTIONS
        ):
            raise NotImplementedError(
                "masks are timed on the first case's float32 forward and backward"
            )
        self.call = build(impl, direction, self.cases[case], dtype, where=where)
        self.call()

    def time_call(self, impl, dtype, case, direction, where):
        self.call()

    def peakmem_call(self, impl, dtype, case, direction, where):
        self.call()


class SmallCallBenchmark(abc.ABC):
    """Per-call overhead: one small float32 input, as in a framework's loop.

    Abstract, so that asv collects only the subclasses, which name their case.
    """

    params = [list(IMPLEMENTATIONS), list(DIRECTIONS)]
    param_names = ["impl", "direction"]

    @property
    @abc.abstractmethod
    def case(self) -> Case:
        """The input."""

    def setup(self, impl, direction):
        self.call = build(impl, direction, self.case, "float32")
        self.call()

    def time_call(self, impl, direction):
        self.call()
