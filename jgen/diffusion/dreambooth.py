"""DreamBooth (Ruiz et al. 2023) of a class-conditional DDPM: `config.method =
"diffusion.dreambooth"` (`jgen.diffusion.personalize`).

Fine-tunes the base (``init_from``) on a few subject images bound to the identifier label,
with the prior-preservation loss (``personalize.prior_weight``, lambda = 1) on class images the
frozen base generates for ``personalize.subject_class`` before training (cached in the
workdir). The whole model trains, or LoRA adapters with ``config.lora`` (then the rules must
keep ``identifier/.*`` trainable beside ``(.*/)?lora/.*``).
"""

from __future__ import annotations

from typing import Any

from jgen.diffusion.personalize import Personalized, make_personalized


def make_method(config: Any) -> Personalized:
  return make_personalized(config, textual_inversion=False)
