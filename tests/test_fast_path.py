"""Layer and RMS norm's fast path for plain arrays computes exactly what the general path does."""

import numpy as np
import pytest

import numbanorm as nbn
from numbanorm._driver import _trailing_rows_forward
from numbanorm._specs import LAYER_NORM, RMS_NORM


def _params(rng, norm, dtype, affine, count):
    if not affine:
        return ()
    weight = (1 + rng.standard_normal(count)).astype(dtype)
    return (weight,) if norm == "rms_norm" else (weight, rng.standard_normal(count).astype(dtype))


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("norm", ["layer_norm", "rms_norm"])
def test_fast_path_matches_the_general_path(rng, norm, dtype, affine):
    x = rng.standard_normal((6, 5, 40)).astype(dtype)
    params = _params(rng, norm, dtype, affine, 40)
    weight, bias = (params + (None, None))[:2]
    spec = LAYER_NORM if norm == "layer_norm" else RMS_NORM
    eps = spec.default_eps
    assert _trailing_rows_forward(spec, x, weight, bias, -1, eps, None, True) is not None
    read_only = x.copy()
    read_only.setflags(write=False)  # not eligible: takes the general path
    assert _trailing_rows_forward(spec, read_only, weight, bias, -1, eps, None, True) is None
    fast = getattr(nbn, f"{norm}_forward")(x, *params)
    general = getattr(nbn, f"{norm}_forward")(read_only, *params)
    for a, b in zip(fast, general):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    out = np.empty_like(x)
    assert getattr(nbn, norm)(x, *params, out=out) is out
    np.testing.assert_array_equal(out, general[0])


INELIGIBLE = {
    "float16": lambda x: dict(x=x.astype(np.float16)),
    "integers": lambda x: dict(x=x.astype(np.int64)),
    "strided": lambda x: dict(x=x[:, ::2]),
    "Fortran order": lambda x: dict(x=np.asfortranarray(x)),
    "leading axis": lambda x: dict(axis=0),
    "axis tuple": lambda x: dict(axis=(1,)),
    "float64 weight": lambda x: dict(weight=np.ones(x.shape[-1])),
    "list weight": lambda x: dict(weight=[1.0] * x.shape[-1]),
    "Fortran out": lambda x: dict(out=np.asfortranarray(np.empty_like(x))),
    "integer eps": lambda x: dict(eps=0),
    "negative eps": lambda x: dict(eps=-1.0),
    "empty": lambda x: dict(x=x[:0]),
}


@pytest.mark.parametrize("case", INELIGIBLE)
def test_anything_else_takes_the_general_path(rng, case):
    x = rng.standard_normal((4, 40)).astype(np.float32)
    args = dict(x=x, weight=None, bias=None, axis=-1, eps=1e-5, out=None)
    args.update(INELIGIBLE[case](x))
    assert _trailing_rows_forward(LAYER_NORM, **args, stats=True) is None
