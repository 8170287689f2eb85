"""The one table of compute dtypes that configs may name.

float16 is not offered: it needs loss scaling to train (gradients underflow in half precision)
and jgen does not scale losses; bfloat16 has float32's exponent range and needs none.
"""

from __future__ import annotations

import jax.numpy as jnp

__all__ = ["COMPUTE_DTYPES", "compute_dtype"]

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str):
  """The jnp dtype named by a config's `model.dtype`.

  Raises:
    ValueError: an unknown name, or float16 (which would need loss scaling).
  """
  if name not in COMPUTE_DTYPES:
    hint = (" (float16 needs loss scaling, which jgen does not do: use bfloat16)"
            if name == "float16" else "")
    raise ValueError(f"unknown compute dtype {name!r}{hint}; set --config.model.dtype to one "
                     f"of {sorted(COMPUTE_DTYPES)}")
  return COMPUTE_DTYPES[name]
