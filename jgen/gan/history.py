"""The image history buffer (Shrivastava et al. 2017; CycleGAN's `ImagePool`) as pure JAX.

A discriminator trained only on the generator's latest fakes can forget the fakes it rejected
before, and the pair oscillates; the history buffer shows it a mix of new fakes and fakes of
earlier steps instead. The buffer is a pytree `{"images": [S, H, W, C], "count": int32 []}`
(S the buffer size, 50 in CycleGAN) kept in `TrainState.model_state`, so it is checkpointed
and restored with the run.

The rule of the reference implementation (`util/image_pool.py` of pytorch-CycleGAN-and-pix2pix),
applied to the images of a batch one after another, in order:

* while the buffer is not full (count < S): store the image at slot `count`, count += 1, and
  give the image itself to the discriminator;
* when it is full: with probability 1/2 (`swap`) give the image stored at a slot chosen
  uniformly in 0..S-1 (`slot`) and store the new image there; else give the new image.

So a batch larger than the space left fills the buffer with its first images and treats the
rest by the full-buffer rule, and an image stored by an earlier element of the same batch may
come back out for a later one. The random draws are explicit (`history_draws`) so that a
reference can replay them: `query(h, x, rng) == query_with_draws(h, x, *history_draws(rng,
len(x), S))`. A draw is made for every image, also for those that go in while filling (their
draws are unused), so the draws have fixed shapes.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

__all__ = ["history_draws", "init_history", "query", "query_with_draws"]

History = dict[str, jax.Array]


def init_history(size: int, image_shape: Sequence[int], dtype=jnp.float32) -> History:
  """An empty buffer of `size` images of shape `image_shape` ([H, W, C]).

  Raises:
    ValueError: `size` < 1 (without a buffer, give the discriminator the new fakes directly).
  """
  if size < 1:
    raise ValueError(f"a history buffer needs size >= 1, got {size}; with no buffer, train "
                     "the discriminator on the latest fakes directly")
  return {"images": jnp.zeros((size, *image_shape), dtype), "count": jnp.zeros((), jnp.int32)}


def history_draws(rng: jax.Array, n: int, size: int) -> tuple[jax.Array, jax.Array]:
  """The draws of one query of `n` images into a buffer of `size`.

  Returns:
    `swap`: bool [n], each True with probability 1/2 (return a stored image); `slot`: int32
    [n], uniform in 0..size-1 (which stored image).
  """
  swap_rng, slot_rng = jax.random.split(rng)
  swap = jax.random.bernoulli(swap_rng, 0.5, (n,))
  slot = jax.random.randint(slot_rng, (n,), 0, size, jnp.int32)
  return swap, slot


def query_with_draws(history: History, images: jax.Array, swap: jax.Array, slot: jax.Array
                     ) -> tuple[jax.Array, History]:
  """The buffer's rule (module docstring) with given draws, one image after another.

  Args:
    history: `{"images": [S, H, W, C], "count": int32 []}`.
    images: the new fakes [B, H, W, C].
    swap: bool [B]: for image i of a full buffer, return a stored image.
    slot: int32 [B] in 0..S-1: which stored image.

  Returns:
    `(images for the discriminator [B, H, W, C], the new buffer)`.
  """
  size = history["images"].shape[0]
  if history["images"].shape[1:] != images.shape[1:]:
    raise ValueError(f"the history buffer holds images {history['images'].shape[1:]}, the "
                     f"query has {images.shape[1:]}")
  images = images.astype(history["images"].dtype)

  def one(carry, inputs):
    stored, count = carry
    image, swap_i, slot_i = inputs
    filling = count < size
    # Filling: write at `count`. Full: write at `slot` if swapping, else leave the buffer as is.
    write = filling | swap_i
    at = jnp.where(filling, count, slot_i)
    old = jax.lax.dynamic_index_in_dim(stored, at, keepdims=False)
    out = jnp.where(~filling & swap_i, old, image)
    stored = jax.lax.dynamic_update_index_in_dim(stored, jnp.where(write, image, old), at, 0)
    return (stored, jnp.minimum(count + 1, size)), out

  (stored, count), out = jax.lax.scan(
      one, (history["images"], history["count"]), (images, swap, slot.astype(jnp.int32)))
  return out, {"images": stored, "count": count}


def query(history: History, images: jax.Array, rng: jax.Array) -> tuple[jax.Array, History]:
  """`query_with_draws` with the draws of `history_draws(rng, B, S)`.

  Returns:
    `(images for the discriminator [B, H, W, C], the new buffer)`; the images carry no
    gradient to the generator only if the caller stops it (the discriminator's update does).
  """
  swap, slot = history_draws(rng, images.shape[0], history["images"].shape[0])
  return query_with_draws(history, images, swap, slot)
