import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prerank_jax.reduce import safe_reduce


def test_sum_of_unreduced_equals_sum_reduction():
  v = jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
  where = jnp.array([[True, False, True], [False, False, True]])
  w = jnp.array([[2.0, 1.0, 1.0], [1.0, 1.0, 0.5]])
  none = safe_reduce(v, where=where, weights=w, reduce_fn=None)
  assert float(jnp.sum(none)) == pytest.approx(float(safe_reduce(v, where=where, weights=w,
                                                                 reduce_fn=jnp.sum)))
  assert float(jnp.sum(none)) == pytest.approx(2 + 3 + 3)


def test_mean_divides_by_count_not_weight_sum():
  v = jnp.array([1.0, 1.0, 100.0])
  where = jnp.array([True, True, False])
  out = safe_reduce(v, where=where, weights=jnp.array([2.0, 4.0, 1.0]))
  assert float(out) == pytest.approx((2 + 4) / 2)


def test_all_masked_is_zero_with_finite_gradient_even_over_nan():
  v = jnp.array([jnp.nan, jnp.inf, 1.0])
  where = jnp.zeros(3, bool)
  assert float(safe_reduce(v, where=where)) == 0.0
  grad = jax.grad(lambda x: safe_reduce(x * 2.0, where=where))(v)
  assert np.all(np.isfinite(grad))


def test_int_mask_is_rejected():
  with pytest.raises(TypeError, match="bool"):
    safe_reduce(jnp.ones(3), where=jnp.ones(3, jnp.int32))
