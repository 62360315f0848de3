"""What a run of several JAX processes needs beyond one: placing host values on the global mesh, fetching global
arrays, exchanging host objects, and each process's share of an update's groups.

Every process runs the same program. Jitted functions take global arrays (each process holds the shards of its own
devices); a host value every process holds in full (a batch, a counter) is placed with `jax.device_put`, and a
result that spans other processes' devices is gathered with `fetch`. Host objects (a process's episodes) travel
pickled through `gather_objects`. With one process every helper reduces to its single-process meaning.
"""
from __future__ import annotations

import pickle
from typing import Any, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec


def is_multiprocess() -> bool:
  return jax.process_count() > 1


def is_main() -> bool:
  """Process 0: the one that writes metrics, exports and prints the progress bar."""
  return jax.process_index() == 0


def fetch(tree: Any) -> Any:
  """jax.device_get that also takes arrays spanning other processes' devices (gathered to every process)."""
  def get(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return jax.device_get(x)
  return jax.tree.map(get, tree)


def mesh_of(tree: Any) -> jax.sharding.Mesh | None:
  """The mesh of the first leaf placed on one (None if no leaf is)."""
  for leaf in jax.tree.leaves(tree):
    if isinstance(getattr(leaf, "sharding", None), NamedSharding):
      return leaf.sharding.mesh
  return None


def replicate_unplaced(tree: Any, mesh: jax.sharding.Mesh | None) -> Any:
  """Leaves that live on one device (counters made by jnp.zeros, optax's step count) replicated over `mesh`: a
  checkpoint of several processes holds only global arrays."""
  if mesh is None:
    return tree
  replicated = NamedSharding(mesh, PartitionSpec())
  return jax.tree.map(lambda x: x if isinstance(x.sharding, NamedSharding) else jax.device_put(x, replicated), tree)


def abstract(tree: Any) -> Any:
  """Shapes, dtypes and shardings of a tree of arrays: the explicit target a checkpoint is restored onto."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def gather_objects(value: Any) -> list[Any]:
  """Every process's `value` (picklable), in process order; [value] with one process."""
  if not is_multiprocess():
    return [value]
  data = np.frombuffer(pickle.dumps(value), np.uint8)
  sizes = multihost_utils.process_allgather(np.array([len(data)], np.int64)).reshape(-1)
  padded = np.zeros(int(sizes.max()), np.uint8)
  padded[:len(data)] = data
  gathered = multihost_utils.process_allgather(padded)
  return [pickle.loads(gathered[p, :int(sizes[p])].tobytes()) for p in range(len(sizes))]


def process_share(items: Sequence[Any], count: int | None = None, index: int | None = None) -> tuple[int, list[Any]]:
  """Process `index`'s (default: this one's) contiguous block of `items` among `count` (default: all) processes, and
  the block's first index: process p of P takes items [len·p // P, len·(p+1) // P), so a group's episodes, and its
  statistics, stay in one process."""
  count = jax.process_count() if count is None else count
  index = jax.process_index() if index is None else index
  bounds = [len(items) * p // count for p in range(count + 1)]
  return bounds[index], list(items[bounds[index]:bounds[index + 1]])


def sync(name: str) -> None:
  """Waits until every process reaches this point (a no-op with one process)."""
  if is_multiprocess():
    multihost_utils.sync_global_devices(name)
