"""Published checkpoints, where a user has them: ``JGEN_REAL_CHECKPOINTS=DIR`` converts every
diffusers folder and single file in DIR and samples each converted model (skipped otherwise).

  JGEN_REAL_CHECKPOINTS=~/models python -m pytest tests/convert/test_real_checkpoints.py -s

DIR may hold e.g. ``stable-diffusion-v1-5/`` (a diffusers folder), ``v1-5-pruned-emaonly.
safetensors``, ``ddpm-cifar10-32/``. A name containing ``768-v`` or ``v-pred`` converts with
``prediction="v"`` (SD 2.x 768 single files cannot tell). Each conversion is checked by
sampling one image with 2 DDIM steps (SD at 256 px to keep it minutes on a CPU): finite pixels
that are not one flat colour.
"""

import os

import jax
import numpy as np
import pytest

from jgen.convert import pipeline
from jgen.train import run_record
from jgen.train.inference import restore_for_inference

ROOT = os.environ.get("JGEN_REAL_CHECKPOINTS", "")
ENTRIES = sorted(os.listdir(os.path.expanduser(ROOT))) if ROOT and os.path.isdir(
    os.path.expanduser(ROOT)) else []

pytestmark = pytest.mark.skipif(not ENTRIES, reason="set JGEN_REAL_CHECKPOINTS to a folder of "
                                "published checkpoints to convert and sample them")


def _convertible(name: str) -> bool:
  path = os.path.join(os.path.expanduser(ROOT), name)
  try:
    pipeline.detect_format(path)
  except (ValueError, FileNotFoundError):
    return False
  return True


@pytest.mark.parametrize("name", [e for e in ENTRIES if _convertible(e)])
def test_convert_and_sample(name, tmp_path):
  src = os.path.join(os.path.expanduser(ROOT), name)
  prediction = "v" if ("768-v" in name or "v-pred" in name) else None
  workdir = str(tmp_path / "run")
  result = pipeline.convert(src, workdir, prediction=prediction)
  config = run_record.latest_config(workdir)
  config.sample.steps = 2
  if result["method"] == "diffusion.stable_diffusion":
    config.data.image_size = 256
    config.sample.prompts = "a photo of an astronaut riding a horse"
  method, _, state = restore_for_inference(config, workdir)
  images = np.asarray(jax.jit(method.sample, static_argnums=2)(state, jax.random.key(0), 1))
  assert np.isfinite(images).all() and float(images.std()) > 1e-3
  assert np.abs(images).max() <= 1.0 + 1e-6
