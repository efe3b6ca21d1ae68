"""CPU arrays of other libraries work as inputs, viewed without a copy; results are NumPy."""

import numpy as np
import pytest

import numbanorm as nbn
from numbanorm._arrays import host_array as _host_array


class DLPackOnly:
    """An array of a foreign library that offers nothing but DLPack."""

    def __init__(self, array):
        self._array = array

    def __dlpack__(self, **kwargs):
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()


def _torch(a):
    torch = pytest.importorskip("torch")
    return torch.from_numpy(a)


def _array_api_strict(a):
    xp = pytest.importorskip("array_api_strict")
    return xp.asarray(a)


FOREIGN = {
    "dlpack only": DLPackOnly,
    "buffer protocol": memoryview,
    "torch": _torch,
    "array_api_strict": _array_api_strict,
}


@pytest.mark.parametrize("kind", FOREIGN)
def test_forward_and_backward_of_foreign_arrays_match_numpy(rng, kind):
    wrap = FOREIGN[kind]
    x = rng.standard_normal((6, 4, 5)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    weight = (1 + rng.standard_normal(5)).astype(np.float32)
    expected = nbn.layer_norm_forward(x, weight)
    actual = nbn.layer_norm_forward(wrap(x), wrap(weight))
    for a, e in zip(actual, expected):
        assert type(a) is np.ndarray
        np.testing.assert_array_equal(a, e)
    grads = nbn.layer_norm_backward(wrap(dy), wrap(x), *expected[1:], wrap(weight))
    for a, e in zip(grads, nbn.layer_norm_backward(dy, x, *expected[1:], weight)):
        assert type(a) is np.ndarray
        np.testing.assert_array_equal(a, e)
    channels = nbn.batch_norm(wrap(x), axis=1)
    np.testing.assert_array_equal(channels, nbn.batch_norm(x, axis=1))
    np.testing.assert_array_equal(nbn.moments(wrap(x), axis=(0, 2)), nbn.moments(x, axis=(0, 2)))


@pytest.mark.parametrize("kind", ["dlpack only", "buffer protocol", "torch"])
def test_foreign_inputs_are_viewed_not_copied(kind):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert np.shares_memory(_host_array(FOREIGN[kind](x)), x)


def test_a_torch_tensor_that_requires_grad_is_refused_by_torch():
    torch = pytest.importorskip("torch")
    with pytest.raises(RuntimeError, match="requires grad"):
        nbn.layer_norm(torch.ones(2, 3, requires_grad=True))
