"""LoRA for any method of the loop: adapters in the stored parameters, a view for the model.

With ``config.lora.rank > 0`` the loop turns the state that ``method.init`` returns into a LoRA
state (`attach`):

* the stored ``params`` keep the method's tree and gain the adapters (`jgen.nn.lora`) in a
  ``lora`` subtree: at the root for one network, inside each network (``generator/lora``,
  ``discriminator/lora``) when the method trains networks side by side (`PerNetwork`), so each
  network's optimizer finds its own adapters;
* ``state.view`` is the `Lora` (its `Lora.view`; before the method's own view, if it has one): every
  loss, gradient and EMA tree the method sees is the base with W + (alpha / r) A B folded in
  (`TrainState.grad`, `model_params`, `ema_params`), so no method changes and no module is forked;
* the rules (`rules`) train the adapters only unless ``optim.rules`` says otherwise, so the
  optimizer state and the EMAs hold adapters only. ``init_from`` puts the pretrained base in
  (its paths are the method's; the adapters keep their initial values, B = 0).

Full checkpoints still store the base (a resume needs nothing else); `AdapterCheckpoints`
also writes the adapters alone (raw and EMA) beside a ``lora.json`` of the settings, which is
what one shares. ``state.ema_params`` is the merged model for export; `Lora.unmerge` reverses it.
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any

import jax
from etils import epath

from jgen.nn.lora import RULE, SUBTREE, Lora, num_params
from jgen.train import rules as rules_lib
from jgen.train.checkpoint import Checkpointer
from jgen.train.state import ChainedView, PerNetwork, TrainState

log = logging.getLogger("jgen")

__all__ = ["AdapterCheckpoints", "adapters_of", "attach", "load_adapters", "lora_from_config",
           "rules"]

SETTINGS = "lora.json"


def lora_from_config(config: Any) -> Lora | None:
  """The `Lora` of ``config.lora`` (None when absent or rank 0).

  Raises:
    ValueError: a rank without targets, or a bad rank, regex or init.
  """
  block = config.get("lora") if hasattr(config, "get") else None
  if not block or not int(block.get("rank", 0) or 0):
    return None
  if not block.get("targets"):
    raise ValueError("config.lora.rank is set but config.lora.targets is empty: give a regex "
                     "over module paths, e.g. --config.lora.targets='conv|attn.*/(q|k|v)$'")
  alpha = block.get("alpha")
  return Lora(rank=int(block.rank), targets=str(block.targets),
              alpha=None if alpha is None else float(alpha), init=block.get("init", "kaiming"))


def rules(user_rules: tuple, lora: Lora | None) -> tuple:
  """The run's trainable-parameter rules: the user's, or with LoRA and none given, adapters
  train and everything else is frozen."""
  if lora is None or user_rules:
    return user_rules
  return rules_lib.parse_rules(((RULE, 1.0), (".*", rules_lib.FROZEN)))


def attach(state: TrainState, lora: Lora, rng: jax.Array) -> TrainState:
  """`state` with adapters (B = 0) in its stored parameters and `lora.view` as its view.

  Raises:
    ValueError: the parameters already hold a ``lora`` key, or the targets match no kernel.
  """
  params = dict(state.params)
  if SUBTREE in params:
    raise ValueError(f"the method's parameters already have a {SUBTREE!r} key; LoRA keeps its "
                     "adapters there")
  adapters = lora.init_adapters(rng, params)
  if isinstance(state.tx, PerNetwork):
    names = [name for name, _ in state.tx.txs]
    stray = sorted(set(adapters) - set(names))
    if stray:
      raise ValueError(f"LoRA targets under {stray}, which no network's optimizer updates "
                       f"(networks: {names}); narrow config.lora.targets")
    for name, tree in adapters.items():
      params[name] = {**params[name], SUBTREE: tree}
  else:
    params[SUBTREE] = adapters
  log.info("LoRA rank %d (alpha %s) on %d kernels matching %r: %d adapter parameters",
           lora.rank, lora.alpha if lora.alpha is not None else lora.rank,
           len(lora.paths(state.params)), lora.targets, num_params(adapters))
  view = lora if state.view is None else ChainedView((lora, state.view))
  return state.replace(params=params, view=view)


def adapters_of(tree: Any) -> dict[str, Any]:
  """The ``lora`` subtrees of a stored parameter tree (or of an EMA of one), at their paths."""
  return rules_lib.select(tree, lambda p: re.fullmatch(RULE, p) is not None)


class AdapterCheckpoints:
  """Adapter-only checkpoints in ``workdir/adapters``: ``{"params": raw, "ema": averaged}``
  adapters (Orbax, the same step numbers as the full checkpoints) and ``lora.json``."""

  def __init__(self, workdir: str, lora: Lora, *, max_to_keep: int, async_save: bool):
    self.lora = lora
    self.directory = os.path.join(workdir, "adapters")
    self._ckpt = Checkpointer(self.directory, max_to_keep=max_to_keep, async_save=async_save)
    if jax.process_index() == 0:
      settings = {"rank": lora.rank, "targets": lora.targets, "alpha": lora.alpha,
                  "init": lora.init}
      (epath.Path(self.directory) / SETTINGS).write_text(json.dumps(settings, indent=1))

  def save(self, step: int, state: TrainState) -> None:
    """Saves the adapters of `state` (and of its EMAs) as step `step`; logs their size."""
    items = {"params": adapters_of(state.params)}
    items.update({name: adapters_of(ema) for name, ema in state.emas.items()})
    self._ckpt.save(step, items)
    count = num_params(items["params"])
    log.info("adapter checkpoint step %d: %d parameters, %.1f KiB of float32 per copy (%s)",
             step, count, 4 * count / 1024, self.directory)

  def wait(self) -> None:
    self._ckpt.wait()

  def close(self) -> None:
    self._ckpt.close()


def load_adapters(directory: str, *, step: int | None = None, which: str = "ema"
                  ) -> tuple[Lora, dict[str, Any]]:
  """(the `Lora`, adapters) of an adapter checkpoint directory (``workdir/adapters``).

  The adapters keep their stored paths (``lora/...`` or ``<network>/lora/...``): put them into
  a base tree with `jgen.train.rules.merge` and apply `Lora.view`, or fold them in with
  ``lora.merge(base, tree["lora"])``.

  Args:
    directory: the ``adapters`` directory of a LoRA run.
    step: which checkpoint (None: the latest).
    which: "params" (the raw adapters) or an EMA name ("ema", what the run sampled with).

  Raises:
    ValueError: no settings file, or `which` is not stored.
  """
  path = epath.Path(directory)
  if not (path / SETTINGS).exists():
    raise ValueError(f"{directory} holds no {SETTINGS}: point at the 'adapters' directory of "
                     "a run trained with config.lora.rank > 0")
  settings = json.loads((path / SETTINGS).read_text())
  lora = Lora(rank=settings["rank"], targets=settings["targets"], alpha=settings["alpha"],
              init=settings["init"])
  with Checkpointer(directory, async_save=False) as ckpt:
    items = ckpt.restore(None, step=step)
  if which not in items:
    raise ValueError(f"the adapter checkpoint in {directory} stores {sorted(items)}, not "
                     f"{which!r}")
  return lora, dict(items[which])
