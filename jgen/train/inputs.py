"""What a run reads: the data source of ``config.data``, its dataset, and batch shapes.

`load_data` selects the examples (``data.train_labels``, ``data.train_examples`` on the
training split; evaluation always sees the whole split), then lays ``data.canvas`` of them side
by side (`jgen.data.canvas`: a two-object task, in every split); `make_dataset` batches them
for this process; `abstract_batch` and `inference_batch` give the global batch's shapes without
reading any data, from which the train state's shapes are built.
"""

from __future__ import annotations

from typing import Any

import jax

from jgen import data as jdata
from jgen.data.canvas import Canvas
from jgen.data.unpaired_derived import IndexSubset
from jgen.nn.clip_tokenizer import CLIPTokenizer
from jgen.train import mesh as mesh_lib
from jgen.train.method import Method, SamplesWithoutData

__all__ = ["abstract_batch", "inference_batch", "load_data", "make_dataset"]


def load_data(config: Any, *, split: str):
  """The source named by `config.data` for `split`, checked against the model's shape."""
  d = config.data
  tokenizer = None
  if "captioned:" in str(d.source) and "text" in config:  # also inside derived:T:captioned:
    tokenizer = CLIPTokenizer.from_spec(str(config.text.get("tokenizer", "open_clip")),
                                        pad_token=config.text.get("pad_token", "<|endoftext|>"))
  source = jdata.load_source(d.source, split=split, data_dir=d.data_dir,
                             image_size=d.image_size, channels=d.channels, resize=d.resize,
                             seed=config.seed, cache=d.get("cache", False),
                             skip_corrupt=d.get("skip_corrupt", False), tokenizer=tokenizer)
  if len(source) == 0:  # sources that index lazily (tfds) are checked here
    raise jdata.EmptySourceError(f"data source {d.source!r} split {split!r}")
  keep = {int(v) for v in str(d.get("train_labels", "") or "").replace(" ", "").split(",") if v}
  if keep and split == d.split:  # one class's images (DreamBooth's subject); evals see all
    if source.num_classes is None:
      raise ValueError(f"data.train_labels={d.train_labels!r} needs labels, and {d.source!r} "
                       "has none")
    index = [i for i in range(len(source)) if int(source[i]["label"]) in keep]
    if not index:
      raise ValueError(f"no example of {d.source!r} split {split!r} has a label in "
                       f"data.train_labels={d.train_labels!r}")
    source = IndexSubset(source, index)
  limit = int(d.get("train_examples", 0) or 0)
  if limit and split == d.split:  # small-data training (ADA's setting); evals see all
    if limit > len(source):
      raise ValueError(f"data.train_examples={limit} exceeds the {len(source)} examples of "
                       f"{d.source!r} split {split!r}: lower it, or 0 for all")
    source = IndexSubset(source, range(limit))
  count = int(d.get("canvas", 0) or 0)
  if count > 1:  # after the selection: a few subject images make canvases of the subject
    if d.random_flip:
      raise ValueError("data.canvas with data.random_flip: a flip swaps the examples the "
                       "canvas's label names left to right; set data.random_flip=False")
    source = Canvas(source, count, seed=config.seed)
  return source


def make_dataset(config: Any, source, *, seed: int):
  """This process's share of `source` in global batches of ``config.data.batch_size``."""
  return jdata.make_dataset(source, global_batch_size=config.data.batch_size, seed=seed,
                            random_flip=config.data.random_flip,
                            process_index=jax.process_index(),
                            process_count=jax.process_count())


def abstract_batch(config: Any, mesh, source) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes of a global batch, from the source's element spec (no data read)."""
  sharding = mesh_lib.batch_sharding(mesh)
  spec = jdata.batch_spec(source.element_spec, config.data.batch_size)
  return {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sharding) for k, v in spec.items()}


def inference_batch(method: Method, config: Any, mesh) -> dict[str, jax.ShapeDtypeStruct]:
  """The batch shapes a restored state's shapes are built from: the method's own
  (`SamplesWithoutData`: no data needed) or those of ``config.data``'s training split."""
  if isinstance(method, SamplesWithoutData):
    sharding = mesh_lib.batch_sharding(mesh)
    return {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sharding)
            for k, v in method.example_batch(config.data.batch_size).items()}
  return abstract_batch(config, mesh, load_data(config, split=config.data.split))
