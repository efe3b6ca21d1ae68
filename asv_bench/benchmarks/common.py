"""The shared shape of every norm benchmark.

A benchmark is parameterized by the implementation (numbanorm or a peer, so
that ``asv run`` shows them side by side), the dtype, the case (shape and
layout) and the direction.  ``setup`` builds seeded data and runs the call
once, so that JIT compilation never counts; an implementation that is not
importable or has no such operation raises ``NotImplementedError``, which asv
reports as skipped.
"""

import abc

from .peers import DIRECTIONS, IMPLEMENTATIONS, Case, build, cases

DTYPES = ("float32", "float64")


class NormBenchmark(abc.ABC):
    """Forward (allocating), forward with ``out=`` and backward of one norm.

    Abstract, so that asv collects only the subclasses, which name their norm.
    """

    directions = DIRECTIONS
    timeout = 300
    param_names = ["impl", "dtype", "case", "direction"]

    @property
    @abc.abstractmethod
    def norm(self):
        """The function name in numbanorm."""

    def __init_subclass__(cls):
        super().__init_subclass__()
        cls.cases = cases(cls.norm)
        cls.params = [list(IMPLEMENTATIONS), list(DTYPES), list(cls.cases), list(cls.directions)]

    def setup(self, impl, dtype, case, direction):
        self.call = build(impl, direction, self.cases[case], dtype)
        self.call()

    def time_call(self, impl, dtype, case, direction):
        self.call()

    def peakmem_call(self, impl, dtype, case, direction):
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
