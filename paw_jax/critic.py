"""PPO's critic: a copy of the policy decoder with a scalar value head, trained by its own optimizer.

Values are turn-level (as verl-agent's step-wise PPO): V(h_t) is read from the final hidden state of the last prompt
token, one value per row, so GAE runs over the turns of a trajectory. The head starts at zero (V = 0 everywhere), so
the first advantages are the plain discounted returns.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from paw_jax.algos.losses import value_loss
from paw_jax.models.transformer import Decoder
from paw_jax.train_step import LossFn


class Critic(nnx.Module):
  def __init__(self, backbone: Decoder):
    self.backbone = backbone
    dtype = backbone.cfg.param_jnp_dtype
    self.value_head = nnx.Param(jnp.zeros((backbone.cfg.hidden_size,), dtype), logical_axes=("embed",))
    self.value_bias = nnx.Param(jnp.zeros((), dtype), logical_axes=())

  def __call__(self, tokens_BxT: jax.Array, mask_BxT: jax.Array, action_mask_BxT: jax.Array) -> jax.Array:
    """value_B of right-padded rows `[prompt | response | ...]`, read just before the first response token."""
    positions_BxT = jnp.broadcast_to(jnp.arange(tokens_BxT.shape[1]), tokens_BxT.shape)
    hidden_BxTxD, _ = self.backbone.hidden_states(tokens_BxT, positions_BxT, mask_BxT)
    last_prompt_B = jnp.maximum(jnp.argmax(action_mask_BxT, axis=1) - 1, 0)
    hidden_BxD = jnp.take_along_axis(hidden_BxTxD, last_prompt_B[:, None, None], axis=1)[:, 0]
    return hidden_BxD.astype(jnp.float32) @ self.value_head[...].astype(jnp.float32) + self.value_bias[...]


def critic_from_policy(policy: Decoder) -> Critic:
  """A critic whose backbone starts as a copy of the policy's weights (the policy itself is left untouched)."""
  graphdef, params = nnx.split(policy)
  return Critic(nnx.merge(graphdef, jax.tree.map(jnp.copy, params)))


def values(graphdef: nnx.GraphDef, params: Any, batch: dict[str, jax.Array]) -> jax.Array:
  critic = nnx.merge(graphdef, params)
  return critic(batch["tokens_BxT"], batch["mask_BxT"], batch["action_mask_BxT"])


def critic_loss(value_clip: float) -> LossFn:
  """PPO's clipped value loss against the GAE returns, a mean over the mini-batch's rows."""
  def loss_fn(graphdef, params, micro, counts):
    value_B = values(graphdef, params, micro)
    loss, metrics = value_loss(value_B, micro["old_value_B"], micro["return_B"], micro["valid_B"], value_clip,
                               counts["rows"])
    return loss, {**metrics, "loss": loss}
  return loss_fn


def jit_values(graphdef: nnx.GraphDef):
  """(params, batch with tokens/mask/action_mask) -> value_B, jitted: the critic's values before an update."""
  return jax.jit(lambda params, batch: values(graphdef, params, batch))
