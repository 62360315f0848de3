"""Pure jitted step functions over (sharded) params: the policy update with micro-batch accumulation, and log-probs.

`update(..., state, batch) -> (state, metrics)` takes one mini-batch shaped [num_micro, micro_batch, T] and scans
over the micro-batches, summing gradients of losses whose token means already carry the mini-batch's denominator,
so the accumulated gradient is exactly the full mini-batch gradient. A non-finite loss or gradient skips the update
(params and optimizer state unchanged) and counts it in `state.skipped`.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from paw_jax.algos.losses import LossConfig, entropy_from_logits, total_loss, wm_term


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TrainState:
  step: jax.Array  # optimizer updates applied
  params: Any  # nnx.State of the policy (the sampler reads the same object)
  opt_state: optax.OptState
  ref_params: Any  # frozen initial policy for the KL loss (None when kl_coef == 0)
  skipped: jax.Array  # updates skipped for non-finite loss or gradients


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  learning_rate: float = 1e-6
  warmup_steps: int = 0
  decay_steps: int = 0  # cosine decay to `final_lr_fraction` over this many steps after warm-up; 0: constant
  final_lr_fraction: float = 0.1
  weight_decay: float = 0.01
  b1: float = 0.9
  b2: float = 0.999
  grad_clip: float = 1.0  # global-norm clipping


def make_optimizer(cfg: OptimConfig) -> optax.GradientTransformation:
  if cfg.decay_steps:
    schedule = optax.warmup_cosine_decay_schedule(0.0, cfg.learning_rate, max(cfg.warmup_steps, 1),
                                                  cfg.warmup_steps + cfg.decay_steps,
                                                  cfg.learning_rate * cfg.final_lr_fraction)
  elif cfg.warmup_steps:
    schedule = optax.linear_schedule(0.0, cfg.learning_rate, cfg.warmup_steps)
  else:
    schedule = cfg.learning_rate
  return optax.chain(optax.clip_by_global_norm(cfg.grad_clip),
                     optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay))


def init_state(params: Any, optimizer: optax.GradientTransformation, with_ref: bool) -> TrainState:
  ref = jax.tree.map(jnp.copy, params) if with_ref else None
  return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params), ref, jnp.zeros((), jnp.int32))


def token_logprobs(graphdef: nnx.GraphDef, params: Any, tokens_BxT: jax.Array, mask_BxT: jax.Array,
                   with_entropy: bool = False) -> tuple[jax.Array, jax.Array | None]:
  """logp_BxT[b, t] = log p(tokens[b, t] | tokens[b, :t]) (0 at t = 0), and optionally the entropy there."""
  model = nnx.merge(graphdef, params)
  positions_BxT = jnp.broadcast_to(jnp.arange(tokens_BxT.shape[1]), tokens_BxT.shape)  # rows are right-padded
  logits_BxTxV, _ = model(tokens_BxT[:, :-1], positions_BxT[:, :-1], mask_BxT[:, :-1])
  logp_BxTxV = jax.nn.log_softmax(logits_BxTxV, axis=-1)
  logp_BxT = jnp.take_along_axis(logp_BxTxV, tokens_BxT[:, 1:, None], axis=-1)[..., 0]
  pad = lambda x: jnp.pad(x, ((0, 0), (1, 0)))  # noqa: E731 (position 0 has no prediction)
  entropy_BxT = pad(entropy_from_logits(logits_BxTxV)) if with_entropy else None
  return pad(logp_BxT), entropy_BxT


def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


# (graphdef, params, micro-batch, counts over the whole mini-batch) -> (loss, additive metrics incl. "loss").
LossFn = Callable[[nnx.GraphDef, Any, Mapping[str, jax.Array], Mapping[str, jax.Array]],
                  tuple[jax.Array, dict[str, jax.Array]]]


def minibatch_counts(batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
  """The denominators of every mean: a micro-batch's loss divides by the whole mini-batch's counts."""
  return {"action_tokens": batch["action_mask_BxT"].sum(), "rows": batch["valid_B"].sum()}


def rl_loss(loss_cfg: LossConfig) -> LossFn:
  """The policy (+ KL, entropy, WM) loss of `losses.total_loss`."""
  with_entropy = loss_cfg.entropy_coef != 0

  def loss_fn(graphdef, params, micro, counts):
    logp_BxT, entropy_BxT = token_logprobs(graphdef, params, micro["tokens_BxT"], micro["mask_BxT"], with_entropy)
    return total_loss(logp_BxT, micro, loss_cfg, counts["action_tokens"], entropy_BxT)
  return loss_fn


def sft_loss(wm_loss: str | None = None) -> LossFn:
  """The warm-up: next-token NLL on the action tokens (token mean over the mini-batch) plus, with `wm_loss`, the
  world-model term Σ_rows wm_weight_B · ℓ_WM(row) on the appended next observations."""
  wm_cfg = LossConfig(wm_loss=wm_loss)

  def loss_fn(graphdef, params, micro, counts):
    logp_BxT, _ = token_logprobs(graphdef, params, micro["tokens_BxT"], micro["mask_BxT"])
    nll = -jnp.sum(jnp.where(micro["action_mask_BxT"], logp_BxT, 0.0)) / jnp.maximum(counts["action_tokens"], 1)
    if wm_loss is None:
      return nll, {"loss": nll, "sft/nll": nll}
    wm, _ = wm_term(logp_BxT, micro, wm_cfg)
    return nll + wm, {"loss": nll + wm, "sft/nll": nll, "sft/wm": wm}
  return loss_fn


def update(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation, loss_fn: LossFn, state: TrainState,
           batch: Mapping[str, jax.Array]) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step on a mini-batch [num_micro, micro_batch, ...]; metrics are sums over micro-batches."""
  counts = minibatch_counts(batch)
  grad_fn = jax.value_and_grad(lambda params, micro: loss_fn(graphdef, params, micro, counts), has_aux=True)

  def accumulate(carry, micro):
    grads, metrics = carry
    (_, micro_metrics), micro_grads = grad_fn(state.params, micro)
    return (jax.tree.map(jnp.add, grads, micro_grads), jax.tree.map(jnp.add, metrics, micro_metrics)), None

  first = jax.tree.map(lambda x: x[0], batch)
  metrics_shape = jax.eval_shape(lambda: grad_fn(state.params, first)[0][1])
  zeros = (jax.tree.map(jnp.zeros_like, state.params),
           jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metrics_shape))
  (grads, metrics), _ = jax.lax.scan(accumulate, zeros, batch)

  finite = jnp.isfinite(metrics["loss"]) & _all_finite(grads)
  updates, new_opt_state = optimizer.update(grads, state.opt_state, state.params)
  new_params = optax.apply_updates(state.params, updates)
  keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa: E731
  new_state = TrainState(state.step + finite.astype(jnp.int32), keep(new_params, state.params),
                         keep(new_opt_state, state.opt_state), state.ref_params,
                         state.skipped + (~finite).astype(jnp.int32))
  metrics = {**metrics, "grad_norm": optax.tree.norm(grads), "skipped": (~finite).astype(jnp.float32)}
  return new_state, metrics


def jit_update(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation, loss_fn: LossFn):
  """`update` jitted for these static parts; donates the old state's buffers."""
  return jax.jit(functools.partial(update, graphdef, optimizer, loss_fn), donate_argnums=0)


def jit_logprobs(graphdef: nnx.GraphDef):
  """(params, tokens_BxT, mask_BxT) -> logp_BxT, jitted: old and reference log-probs before an update."""
  return jax.jit(lambda params, tokens, mask: token_logprobs(graphdef, params, tokens, mask)[0])
