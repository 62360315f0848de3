"""Checkpointer: exact round trip (params, adamw state, typed PRNG key, step, meta), keep-N, restore onto a sharding,
an interrupted save ignored on resume."""
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from etils import epath
from jax.sharding import NamedSharding, PartitionSpec as P

from paw_jax import sharding
from paw_jax.checkpoint import Checkpointer

META = {"task_cursor": 17, "params_version": 3, "config": {"lr": 1e-3, "algo": "paw", "mesh": [2, 1, 1]}}


def make_state(seed: int = 0) -> dict:
  """A train state after one adamw update, so every optimizer leaf holds a non-trivial value."""
  rng = np.random.RandomState(seed)
  params = {"w": jnp.asarray(rng.randn(4, 3), jnp.float32), "b": jnp.asarray(rng.randn(3), jnp.bfloat16)}
  optimizer = optax.adamw(1e-2)
  grads = jax.tree.map(lambda p: jnp.ones_like(p) * 0.5, params)
  updates, opt_state = optimizer.update(grads, optimizer.init(params), params)
  return {"params": optax.apply_updates(params, updates), "opt_state": opt_state,
          "rng": jax.random.split(jax.random.key(seed))[1], "step": jnp.int32(seed + 1)}


def to_numpy(state: dict) -> dict:
  """Host copies (typed keys as their key data) for exact comparison."""
  return jax.tree.map(lambda x: np.asarray(jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key)
                                           else x), state)


def assert_trees_equal(actual: dict, expected: dict) -> None:
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for a, e in zip(jax.tree.leaves(to_numpy(actual)), jax.tree.leaves(expected)):
    assert a.dtype == e.dtype
    np.testing.assert_array_equal(a, e)


def test_round_trip_is_exact_and_buffers_may_be_donated_after_save(tmp_path):
  state = make_state()
  expected = to_numpy(state)
  abstract = jax.eval_shape(lambda: state)
  ckpt = Checkpointer(tmp_path)
  assert ckpt.latest_step() is None
  assert ckpt.save(5, state, META)
  for leaf in jax.tree.leaves(state):  # what a donating train step does while the async write goes on
    leaf.delete()
  ckpt.close()

  resumed = Checkpointer(tmp_path)  # a fresh process
  assert resumed.latest_step() == 5
  restored, meta = resumed.restore(abstract)
  assert_trees_equal(restored, expected)
  assert meta == META
  assert isinstance(restored["opt_state"][0], optax.ScaleByAdamState)
  assert jnp.issubdtype(restored["rng"].dtype, jax.dtypes.prng_key)
  np.testing.assert_array_equal(jax.random.normal(restored["rng"], (3,)),
                                jax.random.normal(make_state()["rng"], (3,)))
  resumed.close()


def test_keep_n_and_save_every(tmp_path):
  with Checkpointer(tmp_path, keep=2, save_every=2) as ckpt:
    saved = [ckpt.save(step, make_state(step), {"step": step}) for step in range(7)]
    assert saved == [True, False, True, False, True, False, True]
    assert ckpt.save(7, make_state(7), {"step": 7}, force=True)
    assert not ckpt.save(7, make_state(8), {"step": 8}, force=True)  # a saved step is never overwritten
    ckpt.wait()
    assert ckpt.all_steps() == [6, 7]
    assert sorted(p.name for p in ckpt.directory.iterdir() if p.name.isdigit()) == ["6", "7"]
    state, meta = ckpt.restore(jax.eval_shape(lambda: make_state()), step=6)
    assert meta == {"step": 6}
    assert_trees_equal(state, to_numpy(make_state(6)))


def test_restore_places_arrays_on_the_abstract_shardings(tmp_path):
  mesh = sharding.make_mesh(data=2, devices=jax.devices()[:2])
  state = make_state()
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(1, state, META)
  row_sharded = NamedSharding(mesh, P("data", None))
  replicated = NamedSharding(mesh, P())

  def target(path, leaf):
    spec = row_sharded if leaf.ndim == 2 and leaf.shape[0] % 2 == 0 else replicated
    return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=spec)

  abstract = jax.tree_util.tree_map_with_path(target, jax.eval_shape(lambda: state))
  with Checkpointer(tmp_path) as ckpt:
    restored, _ = ckpt.restore(abstract)
  w = restored["params"]["w"]
  assert w.sharding == row_sharded
  assert [s.data.shape for s in w.addressable_shards] == [(2, 3), (2, 3)]
  assert restored["opt_state"][0].mu["w"].sharding == row_sharded
  assert restored["rng"].sharding == replicated and restored["step"].sharding == replicated
  assert_trees_equal(restored, to_numpy(state))


def test_interrupted_save_is_ignored_on_resume(tmp_path):
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(1, make_state(1), {"step": 1})
    ckpt.save(2, make_state(2), {"step": 2})
  # A save of step 3 killed mid-write: orbax's temporary directory with part of the files.
  partial = ckpt.directory / "3.orbax-checkpoint-tmp-1712345678901234"
  shutil.copytree(ckpt.directory / "2", partial)
  shutil.rmtree(partial / "state" / "d")
  (partial / "meta" / "metadata").unlink()

  with Checkpointer(tmp_path) as resumed:
    assert resumed.latest_step() == 2
    state, meta = resumed.restore(jax.eval_shape(lambda: make_state()))
    assert meta == {"step": 2}
    assert_trees_equal(state, to_numpy(make_state(2)))
    assert resumed.save(3, make_state(3), {"step": 3})  # the re-run step saves over the leftover
    resumed.wait()
    assert resumed.all_steps() == [1, 2, 3]
    assert not partial.exists()
    assert resumed.restore(jax.eval_shape(lambda: make_state()))[1] == {"step": 3}


def test_bad_input_is_named(tmp_path):
  with Checkpointer(tmp_path) as ckpt:
    with pytest.raises(FileNotFoundError, match="no checkpoint for step None"):
      ckpt.restore(jax.eval_shape(lambda: make_state()))
    with pytest.raises(TypeError, match="meta must be JSON-serializable"):
      ckpt.save(1, make_state(), {"cursor": object()})
    ckpt.save(1, make_state(), META)
    ckpt.wait()
    with_critic = {**make_state(), "critic": {"v": jnp.zeros(2)}}
    with pytest.raises(ValueError, match=r"missing on disk \['critic/v'\]"):
      ckpt.restore(jax.eval_shape(lambda: with_critic))
  with pytest.raises(ValueError, match="keep and save_every must be >= 1"):
    Checkpointer(tmp_path, keep=0)



def test_an_epath_workdir_round_trips(tmp_path):
  state = {"w": jnp.arange(4.0)}
  with Checkpointer(epath.Path(tmp_path) / "run") as ckpt:
    ckpt.save(1, state, {"next_update": 1}, force=True)
    ckpt.wait()
  with Checkpointer(str(tmp_path / "run")) as resumed:
    restored, meta = resumed.restore(state)
  np.testing.assert_array_equal(restored["w"], state["w"])
  assert meta == {"next_update": 1}
