"""The README's 'use the pieces in your own code' example runs as written."""

import re

import numpy as np

from tests.conftest import REPO


def _example() -> str:
  text = (REPO / "README.md").read_text()
  match = re.search(r"<!-- example:compose -->\s*```python\n(.*?)```", text, re.S)
  assert match, "README.md lost its '<!-- example:compose -->' python block"
  return match.group(1)


def test_readme_compose_example_runs():
  namespace = {}
  exec(compile(_example(), "README.md", "exec"), namespace)  # pylint: disable=exec-used
  images, loss = namespace["images"], namespace["loss"]
  assert images.shape == (4, 16, 16, 1)
  assert np.isfinite(np.asarray(images)).all() and np.isfinite(float(loss))
  assert np.abs(np.asarray(images)).max() <= 1.0
  # LoRA at initialisation: the same loss, and a gradient for the adapters' B only.
  np.testing.assert_allclose(float(namespace["lora_loss0"]), float(loss), rtol=1e-5)
  grads = namespace["jgen"].nn.lora.flat(namespace["adapter_grads"])
  assert all(np.abs(np.asarray(g)).max() == 0 for k, g in grads.items() if k.endswith("lora_a"))
  assert any(np.abs(np.asarray(g)).max() > 0 for k, g in grads.items() if k.endswith("lora_b"))
