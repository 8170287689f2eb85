"""Textual inversion (Gal et al. 2022) of a class-conditional DDPM: `config.method =
"diffusion.textual_inversion"` (`jgen.diffusion.personalize`).

Learns only the identifier's embedding (its offset from the class row, the coarse word it
starts from) on a few subject images; every other parameter is frozen by the rules
``(('identifier/.*', 1.0), ('.*', 'frozen'))``, which the config must set (checked). Sample the
new "token" with ``--config.sample.labels=K`` (K = the base's number of classes).
"""

from __future__ import annotations

from typing import Any

from jgen.diffusion.personalize import Personalized, make_personalized


def make_method(config: Any) -> Personalized:
  return make_personalized(config, textual_inversion=True)
