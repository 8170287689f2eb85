"""The method contract of the one train loop, and how a config names a method.

A method (DDPM, WGAN-GP, VQ-VAE, Glow ...) is a small object with pure functions:

* ``init(rng, batch) -> TrainState``
* ``train_step(state, batch, rng) -> (state, metrics)``
* ``sample(state, rng, n) -> images`` in [-1, 1], ``[n, H, W, C]``
Optional members are declared as protocols of their own, which the loop checks with
``isinstance`` (no ``hasattr`` probing):

* `Evaluates`: ``evaluate(state, batch, rng) -> metrics`` (held-out scalars);
* `TagsSamples`: ``sample_tag`` (a string naming the sampler settings in file names);
* `Conditional`: ``num_classes`` and ``sample_conditional(state, rng, conditions, n)``, where
  ``conditions`` follows `jgen.nn.conditioning` (``{"label": int32 [n], ...}``); the loop takes
  the labels from ``config.sample.labels`` and writes them into the samples ``.npz``;
* `Reconstructs`: ``reconstruct_images(state, images) -> images`` (reconstruction FID);
* `DiscreteCodes`: a first stage with a codebook (VQ-VAE, VQ-GAN): ``num_codes``,
  ``codes_subtree`` and ``encode_indices`` / ``decode_indices``, what a prior over its codes
  (`jgen.autoregressive.code_transformer`) loads frozen and calls;
* `Translates`: an image-to-image method (pix2pix, CycleGAN, StarGAN):
  ``translation_inputs(batch)`` and ``translate(state, rng, source)``; the loop's sample and
  eval modes then translate held-out (or the user's) images instead of sampling from noise;
* `PathLengths`: ``path_length_fns(state)``, the latent paths of perceptual path length
  (`jgen.metrics.ppl`; the "ppl" metric of ``--mode=eval``);
* `SampleFigures`: ``sample_figures(state, rng)``, figures beside the sample grid that
  ``--mode=sample`` writes (StyleGAN2's style-mixing grid);
* `Truncates`: ``truncation`` and ``with_truncation(psi)``; ``--mode=eval`` scores the
  samples at psi = 1 as well when the configured psi is another;
* `SamplesWithFrozen`: ``sample_frozen``, arrays the sampler needs beyond the training state
  (a guiding classifier loaded from another run); the loop's jitted sampler receives them as
  entries of ``state.frozen`` (arguments, never compile-time constants) and never checkpoints
  them.

The loop in `jgen.train.loop` owns everything else. A config names the method by module path
(``config.method = "diffusion.ddpm"``); the module defines ``make_method(config)``.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol, runtime_checkable

import jax

from jgen.train.state import TrainState


class Method(Protocol):
  """What the loop needs from a method (see the module docstring)."""

  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> TrainState:
    ...

  def train_step(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
                 ) -> tuple[TrainState, dict[str, jax.Array]]:
    ...

  def sample(self, state: TrainState, rng: jax.Array, n: int) -> jax.Array:
    ...


@runtime_checkable
class Evaluates(Protocol):
  """A method with held-out metrics (`--mode=eval`, `train.eval_every`)."""

  def evaluate(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
               ) -> dict[str, jax.Array]:
    ...


@runtime_checkable
class TagsSamples(Protocol):
  """A method that names its sampler settings in sample file names."""

  @property
  def sample_tag(self) -> str:
    ...


@runtime_checkable
class Conditional(Protocol):
  """A class-conditional method: samples for given conditions (`jgen.nn.conditioning`)."""

  num_classes: int

  def sample_conditional(self, state: TrainState, rng: jax.Array,
                         conditions: dict[str, jax.Array], n: int) -> jax.Array:
    ...


@runtime_checkable
class Reconstructs(Protocol):
  """An autoencoder: reconstructions of given images (reconstruction FID, `rfid`)."""

  def reconstruct_images(self, state: TrainState, images: jax.Array) -> jax.Array:
    ...


@runtime_checkable
class DiscreteCodes(Protocol):
  """A first stage whose latents are code indices (VQ-VAE, VQ-GAN).

  ``params`` of both functions is the ``codes_subtree`` of the run's parameters ('' = all of
  them, "autoencoder" for a VQ-GAN, whose critic a prior never needs).
  """

  num_codes: int

  @property
  def codes_subtree(self) -> str:
    ...

  def encode_indices(self, params: Any, images: jax.Array) -> jax.Array:
    """int32 code indices [B, r, r] of images in [-1, 1]."""
    ...

  def decode_indices(self, params: Any, indices: jax.Array) -> jax.Array:
    """Images [B, H, W, C] (unclipped) of code indices [B, r, r]."""
    ...


@runtime_checkable
class Translates(Protocol):
  """An image-to-image method: source images in, D translations of each out.

  D is the number of translations per source (`translation_names`): 1 for pix2pix and
  CycleGAN (one direction), the target domains for StarGAN. Images are float in [-1, 1].
  """

  @property
  def translation_names(self) -> tuple[str, ...]:
    """The D translations' names (file names, table rows): ("B",), ("inverted", ...)."""
    ...

  def translation_inputs(self, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """What a held-out batch of the method's data gives: ``source`` [B, H, W, C]; when known
    ``target`` [B, D, H, W, C'] (the true translation of each source); when present ``label``
    [B] (the content class a translation must keep, e.g. the digit)."""
    ...

  def translate(self, state: TrainState, rng: jax.Array, source: jax.Array) -> jax.Array:
    """[B, H, W, C] -> [B, D, H, W, C']: every translation of every source (EMA generator)."""
    ...


@runtime_checkable
class SamplesWithFrozen(Protocol):
  """A method whose sampler reads extra frozen arrays: ``{name: tree}`` put in state.frozen."""

  @property
  def sample_frozen(self) -> dict[str, Any]:
    ...


@runtime_checkable
class PathLengths(Protocol):
  """A method with latent paths: `jgen.metrics.ppl.path_length_distances` keyword arguments
  ``generator_fn`` (latents -> images in [-1, 1], the EMA generator), ``space`` ("z" or "w"),
  ``latent_shape``, and ``mapping_fn`` (space "w") or ``z_radius`` (space "z")."""

  def path_length_fns(self, state: TrainState) -> dict[str, Any]:
    ...


@runtime_checkable
class SampleFigures(Protocol):
  """A method with figures of its own: ``{name: (images [N, H, W, C] in [-1, 1], columns)}``,
  written as ``samples/<tag>_<name>.png`` grids."""

  def sample_figures(self, state: TrainState, rng: jax.Array
                     ) -> dict[str, tuple[jax.Array, int]]:
    ...


@runtime_checkable
class Truncates(Protocol):
  """A method sampling at a truncation psi (StyleGAN's truncation trick)."""

  truncation: float

  def with_truncation(self, psi: float) -> Any:
    ...


def sample_tag(method: Any) -> str:
  """The method's `sample_tag`, or "samples"."""
  return method.sample_tag if isinstance(method, TagsSamples) else "samples"


def load_method(config: Any) -> Method:
  """Imports the module named by `config.method` and returns its `make_method(config)`.

  `config.method` is a path relative to the `jgen` package ("diffusion.ddpm") or, for methods
  that live in a researcher's own package, a full module path ("mylab.methods.my_gan").

  Raises:
    ValueError: no such module, or it defines no `make_method`.
  """
  name = config.method
  module = None
  for candidate in (f"jgen.{name}", name):
    try:
      module = importlib.import_module(candidate)
      break
    except ModuleNotFoundError as e:
      if e.name is None or not candidate.startswith(e.name):
        raise  # the module exists but one of its own imports is missing
  if module is None:
    raise ValueError(
        f"unknown method {name!r}: neither jgen.{name} nor {name} is an importable module. "
        "Set --config.method to a module under jgen/ that defines make_method(config), "
        "e.g. 'diffusion.ddpm'.")
  if not hasattr(module, "make_method"):
    raise ValueError(f"method module {module.__name__} defines no make_method(config)")
  return module.make_method(config)
