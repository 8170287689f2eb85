"""Optimizers and learning-rate schedules built from a config at the boundary."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optax

from jgen.train.config import base_config

_OPTIMIZERS = {
    "adam": lambda lr, c: optax.adam(lr, b1=c["b1"], b2=c["b2"], eps=c["eps"]),
    "adamw": lambda lr, c: optax.adamw(lr, b1=c["b1"], b2=c["b2"], eps=c["eps"],
                                       weight_decay=c["weight_decay"]),
    "rmsprop": lambda lr, c: optax.rmsprop(lr, decay=c["decay"], eps=c["eps"]),
    "sgd": lambda lr, c: optax.sgd(lr, momentum=c["momentum"] or None),
}
OPTIMIZERS = tuple(_OPTIMIZERS)  # the names optim.name accepts


SCHEDULES = ("constant", "cosine", "linear", "exponential")


def learning_rate_schedule(*, lr: float, warmup_steps: int = 0, schedule: str = "constant",
                           total_steps: int | None = None, decay_from: float = 0.5,
                           decay_rate: float = 0.999995) -> optax.Schedule:
  """Linear warm-up from 0 to `lr`, then one of:

  * 'constant': `lr`;
  * 'cosine': cosine decay to 0 at `total_steps`;
  * 'linear': `lr` until the fraction `decay_from` of the steps after warm-up, then a linear
    decay to 0 at `total_steps` (pix2pix / CycleGAN's ``--lr_policy linear``: 100 epochs
    constant, 100 decaying is `decay_from` = 0.5; StarGAN's decay over the last 100k of 200k
    iterations likewise);
  * 'exponential': `lr * decay_rate ** t`, t the steps after warm-up (PixelCNN++: 0.999995
    per step).
  """
  if schedule not in SCHEDULES:
    raise ValueError(f"unknown learning-rate schedule {schedule!r}; use one of {SCHEDULES}")
  if (schedule not in ("constant", "exponential")
      and (not total_steps or total_steps <= warmup_steps)):
    raise ValueError(f"{schedule} schedule needs total_steps > warmup_steps, got "
                     f"total_steps={total_steps}, warmup_steps={warmup_steps}")
  if schedule == "constant":
    main = optax.constant_schedule(lr)
  elif schedule == "cosine":
    main = optax.cosine_decay_schedule(lr, total_steps - warmup_steps)
  elif schedule == "exponential":
    if not 0.0 < decay_rate <= 1.0:
      raise ValueError(f"decay_rate must lie in (0, 1], got {decay_rate}")
    main = optax.exponential_decay(lr, transition_steps=1, decay_rate=decay_rate)
  else:
    if not 0.0 <= decay_from < 1.0:
      raise ValueError(f"decay_from must lie in [0, 1), got {decay_from}")
    span = total_steps - warmup_steps
    hold = int(round(decay_from * span))
    main = optax.join_schedules(
        [optax.constant_schedule(lr), optax.linear_schedule(lr, 0.0, span - hold)], [hold])
  if warmup_steps <= 0:
    return main
  warm = optax.linear_schedule(0.0, lr, warmup_steps)
  return optax.join_schedules([warm, main], [warmup_steps])


def make_optimizer(optim: Mapping[str, Any], *, total_steps: int | None = None
                   ) -> optax.GradientTransformation:
  """Builds `clip_by_global_norm -> optimizer(schedule)` from an optimizer config.

  Args:
    optim: mapping with `name` (adam, adamw, rmsprop, sgd), `lr`, and optionally `warmup_steps`,
      `schedule` ('constant', 'cosine', 'linear' with `decay_from`, 'exponential' with
      `decay_rate`), `grad_clip_norm` (0 or None: no clipping) and the optimizer's own fields
      (b1, b2, eps, weight_decay, decay, momentum); a field it leaves out is
      `base_config().optim`'s, the one place these defaults are written.
    total_steps: length of the run, for decaying schedules.
  """
  optim = {**base_config().optim.to_dict(), **dict(optim)}
  name = optim["name"]
  if name not in _OPTIMIZERS:
    raise ValueError(f"unknown optimizer {name!r}; choose one of {sorted(_OPTIMIZERS)}")
  lr = learning_rate_schedule(lr=optim["lr"], warmup_steps=optim["warmup_steps"],
                              schedule=optim["schedule"], total_steps=total_steps,
                              decay_from=optim["decay_from"], decay_rate=optim["decay_rate"])
  tx = _OPTIMIZERS[name](lr, optim)
  clip = optim["grad_clip_norm"]
  if clip:
    tx = optax.chain(optax.clip_by_global_norm(clip), tx)
  return tx
