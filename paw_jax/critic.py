"""PPO's critic, a Learner plug-in: a copy of the policy decoder with a scalar value head and its own optimizer.

Values are turn-level (as verl-agent's step-wise PPO): V(h_t) is read from the final hidden state of the last prompt
token, one value per row, so GAE runs over the turns of a trajectory. The head starts at zero (V = 0 everywhere), so
the first advantages are the plain discounted returns.
"""
from __future__ import annotations

from typing import Any

import dataclasses
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from paw_jax import sharding
from paw_jax.algos.losses import value_loss
from paw_jax.batch import TrainBatch
from paw_jax.config import CriticConfig, OptimConfig
from paw_jax.learner import LossFn, TrainState, init_state, jit_update, make_optimizer
from paw_jax.models.transformer import Decoder


class Critic(nnx.Module):
  def __init__(self, backbone: Decoder):
    self.backbone = backbone
    dtype = backbone.cfg.param_jnp_dtype
    self.value_head = nnx.Param(jnp.zeros((backbone.cfg.hidden_size,), dtype), logical_axes=("embed",))
    self.value_bias = nnx.Param(jnp.zeros((), dtype), logical_axes=())

  def __call__(self, tokens_BxT: jax.Array, mask_BxT: jax.Array, action_mask_BxT: jax.Array,
               mesh: jax.sharding.Mesh | None = None) -> jax.Array:
    """value_B of right-padded rows `[prompt | response | ...]`, read just before the first response token; with a
    mesh, the hidden states stay split over its data x fsdp devices."""
    positions_BxT = jnp.broadcast_to(jnp.arange(tokens_BxT.shape[1]), tokens_BxT.shape)
    hidden_BxTxD, _ = self.backbone.hidden_states(tokens_BxT, positions_BxT, mask_BxT)
    hidden_BxTxD = sharding.constrain(hidden_BxTxD, ("batch", None, None), mesh)
    last_prompt_B = jnp.maximum(jnp.argmax(action_mask_BxT, axis=1) - 1, 0)
    hidden_BxD = jnp.take_along_axis(hidden_BxTxD, last_prompt_B[:, None, None], axis=1)[:, 0]
    return hidden_BxD.astype(jnp.float32) @ self.value_head[...].astype(jnp.float32) + self.value_bias[...]


def critic_from_policy(policy: Decoder) -> Critic:
  """A critic whose backbone starts as a copy of the policy's weights (the policy itself is left untouched)."""
  graphdef, params = nnx.split(policy)
  return Critic(nnx.merge(graphdef, jax.tree.map(jnp.copy, params)))


def values(graphdef: nnx.GraphDef, params: Any, batch: dict[str, jax.Array],
           mesh: jax.sharding.Mesh | None = None) -> jax.Array:
  critic = nnx.merge(graphdef, params)
  return critic(batch["tokens_BxT"], batch["mask_BxT"], batch["action_mask_BxT"], mesh)


def critic_loss(value_clip: float) -> LossFn:
  """PPO's clipped value loss against the GAE returns, a mean over the mini-batch's rows."""
  def loss_fn(graphdef, params, micro, counts, mesh):
    value_B = values(graphdef, params, micro, mesh)
    loss, metrics = value_loss(value_B, micro["old_value_B"], micro["return_B"], micro["valid_B"], value_clip,
                               counts["rows"])
    return loss, {**metrics, "loss": loss}
  return loss_fn


def jit_values(graphdef: nnx.GraphDef, mesh: jax.sharding.Mesh | None = None):
  """(params, batch with tokens/mask/action_mask) -> value_B, jitted: the critic's values before an update."""
  return jax.jit(lambda params, batch: values(graphdef, params, batch, mesh))


class CriticPlugin:
  """The Learner plug-in: fills `old_value_B` before the advantages (GAE) and steps on every mini-batch."""
  name = "critic"

  def __init__(self, policy: Decoder, optim: OptimConfig, cfg: CriticConfig, mesh: jax.sharding.Mesh):
    critic = critic_from_policy(policy)
    self.graphdef, params = nnx.split(critic)
    nnx.replace_by_pure_dict(params, jax.device_put(nnx.to_pure_dict(params), sharding.param_shardings(critic, mesh)))
    self.mesh = mesh
    optimizer = make_optimizer(dataclasses.replace(optim, learning_rate=cfg.learning_rate))
    self.state: TrainState = init_state(params, optimizer, with_ref=False)
    self._update = jit_update(self.graphdef, optimizer, critic_loss(cfg.value_clip), mesh)
    self._values = jit_values(self.graphdef, mesh)

  def device_pass(self, batch: TrainBatch, micro_batch: int) -> None:
    """The critic's value of every row, micro-batch by micro-batch (fetched once)."""
    keys = ("tokens_BxT", "mask_BxT", "action_mask_BxT")
    chunks = []  # device arrays: dispatched back to back, fetched once below
    for start in range(0, batch.num_rows, micro_batch):
      rows = sharding.shard_rows({k: getattr(batch, k)[start:start + micro_batch] for k in keys}, self.mesh)
      chunks.append(self._values(self.state.params, rows))
    batch.old_value_B = np.where(batch.valid_B, np.concatenate(jax.device_get(chunks)), 0.0).astype(np.float32)

  def step(self, minibatch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    self.state, metrics = self._update(self.state, minibatch)
    return metrics
