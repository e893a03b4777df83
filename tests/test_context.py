"""Trace-time modes (keras_hebb._context): nesting, restoring, threads."""

import threading

import numpy as np
import pytest
import tensorflow as tf

from keras_hebb import _context
from keras_hebb.layers import FractionalThreshold

FLAGS = [_context.fast_selection, _context.without_native, _context.integer_threshold]


@pytest.mark.parametrize("enter", FLAGS, ids=lambda f: f.__name__)
def test_flag_modes_nest_and_restore_the_outer_value(enter):
    mode = enter.__name__
    assert not _context.current(mode)
    with enter():
        assert _context.current(mode)
        with enter():
            assert _context.current(mode)
        assert _context.current(mode)
    assert not _context.current(mode)


def test_scopes_restore_the_outer_scope_even_after_an_error():
    with _context.collect_hah_costs() as outer:
        with pytest.raises(RuntimeError):
            with _context.collect_hah_costs() as inner:
                assert _context.hah_cost_scope() is inner
                raise RuntimeError("inside")
        assert _context.hah_cost_scope() is outer
    assert _context.hah_cost_scope() is None


def test_modes_are_local_to_the_thread():
    seen = []
    with _context.surrogate_gradients("identity"), _context.collect_similarity_matching():
        thread = threading.Thread(target=lambda: seen.append(
            (_context.surrogate_scope(), _context.similarity_matching_scope())))
        thread.start()
        thread.join()
        assert _context.surrogate_scope().mode == "identity"
    assert seen == [(None, None)]


def test_surrogate_gradients_rejects_bad_settings_by_name():
    with pytest.raises(ValueError, match="Received: mode='soft'"):
        _context.surrogate_gradients("soft")
    with pytest.raises(ValueError, match="Received: temperature=0"):
        _context.surrogate_gradients(temperature=0)


def test_integer_threshold_is_read_when_the_graph_is_traced():
    layer = FractionalThreshold(0.25, nonnegative_inputs=True)
    x = tf.constant(np.random.default_rng(0).random((1, 4, 4, 2)), tf.float32)
    outside = tf.function(lambda v: layer(v, training=False))
    with _context.integer_threshold():
        inside = tf.function(lambda v: layer(v, training=False))
        inside_ops = {op.type for op in inside.get_concrete_function(x).graph.get_operations()}
    # Traced after the mode closed: the top_k graph.
    outside_ops = {op.type for op in outside.get_concrete_function(x).graph.get_operations()}
    assert "Bitcast" in inside_ops and "TopKV2" not in inside_ops
    assert "TopKV2" in outside_ops and "Bitcast" not in outside_ops
    np.testing.assert_array_equal(inside(x), outside(x))
