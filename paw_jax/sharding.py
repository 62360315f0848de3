"""Device mesh from config and the logical-axis rule table that maps every parameter to a PartitionSpec.

Mesh axes: `data` (pure data parallel), `fsdp` (data parallel with parameters and optimizer state sharded), `tensor`
(Megatron-style model parallel). Parameters carry logical axis names (`paw_jax.models.transformer`); a rule maps a
logical name to a mesh axis. A dimension that the mesh axis does not divide stays replicated (e.g. 2 KV heads on a
4-way tensor axis), and a mesh axis is used at most once per array.
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# (logical axis, mesh axes in order of preference); the first rule naming a logical axis wins.
DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("embed", "fsdp"),
    ("head_dim", None),
    ("layers", None),
)


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A (data, fsdp, tensor) mesh over `devices` (default: all); -1 takes what the others leave."""
  devices = list(jax.devices() if devices is None else devices)
  sizes = [data, fsdp, tensor]
  if sizes.count(-1) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got data={data} fsdp={fsdp} tensor={tensor}")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f"{len(devices)} devices are not divisible by fsdp*tensor*... = {known}")
    sizes[sizes.index(-1)] = len(devices) // known
  if int(np.prod(sizes)) != len(devices):
    raise ValueError(f"mesh data={sizes[0]} x fsdp={sizes[1]} x tensor={sizes[2]} needs {int(np.prod(sizes))} "
                     f"devices, have {len(devices)}")
  return Mesh(np.asarray(devices).reshape(sizes), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def logical_to_spec(logical_axes: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
                    rules=DEFAULT_RULES) -> PartitionSpec:
  """PartitionSpec for an array with these logical axes under `rules`, dropping axes that do not divide."""
  rule_of = {}
  for name, target in rules:
    rule_of.setdefault(name, target)
  used: set[str] = set()
  spec = []
  for name, dim in zip(logical_axes, shape):
    target = rule_of.get(name) if name is not None else None
    targets = () if target is None else (target,) if isinstance(target, str) else tuple(target)
    chosen = tuple(t for t in targets if t not in used and mesh.shape[t] > 1)
    while chosen and dim % int(np.prod([mesh.shape[t] for t in chosen])):
      chosen = chosen[:-1]
    used.update(chosen)
    spec.append(None if not chosen else chosen[0] if len(chosen) == 1 else chosen)
  return PartitionSpec(*spec)


def param_shardings(model: nnx.Module, mesh: Mesh, rules=DEFAULT_RULES) -> Any:
  """A pure-dict tree of NamedShardings matching `nnx.to_pure_dict(nnx.state(model, nnx.Param))`."""
  state = nnx.state(model, nnx.Param)

  def sharding_of(variable):
    axes = variable.get_metadata().get("logical_axes") or (None,) * variable.ndim
    return NamedSharding(mesh, logical_to_spec(axes, variable.shape, mesh, rules))

  return nnx.to_pure_dict(jax.tree.map(sharding_of, state, is_leaf=lambda x: isinstance(x, nnx.Variable)))


def data_parallel_size(mesh: Mesh) -> int:
  """Devices that split the rows: the 'batch' rule's data x fsdp."""
  return mesh.shape["data"] * mesh.shape["fsdp"]


def row_axes(ndim: int, row_axis: int = 0) -> tuple[str | None, ...]:
  """Logical axes of an array whose axis `row_axis` holds rows (1 for [num_micro, micro_batch, ...]); the others are
  replicated."""
  return (None,) * row_axis + ("batch",) + (None,) * (ndim - row_axis - 1)


def shard_rows(batch: dict[str, np.ndarray], mesh: Mesh, row_axis: int = 0, rules=DEFAULT_RULES) -> dict[str, Any]:
  """Host arrays -> device arrays whose row axis is split by the 'batch' rule (data x fsdp), which must divide it; the
  other axes are replicated. Single-process: every process holding the whole batch is what `jax.device_put`
  assumes."""
  def put(x: np.ndarray):
    if x.shape[row_axis] % data_parallel_size(mesh):
      raise ValueError(f"{x.shape[row_axis]} rows do not split over the mesh's data x fsdp = "
                       f"{data_parallel_size(mesh)} devices")
    return jax.device_put(x, NamedSharding(mesh, logical_to_spec(row_axes(x.ndim, row_axis), x.shape, mesh, rules)))
  return {k: put(v) for k, v in batch.items()}


def constrain(x: jax.Array, logical_axes: Sequence[str | None], mesh: Mesh | None, rules=DEFAULT_RULES) -> jax.Array:
  """Inside jit: pins `x` to the layout the rule table gives these logical axes (e.g. rows over data x fsdp), so that
  no intermediate of a step is silently gathered onto every device. Without a mesh, `x` unchanged."""
  if mesh is None:
    return x
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, logical_to_spec(logical_axes, x.shape, mesh, rules)))
