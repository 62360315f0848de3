"""Train-state checkpoints (orbax: async, keep-N, restored onto the caller's shardings).

Each step directory holds two items: `state`, a pytree of jax arrays (the learner's train states: the policy's
params, optimizer state and KL reference, and a plug-in's such as PPO's critic), and `meta`, a JSON host dict (the
trainer's: the next update to run). Every array is a global one (its sharding a NamedSharding over the run's mesh),
so the processes of a multi-process run each write their own shards, and a checkpoint restores onto any mesh and
process count: `restore` places each array on the sharding `abstract_state` names. Orbax writes a step under `<step>.orbax-checkpoint-tmp-<ts>` and renames it
when complete, so a save killed half way is never listed and resume falls back to the previous step.

Auto-resume is the caller's:
  if ckpt.latest_step() is not None:
    state, meta = ckpt.restore(abstract_state)
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath


_STATE, _META = "state", "meta"


class Checkpointer:
  """Saves `(state, meta)` every `save_every` steps under `workdir/checkpoints`, keeping the newest `keep`.

  One training run owns the directory: opening it deletes the temporary directories of unfinished saves. `workdir`:
  a local path or any filesystem etils.epath and orbax know (gs://...).
  """

  def __init__(self, workdir: str | os.PathLike, keep: int = 3, save_every: int = 1, async_save: bool = True):
    if keep < 1 or save_every < 1:
      raise ValueError(f"Checkpointer: keep and save_every must be >= 1, got keep={keep} save_every={save_every}")
    workdir = epath.Path(workdir)
    self.directory = (workdir if "://" in str(workdir) else workdir.absolute()) / "checkpoints"
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, save_interval_steps=save_every, enable_async_checkpointing=async_save,
        cleanup_tmp_directories=True)  # a restarted run removes the leftovers of a killed save
    self._manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={_STATE: ocp.StandardCheckpointHandler(), _META: ocp.JsonCheckpointHandler()})

  def save(self, step: int, state: Any, meta: dict[str, Any], force: bool = False) -> bool:
    """Starts saving if `step` is due (or `force`) and not saved yet; True if it did.

    Returns once the arrays are copied off the devices: the state's buffers may then be donated.
    """
    try:
      json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as e:
      raise TypeError(f"Checkpointer.save: meta must be JSON-serializable: {e}") from None
    args = ocp.args.Composite(**{_STATE: ocp.args.StandardSave(state), _META: ocp.args.JsonSave(meta)})
    try:
      return self._manager.save(step, args=args, force=force)
    except ocp.checkpoint_manager.StepAlreadyExistsError:  # e.g. a final forced save on a periodic step
      return False

  def latest_step(self) -> int | None:
    """The newest completed step, or None when there is nothing to resume from."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict[str, Any]]:
    """(state, meta) of `step` (default: latest), arrays placed on the shardings of `abstract_state`.

    `abstract_state`: the state's tree of jax.ShapeDtypeStruct with `.sharding` (`multihost.abstract(state)`), or
    concrete arrays: their shardings are used. A leaf without a sharding lands on the default device.
    """
    step = self.latest_step() if step is None else step
    if step is None or step not in self._manager.all_steps():
      raise FileNotFoundError(f"no checkpoint for step {step} in {self.directory} (have {self.all_steps()})")
    self._check_structure(abstract_state, step)
    restored = self._manager.restore(
        step, args=ocp.args.Composite(**{_STATE: ocp.args.StandardRestore(abstract_state),
                                         _META: ocp.args.JsonRestore()}))
    return restored[_STATE], restored[_META]

  def _check_structure(self, abstract_state: Any, step: int) -> None:
    """One line naming the leaves that differ (orbax prints whole trees), e.g. a config that changed the model."""
    metadata = self._manager.item_metadata(step)[_STATE]
    on_disk = _leaf_paths(getattr(metadata, "tree", metadata))  # older orbax returns the bare tree
    wanted = _leaf_paths(abstract_state)
    if on_disk != wanted:
      raise ValueError(f"checkpoint step {step} in {self.directory} does not match abstract_state: "
                       f"missing on disk {sorted(wanted - on_disk)[:5]}, not in abstract_state "
                       f"{sorted(on_disk - wanted)[:5]}")

  def wait(self) -> None:
    """Blocks until pending async saves are committed."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _leaf_paths(tree: Any) -> set[str]:
  """Leaf paths as 'a/0/b' strings, so a namedtuple field (attribute key) equals its on-disk dict key."""
  def name(entry) -> str:
    for attr in ("key", "name", "idx"):
      if hasattr(entry, attr):
        return str(getattr(entry, attr))
    return str(entry)

  paths, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {"/".join(name(entry) for entry in path) for path, _ in paths}

