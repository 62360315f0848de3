"""multihost: each process's share of the groups, global arrays fetched and placed, explicit restore targets (the
several-process behaviour runs for real in tests/test_distributed.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from paw_jax import multihost, sharding


@pytest.mark.parametrize("items, count", [(8, 2), (7, 3), (2, 4), (0, 2)])
def test_process_shares_are_contiguous_blocks_that_cover_every_item_once(items, count):
  shares = [multihost.process_share(list(range(items)), count, p) for p in range(count)]
  assert [i for _, block in shares for i in block] == list(range(items))
  assert [first for first, _ in shares] == [items * p // count for p in range(count)]
  assert max(len(b) for _, b in shares) - min(len(b) for _, b in shares) <= 1


def test_one_process_takes_everything_and_gathers_its_own_value():
  assert multihost.process_share(["a", "b"]) == (0, ["a", "b"])
  assert multihost.gather_objects({"x": 1}) == [{"x": 1}]
  assert multihost.is_main() and not multihost.is_multiprocess()


def test_counters_are_replicated_on_the_params_mesh_and_restore_targets_keep_shardings():
  mesh = sharding.make_mesh(data=1, fsdp=-1)
  weight = jax.device_put(np.arange(16.0).reshape(8, 2), NamedSharding(mesh, PartitionSpec("fsdp")))
  tree = {"w": weight, "step": jnp.zeros((), jnp.int32)}
  assert multihost.mesh_of(tree) is mesh
  placed = multihost.replicate_unplaced(tree, mesh)
  assert placed["w"] is weight
  assert placed["step"].sharding == NamedSharding(mesh, PartitionSpec()) and int(placed["step"]) == 0
  target = multihost.abstract(placed)
  assert (target["w"].shape, target["w"].dtype, target["w"].sharding) == ((8, 2), weight.dtype, weight.sharding)
  np.testing.assert_array_equal(multihost.fetch(placed)["w"], np.arange(16.0).reshape(8, 2))
