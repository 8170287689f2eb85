"""Data: random-access sources of named fields and the sharded, resumable batching pipeline.

```python
source = jgen.data.load_source("digits", split="train", image_size=16, resize=True)
ds = jgen.data.make_dataset(source, global_batch_size=64, seed=0, random_flip=True)
spec = jgen.data.batch_spec(source.element_spec, 64)  # {'image': f32[64,16,16,1], 'label': ...}
for batch in jgen.data.iterate(ds, start_step):       # batch == ds[start_step + k]
  batch = jgen.data.shard_batch(batch, sharding)      # global jax.Arrays
```

Fields: ``image``, ``label``, ``attributes`` (multi-hot), ``source``/``target`` (paired
translation: ``paired:PATH``, ``derived:TRANSFORM:SPEC``), ``image_a``/``image_b`` (unpaired
domains: ``unpaired:PATH``), ``mask`` (inpainting); see ``load_source`` for every spec.
"""

from jgen.data.derived import DerivedPairSource
from jgen.data.load import load_source
from jgen.data.paired import PairedSource, UnpairedSource
from jgen.data.pipeline import (batch_spec, check_batch_size, iterate, make_dataset, read_batch,
                                shard_batch)
from jgen.data.sources import (ArraySource, CorruptImageError, DatasetUnavailableError,
                               ElementSpec, EmptySourceError, FolderSource, TfdsSource, read_idx)

__all__ = [
    "ArraySource",
    "CorruptImageError",
    "DatasetUnavailableError",
    "DerivedPairSource",
    "ElementSpec",
    "EmptySourceError",
    "FolderSource",
    "PairedSource",
    "TfdsSource",
    "UnpairedSource",
    "batch_spec",
    "check_batch_size",
    "iterate",
    "load_source",
    "make_dataset",
    "read_batch",
    "read_idx",
    "shard_batch",
]
