"""EnvPool: `num_envs` TextEnv instances ("slots") stepped in parallel worker processes, with per-request timeouts.

  with EnvPool("sokoban", num_envs=8, env_kwargs={"num_boxes": 2}, step_timeout_s=30, reset_timeout_s=120) as pool:
    [(observation, info), ...] = pool.reset([(slot, Task(split, seed)), ...])
    [StepResult, ...] = pool.step([(slot, reply_text), ...])

Answers come in request order; any subset of slots may be addressed in a call (the env count is independent of the
batch size). Stepping a slot that has no running episode is a ValueError: reset it first.

Failures stay in their slot. A slot whose env raises, whose process dies, or that does not answer within the timeout
ends its episode as failed: StepResult("", 0.0, done=True, info) with info['error'] saying what happened (plus won /
invalid False and the usual steps / invalid_count / truncated / admissible_actions keys). Its worker is killed and
replaced by a fresh one; the other slots are untouched. A failed reset returns ("", info) with info['error'] and
leaves the slot without an episode. `"error" in info` is how a caller tells a pool failure from an env's answer.
Errors that would fail every slot (an unknown env, a missing package, bad constructor arguments) raise one EnvError
when the pool is built.

Workers start with the "spawn" context, never fork (the parent has JAX loaded). The caller's `__main__` is hidden
while a worker starts, so spawn does not re-import it there (that would load JAX into every worker, or re-run a
script that lacks a `__main__` guard): workers import only the env's module. `in_process=True` runs the envs in the
calling process for debugging: same API and failure handling, except that a hung env cannot be timed out.
Env names are registry names ("sokoban") or class paths ("package.module:Class"), so a test can pool its own env.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import signal
import sys
import time
import types
from multiprocessing.connection import Connection, wait
from typing import Any, Iterable, Iterator

from paw_jax.envs import EnvError, StepResult, Task, TextEnv, env_class
from paw_jax.envs.base import error_line

_CONTEXT = multiprocessing.get_context("spawn")
_CLOSE_GRACE_S = 2.0  # how long close() lets workers release their envs before killing them
Reply = tuple[bool, Any]  # (ok, value) where value is the result, or the error line when not ok


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
  main = sys.modules["__main__"]
  sys.modules["__main__"] = types.ModuleType("__main__")  # no __file__ / __spec__: spawn has nothing to re-import
  try:
    yield
  finally:
    sys.modules["__main__"] = main


def _construct(env_name: str, env_kwargs: dict[str, Any]) -> TextEnv:
  try:
    return env_class(env_name)(**env_kwargs)
  except EnvError:
    raise
  except Exception as error:
    raise EnvError(f"env '{env_name}' could not be constructed with {env_kwargs}: {error_line(error)}") from error


def _call_env(env: TextEnv, method: str, argument: Any) -> Reply:
  try:
    return True, getattr(env, method)(argument)
  except Exception as error:  # reported to the caller as a failed episode, never lost
    return False, error_line(error)


def _worker(conn: Connection, env_name: str, env_kwargs: dict[str, Any]) -> None:
  """A worker process: builds the env, answers the handshake, then serves (method, argument) requests."""
  signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it closes the pool
  try:
    env = _construct(env_name, env_kwargs)
  except EnvError as error:
    conn.send((False, str(error)))
    return
  conn.send((True, None))
  while True:
    try:
      method, argument = conn.recv()
    except EOFError:  # the parent is gone
      break
    if method == "close":
      break
    ok, value = _call_env(env, method, argument)
    try:
      conn.send((ok, value))
    except Exception as error:  # e.g. an info value that cannot be pickled
      conn.send((False, f"{method} result could not be sent: {error_line(error)}"))
  env.close()


class _LocalSlot:
  """One env in the calling process."""

  def __init__(self, env_name: str, env_kwargs: dict[str, Any]):
    self._args = (env_name, env_kwargs)
    self.env = _construct(*self._args)

  def restart(self) -> None:
    try:
      self.env.close()
    except Exception:  # the env already failed; its replacement is what matters
      pass
    self.env = _construct(*self._args)

  def close(self) -> None:
    self.env.close()


class _ProcessSlot:
  """One env in a worker process; `ready` once its handshake arrived."""

  def __init__(self, env_name: str, env_kwargs: dict[str, Any]):
    self._args = (env_name, env_kwargs)
    self.start()

  def start(self) -> None:
    self.conn, child_conn = _CONTEXT.Pipe()
    self.process = _CONTEXT.Process(target=_worker, args=(child_conn, *self._args), daemon=True)
    with _main_module_hidden():
      self.process.start()
    child_conn.close()  # only the worker may hold its end, so that its death reads as EOF here
    self.started_at = time.monotonic()
    self.ready = False

  def send(self, method: str, argument: Any) -> Reply | None:
    """Sends a request; a failure Reply when the worker is already gone, else None (the answer comes later)."""
    try:
      self.conn.send((method, argument))
      return None
    except OSError:
      return False, self.death()

  def receive(self) -> Reply:
    try:
      return self.conn.recv()
    except (EOFError, OSError):
      return False, self.death()
    except Exception as error:  # an answer the parent cannot unpickle
      return False, f"unreadable answer from the worker: {error_line(error)}"

  def death(self) -> str:
    self.process.join(timeout=1.0)
    return f"worker process died (exit code {self.process.exitcode})"

  def stop(self, grace_s: float = 0.0) -> None:
    self.process.join(timeout=grace_s)
    if self.process.is_alive():
      self.process.kill()
      self.process.join()
    self.conn.close()

  def restart(self) -> None:
    self.stop()
    self.start()

  def close(self) -> None:
    self.send("close", None)


class EnvPool:
  """`num_envs` envs of one kind, addressed by slot index; the module docstring has the API and failure semantics.
  `env_class` is the env's class (for r_max, action_tags, format_admissible)."""

  def __init__(self, env_name: str, num_envs: int, env_kwargs: dict[str, Any] | None = None,
               step_timeout_s: float = 30.0, reset_timeout_s: float = 120.0, in_process: bool = False):
    if num_envs < 1:
      raise ValueError(f"EnvPool: num_envs must be >= 1, got {num_envs}")
    if min(step_timeout_s, reset_timeout_s) <= 0:
      raise ValueError(f"EnvPool: timeouts must be > 0, got step {step_timeout_s}, reset {reset_timeout_s}")
    self.env_class = env_class(env_name)  # an unknown name or missing package fails here, once
    self.num_envs, self.step_timeout_s, self.reset_timeout_s = num_envs, step_timeout_s, reset_timeout_s
    self.in_process = in_process
    env_kwargs = dict(env_kwargs or {})
    self._slots: list[_LocalSlot | _ProcessSlot] = []
    self._counts: list[tuple[int, int] | None] = [None] * num_envs  # (steps, invalid_count) of running episodes
    if in_process:
      self._slots = [_LocalSlot(env_name, env_kwargs) for _ in range(num_envs)]
      return
    self._slots = [_ProcessSlot(env_name, env_kwargs) for _ in range(num_envs)]
    failures = {error for ok, error in self._await_ready(range(num_envs)).values() if not ok}
    if failures:
      self.close()
      raise EnvError(f"EnvPool: {'; '.join(sorted(failures))}")

  def reset(self, requests: list[tuple[int, Task]]) -> list[tuple[str, dict[str, Any]]]:
    self._check(requests, Task, need_episode=False)
    results = []
    for (slot, _), (ok, value) in zip(requests, self._call("reset", requests, self.reset_timeout_s)):
      self._counts[slot] = (0, 0) if ok else None
      results.append(value if ok else ("", self._failure_info(value, steps=0, invalid_count=0)))
    return results

  def step(self, requests: list[tuple[int, str]]) -> list[StepResult]:
    self._check(requests, str, need_episode=True)
    results = []
    for (slot, _), (ok, value) in zip(requests, self._call("step", requests, self.step_timeout_s)):
      steps, invalid_count = self._counts[slot]
      result = value if ok else StepResult("", 0.0, True, self._failure_info(value, steps + 1, invalid_count))
      self._counts[slot] = None if result.done else (result.info["steps"], result.info["invalid_count"])
      results.append(result)
    return results

  def close(self) -> None:
    """Stops every worker (or closes every local env); the pool is unusable afterwards. Idempotent."""
    slots, self._slots = self._slots, []
    for slot in slots:
      slot.close()
    for slot in slots:
      if isinstance(slot, _ProcessSlot):
        slot.stop(_CLOSE_GRACE_S)

  def __enter__(self) -> EnvPool:
    return self

  def __exit__(self, *exc_info: Any) -> None:
    self.close()

  # --- internals ------------------------------------------------------------------------------------------------
  @staticmethod
  def _failure_info(error: str, steps: int, invalid_count: int) -> dict[str, Any]:
    return {"won": False, "invalid": False, "error": error, "steps": steps, "invalid_count": invalid_count,
            "truncated": False, "admissible_actions": None}

  def _check(self, requests: list[tuple[int, Any]], payload_type: type, need_episode: bool) -> None:
    if not self._slots:
      raise EnvError("EnvPool: the pool is closed")
    slots = [slot for slot, _ in requests]
    if len(set(slots)) != len(slots):
      raise ValueError(f"EnvPool: a slot appears twice in one request batch: {slots}")
    for slot, payload in requests:
      if not (isinstance(slot, int) and 0 <= slot < self.num_envs):
        raise ValueError(f"EnvPool: slot must be an int in [0, {self.num_envs}), got {slot!r}")
      if not isinstance(payload, payload_type):
        raise ValueError(f"EnvPool: slot {slot} needs a {payload_type.__name__}, got {type(payload).__name__}")
      if need_episode and self._counts[slot] is None:
        raise ValueError(f"EnvPool: slot {slot} has no running episode; reset it first")

  def _call(self, method: str, requests: list[tuple[int, Any]], timeout_s: float) -> list[Reply]:
    """Runs `method` on every requested slot concurrently; restarts the slots that failed."""
    if self.in_process:
      replies = {slot: _call_env(self._slots[slot].env, method, argument) for slot, argument in requests}
    else:
      try:
        replies = self._call_workers(method, requests, timeout_s)
      except BaseException:  # e.g. Ctrl-C mid-call: answers still in flight would be misread by the next call
        self.close()
        raise
    for slot, (ok, _) in replies.items():
      if not ok:
        self._slots[slot].restart()
    return [replies[slot] for slot, _ in requests]

  def _call_workers(self, method: str, requests: list[tuple[int, Any]], timeout_s: float) -> dict[int, Reply]:
    replies = {slot: reply for slot, reply in self._await_ready(slot for slot, _ in requests).items() if not reply[0]}
    deadlines = {}
    for slot, argument in requests:
      if slot in replies:
        continue
      if (failure := self._slots[slot].send(method, argument)) is not None:
        replies[slot] = failure
      else:
        deadlines[slot] = time.monotonic() + timeout_s
    replies.update(self._collect(deadlines, f"{method} got no answer within {timeout_s:g} s"))
    return replies

  def _await_ready(self, slots: Iterable[int]) -> dict[int, Reply]:
    """Collects the construction handshakes of the not-yet-ready `slots`."""
    deadlines = {slot: self._slots[slot].started_at + self.reset_timeout_s for slot in slots
                 if not self._slots[slot].ready}
    replies = self._collect(deadlines, f"env construction took longer than {self.reset_timeout_s:g} s")
    for slot, (ok, _) in replies.items():
      self._slots[slot].ready = ok
    return replies

  def _collect(self, deadlines: dict[int, float], timeout_message: str) -> dict[int, Reply]:
    """One answer per slot in `deadlines`; a slot silent past its deadline gets a failure Reply (and is killed by
    the restart that follows)."""
    pending = {self._slots[slot].conn: slot for slot in deadlines}
    replies = {}
    while pending:
      earliest = min(deadlines[slot] for slot in pending.values())
      for conn in wait(list(pending), timeout=max(0.0, earliest - time.monotonic())):
        slot = pending.pop(conn)
        replies[slot] = self._slots[slot].receive()
      now = time.monotonic()
      for conn, slot in list(pending.items()):
        if deadlines[slot] <= now:
          del pending[conn]
          replies[slot] = (False, f"{timeout_message} (worker hung; killed)")
    return replies
