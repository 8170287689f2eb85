"""Data: random-access image sources and the sharded, resumable batching pipeline.

```python
source = jgen.data.load_source("digits", split="train", image_size=16, resize=True)
ds = jgen.data.make_dataset(source, global_batch_size=64, seed=0, random_flip=True)
for batch in jgen.data.iterate(ds, start_step):       # batch == ds[start_step + k]
  batch = jgen.data.shard_batch(batch, sharding)      # global jax.Arrays
```
"""

from jgen.data.pipeline import check_batch_size, iterate, make_dataset, shard_batch
from jgen.data.sources import (ArraySource, DatasetUnavailableError, TfdsSource, load_source,
                               read_idx)

__all__ = [
    "ArraySource",
    "DatasetUnavailableError",
    "TfdsSource",
    "check_batch_size",
    "iterate",
    "load_source",
    "make_dataset",
    "read_idx",
    "shard_batch",
]
