"""The Learner: a model's train state and its pure jitted functions (update, log-probs), with plug-ins beside it.

`update(..., state, batch) -> (state, metrics)` takes one mini-batch shaped [num_micro, micro_batch, T] and scans
over the micro-batches, summing gradients of losses whose token means already carry the mini-batch's denominator,
so the accumulated gradient is exactly the full mini-batch gradient. A non-finite loss or gradient skips the update
(params and optimizer state unchanged) and counts it in `state.skipped`.

Memory at real sizes: a micro-batch's rows stay split over the mesh's data x fsdp devices through the whole step
(inputs, hidden states and logits are pinned so), and log-probs are made only where a loss reads them, a chunk of
positions at a time (`losses.chunked_logprobs`): the [B, T, V] logits never exist.

A plug-in (PPO's critic, `paw_jax/critic.py`) is a second train state that fills its device pass before the
advantages and takes a step on every mini-batch after the policy's.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from paw_jax import multihost, sharding
from paw_jax.algos.losses import LossConfig, chunked_logprobs, total_loss, wm_term
from paw_jax.batch import TrainBatch
from paw_jax.config import OptimConfig
from paw_jax.metrics import reduce_step_metrics


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TrainState:
  step: jax.Array  # optimizer updates applied
  params: Any  # nnx.State of the policy (the sampler reads the same object)
  opt_state: optax.OptState
  ref_params: Any  # frozen initial policy for the KL loss (None when kl_coef == 0), in its own dtype
  skipped: jax.Array  # updates skipped for non-finite loss or gradients


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


def init_state(params: Any, optimizer: optax.GradientTransformation, with_ref: bool,
               ref_dtype: str = "float32") -> TrainState:
  """A fresh state; `with_ref` keeps a copy of `params` in `ref_dtype` as the KL reference (it is only read). The
  counters (and the optimizer's) are replicated on the params' mesh: global arrays, as a checkpoint needs."""
  ref = jax.tree.map(lambda x: jnp.array(x, dtype=ref_dtype), params) if with_ref else None
  state = TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params), ref, jnp.zeros((), jnp.int32))
  return multihost.replicate_unplaced(state, multihost.mesh_of(params))


def token_logprobs(graphdef: nnx.GraphDef, params: Any, tokens_BxT: jax.Array, mask_BxT: jax.Array,
                   where_BxT: jax.Array | None = None, with_entropy: bool = False,
                   mesh: Mesh | None = None) -> tuple[jax.Array, jax.Array | None]:
  """logp_BxT[b, t] = log p(tokens[b, t] | tokens[b, :t]) at the positions `where_BxT` (default: all) and 0 elsewhere
  (always 0 at t = 0, which has no prediction), and optionally the entropy there. With a mesh, rows stay split over
  its data x fsdp devices and each chunk's logits over its tensor devices."""
  model = nnx.merge(graphdef, params)
  positions_BxT = jnp.broadcast_to(jnp.arange(tokens_BxT.shape[1]), tokens_BxT.shape)  # rows are right-padded
  hidden_BxTxD, _ = model.hidden_states(tokens_BxT[:, :-1], positions_BxT[:, :-1], mask_BxT[:, :-1])
  rows = lambda x, *axes: sharding.constrain(x, ("batch", *axes), mesh)  # noqa: E731
  logits_fn = lambda hidden_BxCxD: rows(model.logits(rows(hidden_BxCxD, None, None)), None, "vocab")  # noqa: E731
  where_BxT = jnp.ones(tokens_BxT.shape, bool) if where_BxT is None else where_BxT.astype(bool)
  logp_BxT, entropy_BxT = chunked_logprobs(logits_fn, rows(hidden_BxTxD, None, None), tokens_BxT[:, 1:],
                                           where_BxT[:, 1:], with_entropy)
  pad = lambda x: jnp.pad(x, ((0, 0), (1, 0)))  # noqa: E731 (position 0 has no prediction)
  return pad(logp_BxT), pad(entropy_BxT) if with_entropy else None


def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


# (graphdef, params, micro-batch, counts over the whole mini-batch, mesh whose data x fsdp devices split the rows, or
# None) -> (loss, additive metrics incl. "loss").
LossFn = Callable[[nnx.GraphDef, Any, Mapping[str, jax.Array], Mapping[str, jax.Array], Mesh | None],
                  tuple[jax.Array, dict[str, jax.Array]]]


def minibatch_counts(batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
  """The denominators of every mean: a micro-batch's loss divides by the whole mini-batch's counts."""
  return {"action_tokens": batch["action_mask_BxT"].sum(), "rows": batch["valid_B"].sum()}


def loss_positions(micro: Mapping[str, jax.Array], wm_loss: str | None) -> jax.Array:
  """Where the losses read log-probs: the response tokens and, with a WM loss, the appended observation's."""
  action_BxT = micro["action_mask_BxT"].astype(bool)
  return action_BxT | micro["obs_mask_BxT"].astype(bool) if wm_loss is not None else action_BxT


def rl_loss(loss_cfg: LossConfig, wm_loss: str | None) -> LossFn:
  """The policy (+ KL, entropy, and with `wm_loss` PaW's WM) loss of `losses.total_loss`."""
  with_entropy = loss_cfg.entropy_coef != 0

  def loss_fn(graphdef, params, micro, counts, mesh):
    logp_BxT, entropy_BxT = token_logprobs(graphdef, params, micro["tokens_BxT"], micro["mask_BxT"],
                                           loss_positions(micro, wm_loss), with_entropy, mesh)
    return total_loss(logp_BxT, micro, loss_cfg, counts["action_tokens"], entropy_BxT, wm_loss)
  return loss_fn


def sft_loss(wm_loss: str | None = None) -> LossFn:
  """The warm-up: next-token NLL on the action tokens (token mean over the mini-batch) plus, with `wm_loss`, the
  world-model term Σ_rows wm_weight_B · ℓ_WM(row) on the appended next observations."""
  def loss_fn(graphdef, params, micro, counts, mesh):
    logp_BxT, _ = token_logprobs(graphdef, params, micro["tokens_BxT"], micro["mask_BxT"],
                                 loss_positions(micro, wm_loss), mesh=mesh)
    nll = -jnp.sum(jnp.where(micro["action_mask_BxT"], logp_BxT, 0.0)) / jnp.maximum(counts["action_tokens"], 1)
    if wm_loss is None:
      return nll, {"loss": nll, "sft/nll": nll}
    wm, _ = wm_term(logp_BxT, micro, LossConfig(), wm_loss)
    return nll + wm, {"loss": nll + wm, "sft/nll": nll, "sft/wm": wm}
  return loss_fn


def update(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation, loss_fn: LossFn, mesh: Mesh | None,
           state: TrainState, batch: Mapping[str, jax.Array]) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step on a mini-batch [num_micro, micro_batch, ...]; metrics are sums over micro-batches."""
  counts = minibatch_counts(batch)
  grad_fn = jax.value_and_grad(lambda params, micro: loss_fn(graphdef, params, micro, counts, mesh), has_aux=True)

  def accumulate(carry, micro):
    grads, metrics = carry
    micro = {k: sharding.constrain(v, sharding.row_axes(v.ndim), mesh) for k, v in micro.items()}
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


def jit_update(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation, loss_fn: LossFn,
               mesh: Mesh | None = None):
  """`update` jitted for these static parts; donates the old state's buffers. With `mesh`, the rows stay split over
  its data x fsdp devices inside the step."""
  return jax.jit(functools.partial(update, graphdef, optimizer, loss_fn, mesh), donate_argnums=0)


def jit_logprobs(graphdef: nnx.GraphDef, mesh: Mesh | None = None):
  """(params, tokens_BxT, mask_BxT, where_BxT=None) -> logp_BxT (0 outside `where_BxT`), jitted: old and reference
  log-probs before an update."""
  return jax.jit(lambda params, tokens, mask, where=None: token_logprobs(graphdef, params, tokens, mask, where,
                                                                         mesh=mesh)[0])


class Plugin(Protocol):
  """A second train state beside the policy's (PPO's critic): checkpointed under `name`."""
  name: str
  state: TrainState

  def device_pass(self, batch: TrainBatch, micro_batch: int) -> None:
    """Fills its fields of `batch` (before the advantages)."""

  def step(self, minibatch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """One optimizer step on the mini-batch the policy just took; returns its (device) metrics."""


class Learner:
  """The policy's train state, its jitted update and log-prob functions, and plug-ins trained beside it.

    learner = Learner(graphdef, params, optim_cfg, rl_loss(loss_cfg, "cmae"), mesh, with_ref=False)
    learner.device_passes(batch, micro_batch=8, trainer_logp=True)   # before the advantages (batch.prepare)
    metrics = learner.update(batch, mini_batch=128, micro_batch=32, old_logp="trainer")
  """

  def __init__(self, graphdef: nnx.GraphDef, params: Any, optim: OptimConfig, loss_fn: LossFn, mesh: Mesh, *,
               with_ref: bool, ref_dtype: str = "float32", plugins: tuple[Plugin, ...] = ()):
    self.graphdef, self.mesh, self.plugins = graphdef, mesh, tuple(plugins)
    optimizer = make_optimizer(optim)
    self.state = init_state(params, optimizer, with_ref=with_ref, ref_dtype=ref_dtype)
    self._update = jit_update(graphdef, optimizer, loss_fn, mesh)
    self._logprobs = jit_logprobs(graphdef, mesh)

  @property
  def params(self) -> Any:
    """The current policy weights: what the sampler reads."""
    return self.state.params

  def states(self) -> dict[str, TrainState]:
    """What a checkpoint holds: the policy's state and each plug-in's."""
    return {"policy": self.state, **{p.name: p.state for p in self.plugins}}

  def load_states(self, states: Mapping[str, TrainState]) -> None:
    self.state = states["policy"]
    for plugin in self.plugins:
      plugin.state = states[plugin.name]

  def device_passes(self, batch: TrainBatch, micro_batch: int, trainer_logp: bool) -> None:
    """The trainer's log-probs (`trainer_logp`) and the reference's (KL) of the batch's response tokens (0 elsewhere:
    only PPO's ratio and the KL read them), then the plug-ins' passes; micro-batch by micro-batch, dispatched back to
    back and fetched once."""
    with_ref = self.state.ref_params is not None
    old, ref = [], []
    keys = ("tokens_BxT", "mask_BxT", "action_mask_BxT")
    for start in range(0, batch.num_rows, micro_batch):
      rows = sharding.shard_rows({k: getattr(batch, k)[start:start + micro_batch] for k in keys}, self.mesh)
      inputs = (rows["tokens_BxT"], rows["mask_BxT"], rows["action_mask_BxT"])
      if trainer_logp:
        old.append(self._logprobs(self.state.params, *inputs))
      if with_ref:
        ref.append(self._logprobs(self.state.ref_params, *inputs))
    old, ref = multihost.fetch((old, ref))
    if trainer_logp:
      batch.trainer_logp_BxT = np.concatenate(old).astype(np.float32)
    if with_ref:
      batch.ref_logp_BxT = np.concatenate(ref).astype(np.float32)
    for plugin in self.plugins:
      plugin.device_pass(batch, micro_batch)

  def step(self, minibatch: Mapping[str, np.ndarray]) -> tuple[dict[str, jax.Array], dict[str, dict[str, jax.Array]]]:
    """One optimizer step of the policy, then of each plug-in, on a [num_micro, micro_batch, ...] mini-batch.

    Waits for the previous step first: the host prepares step k+1 while step k runs, never more. Unpaced, a loop of
    steps queues them all (their mini-batches held on the devices), and on XLA:CPU's virtual devices a device whose
    queue is full (32 programs) parks a launch on the thread another device's all-reduce needs: a deadlock."""
    jax.block_until_ready(self.states())
    minibatch = sharding.shard_rows(dict(minibatch), self.mesh, row_axis=1)
    self.state, metrics = self._update(self.state, minibatch)
    return metrics, {plugin.name: plugin.step(minibatch) for plugin in self.plugins}

  def update(self, batch: TrainBatch, mini_batch: int, micro_batch: int, old_logp: str,
             epochs: int = 1) -> dict[str, float]:
    """`epochs` passes over the batch, one optimizer step per mini-batch; host-reduced metrics."""
    policy, plugins = [], []
    for _ in range(epochs):
      for minibatch in batch.mini_batches(mini_batch, micro_batch, old_logp):
        metrics, plugin_metrics = self.step(minibatch)
        policy.append(metrics)
        plugins.append(plugin_metrics)
    policy, plugins = jax.device_get((policy, plugins))  # one transfer for the whole update
    reduced = reduce_step_metrics(policy, "train")
    for plugin in self.plugins:
      reduced.update(reduce_step_metrics([m[plugin.name] for m in plugins], plugin.name))
    return reduced
