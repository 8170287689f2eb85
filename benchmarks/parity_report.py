"""Max |difference| of every converted model against its PyTorch reference, from the fixtures.

  python benchmarks/parity_report.py        # no torch needed: the references are the fixtures

The fixtures (tests/convert/fixtures) hold tiny random diffusers / transformers models and the
reference libraries' own outputs, written by ``benchmarks/{unet,autoencoder,clip,controlnet,
sd_pipeline,sd_controlnet}_reference.py``. This prints, per check, the float32 max |difference|
between jgen's converted model and the reference output (the numbers README quotes), and the
largest reference value for scale. The tests assert the same comparisons against tolerances;
this report reuses their helpers so both read the fixtures one way.
"""

from __future__ import annotations

import os
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
sys.path.insert(0, ROOT)
FIXTURES = os.path.join(ROOT, "tests", "convert", "fixtures")

# pylint: disable=wrong-import-position,protected-access
from jgen.convert import pipeline  # noqa: E402
from jgen.convert.autoencoder import autoencoder_from_diffusers  # noqa: E402
from jgen.convert.clip import clip_text_from_transformers  # noqa: E402
from jgen.convert.controlnet import controlled_unet, controlnet_from_diffusers  # noqa: E402
from jgen.convert.unet import unet_from_diffusers  # noqa: E402
from jgen.train import run_record  # noqa: E402
from jgen.train.inference import restore_for_inference  # noqa: E402
from tests.convert import test_clip, test_unet  # noqa: E402
from tests.convert.test_controlnet import _folder as folder  # noqa: E402


def _row(name: str, got, want) -> None:
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  print(f"{name:52s} {np.abs(got - want).max():10.2e} {np.abs(want).max():8.3f}")


def unets() -> None:
  ref = np.load(os.path.join(FIXTURES, "unet.npz"))
  for name in ("ddpm", "ddpm_defaults", "sd15", "sd21"):
    module, variables = unet_from_diffusers(*test_unet._folder(name))
    _row(f"U-Net {name}", test_unet._apply(module, variables, ref, name),
         ref[f"{name}_out"])


def autoencoders() -> None:
  ref = np.load(os.path.join(FIXTURES, "autoencoder.npz"))
  ae, variables = autoencoder_from_diffusers(*folder("vae_kl"))
  for tag in ("square", "wide"):
    mean, logvar = ae.apply(variables, ref[f"x_{tag}"], method=ae.posterior)
    _row(f"AutoencoderKL posterior mean ({tag})", mean, ref[f"kl_mean_{tag}"])
    _row(f"AutoencoderKL log-variance ({tag})", logvar, ref[f"kl_logvar_{tag}"])
    _row(f"AutoencoderKL decoded image ({tag})", ae.apply(variables, mean, method=ae.decode),
         ref[f"kl_decoded_{tag}"])


def clips() -> None:
  ref = np.load(os.path.join(FIXTURES, "clip_text.npz"))
  for act in ("quick_gelu", "gelu"):
    model, variables = clip_text_from_transformers(*test_clip._folder(act))
    last, penultimate, pooled = test_clip._outputs(model, variables, ref["input_ids"])
    _row(f"CLIP text ({act}) last layer", last, ref[f"{act}_last_hidden_state"])
    _row(f"CLIP text ({act}) penultimate layer", penultimate, ref[f"{act}_penultimate"])
    _row(f"CLIP text ({act}) pooled", pooled, ref[f"{act}_pooled"])


def controlnets() -> None:
  ref = np.load(os.path.join(FIXTURES, "controlnet.npz"))
  unet = unet_from_diffusers(*folder("controlnet_unet"))
  control = controlnet_from_diffusers(*folder("controlnet"))
  model, variables = controlled_unet(*unet, *control)
  conditions = {"context": ref["context"], "hint": 2.0 * ref["hint"] - 1.0}
  for tag, scale in (("10", 1.0), ("05", 0.5)):
    out = model.apply(variables, ref["latents"], ref["timesteps"], conditions, train=False,
                      conditioning_scale=scale)
    _row(f"ControlNet + U-Net output, scale {scale}", out, ref[f"out_{tag}"])


def pipelines() -> None:
  with tempfile.TemporaryDirectory() as tmp:
    ref = np.load(os.path.join(FIXTURES, "sd_pipeline.npz"))
    workdir = os.path.join(tmp, "sd")
    pipeline.convert(os.path.join(FIXTURES, "sd_pipeline"), workdir)
    config = run_record.latest_config(workdir)
    config.sample.steps = 2
    method, _, state = restore_for_inference(config, workdir)
    ids = jnp.asarray(ref["ids"])
    _row("StableDiffusionPipeline text context", method.context(state.frozen, ids),
         ref["context"])
    images = method.sample_tokens(state, jax.random.key(0), ids[:2], ids[2:], guidance_scale=5.0,
                                  x_T=jnp.asarray(ref["latents"].transpose(0, 2, 3, 1)))
    _row("StableDiffusionPipeline images (2 DDIM steps, w = 5)", (np.asarray(images) + 1) / 2,
         ref["images"])


def main() -> None:
  print(f"{'check (float32)':52s} {'max|diff|':>10s} {'max|ref|':>8s}")
  for part in (unets, autoencoders, clips, controlnets, pipelines):
    part()


if __name__ == "__main__":
  main()
