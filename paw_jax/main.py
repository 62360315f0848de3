"""Entry point: `python -m paw_jax.main --config=configs/default.py[:variant] [--config.a.b=value ...]`.

The config file's `get_config(arg)` returns the run's ConfigDict; any field can be overridden on the command line. The
whole config is converted and checked before anything is built: a user error (a missing file, an unknown or
misspelt field, a wrong type, a value out of range) exits with status 2 and one line naming it; `--debug` shows the
traceback. Library logs are at WARNING unless `--verbosity=0` (absl's INFO) or higher is given.

One of several processes that raises prints its traceback and exits at once with status 1 (`exit_now`): JAX's
shutdown barrier would hold it for minutes waiting for the others, which in turn fail within their own collective
timeout or are stopped by the launcher.
"""
from __future__ import annotations

import os
import sys
import traceback

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py[:variant]).",
                                          lock_config=True)
_DEBUG = flags.DEFINE_bool("debug", False, "Show the traceback of a configuration error.")


def _user_error(error: BaseException, several: bool = False) -> None:
  """One line on stderr and exit status 2 (the traceback only with --debug); `several`: one process of several."""
  debug = "--debug" in sys.argv or "--debug=true" in sys.argv
  if debug and not several:
    raise error
  message = "".join(traceback.format_exception(error)) if debug else f"paw_jax: {_one_line(error)}"
  if several:
    exit_now(2, message)
  print(message, file=sys.stderr)
  sys.exit(2)


def exit_now(status: int, message: str) -> None:
  """Prints `message` on stderr and ends the process without JAX's shutdown barrier (the other processes of a run
  may never reach it)."""
  import jax
  print(f"process {jax.process_index()}: {message}", file=sys.stderr, flush=True)
  sys.stdout.flush()
  os._exit(status)


def _chain(error: BaseException | None) -> list[BaseException]:
  chain = []
  while error is not None and len(chain) < 5:
    chain.append(error)
    error = error.__cause__ or error.__context__
  return chain


def _one_line(error: BaseException) -> str:
  """The most informative message along the exception's chain (config_flags wraps the useful one), on one line."""
  text = max((str(e) for e in _chain(error)), key=len).replace("\\n", " ").replace("\\'", "'")
  text = " ".join(text.split())
  return text[1:-1] if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"" else text


def _unknown_field(error: BaseException, argv: list[str]) -> BaseException:
  """config_flags reports an override of a field the config does not have as the bare field name (a KeyError):
  names the override instead; other errors pass through."""
  keys = [e.args[0].strip("'\"") for e in _chain(error)
          if isinstance(e, KeyError) and e.args and isinstance(e.args[0], str)]
  if not keys:
    return error
  for flag in (arg.split("=")[0] for arg in argv if arg.startswith("--config.")):
    path = flag.removeprefix("--config.").split(".")
    if keys[0] in path:
      parent = ".".join(path[:path.index(keys[0])])
      return ValueError(f"{flag}: the config has no field {keys[0]!r}{f' under {parent!r}' if parent else ''}; an "
                        "override can only change a field the config file sets")
  return error


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parsing, with a bad flag, config file or override reported as one line."""
  try:
    return flags.FLAGS(argv)
  except Exception as error:  # noqa: BLE001 -- config_flags raises several kinds; each is a user error here
    _user_error(_unknown_field(error, argv))


def main(argv) -> None:
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax and jax log INFO through absl: quiet unless asked
  from paw_jax.config import ConfigError, from_configdict  # after flag parsing: JAX loads only when a run is asked for
  try:
    config = from_configdict(_CONFIG.value)
  except (OSError, ConfigError) as error:
    _user_error(error)
  from paw_jax.distributed import maybe_initialize_distributed
  several = maybe_initialize_distributed()  # multi-process launches (launch/); a no-op on one process
  from paw_jax.train import train
  try:
    final = train(config)
  except ConfigError as error:  # found once the tokenizer or the workdir is read: before any model is built
    _user_error(error, several)
  except Exception:  # noqa: BLE001 -- any failure of one process of several
    if not several:
      raise
    exit_now(1, traceback.format_exc())
  if final:
    width = max(len(k) for k in final)
    print("\nfinal evaluation")
    for key in sorted(final):
      print(f"  {key:<{width}}  {final[key]:.3f}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
