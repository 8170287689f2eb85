"""Autoregressive models: generation one element at a time in a fixed order.

* `jgen.autoregressive.pixelcnn`: a gated PixelCNN on pixels with a discretized logistic
  mixture per pixel (`config.method = "autoregressive.pixelcnn"`);
* `jgen.autoregressive.code_transformer`: a transformer prior over a frozen VQ model's codes,
  sampled by `jgen.autoregressive.sampling` (cached and uncached).

Methods are loaded by module path (`jgen.train.load_method`); nothing is imported here.
"""
