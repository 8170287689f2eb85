"""The train state on the mesh: its shapes with their shardings, jitted functions whose
outputs land on them, and the state a run starts from.

`abstract_state` is what restoring and the first compile need (`jax.eval_shape`, no compute);
`jit_onto` is how a state is built or stepped directly in its sharded form (big_vision's
pattern: ``init`` jitted with ``out_shardings``, never built on one device and moved);
`restore_or_init` gives the run's latest checkpoint or a fresh state with its ``init_from``
loads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import jax

from jgen.train import adapters
from jgen.train import init_from as init_from_lib
from jgen.train import mesh as mesh_lib
from jgen.train import rules as rules_lib
from jgen.train.checkpoint import Checkpointer
from jgen.train.method import Method
from jgen.train.state import TrainState

log = logging.getLogger("jgen")

__all__ = ["abstract_state", "init_fn", "jit_onto", "method_init", "restore_or_init",
           "trainable_rules", "with_shardings"]


def trainable_rules(config: Any) -> tuple:
  """``config.optim.rules`` with the LoRA adapters' rule added when ``config.lora.rank > 0``."""
  return adapters.rules(rules_lib.parse_rules(config.optim.get("rules", ())),
                        adapters.lora_from_config(config))


def method_init(method: Method, config: Any) -> Callable[[jax.Array, Any], TrainState]:
  """`method.init`, with LoRA adapters attached when ``config.lora.rank > 0``
  (`jgen.train.adapters.attach`; A drawn from a key folded from the init key)."""
  lora = adapters.lora_from_config(config)
  if lora is None:
    return method.init

  def init(rng, batch):
    return adapters.attach(method.init(rng, batch), lora, jax.random.fold_in(rng, 0x10BA))
  return init


def init_fn(method: Method, config: Any) -> Callable[[jax.Array, Any], TrainState]:
  """`method_init` followed by the config's trainable-parameter rules."""
  rules, init = trainable_rules(config), method_init(method, config)
  return lambda rng, batch: init(rng, batch).with_rules(rules)


def with_shardings(abstract: Any, mesh) -> Any:
  """ShapeDtypeStructs of `abstract` carrying their `mesh_lib.state_shardings`."""
  shardings = mesh_lib.state_shardings(mesh, abstract)
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      abstract, shardings)


def abstract_state(method: Method, config: Any, rng: jax.Array, batch, mesh) -> TrainState:
  """The train state's shapes (via eval_shape, no compute) with their shardings (replicated,
  or split over `fsdp`: `jgen.train.mesh`)."""
  return with_shardings(jax.eval_shape(init_fn(method, config), rng, batch), mesh)


def jit_onto(fn, abstract: Any, mesh, *, rest: int = 0, donate_argnums=()):
  """`jax.jit(fn)` whose output -- a tree like `abstract` (ShapeDtypeStructs with shardings),
  or with `rest > 0` a tuple of that tree and `rest` more outputs -- lands on `abstract`'s
  shardings (the `rest` outputs replicated).

  The jitted function returns the tree's leaves and the tree is rebuilt from `abstract`'s
  structure: out_shardings given as a tree would have to equal the output's static metadata,
  and a TrainState's optimizer closures (`per_network`) are new objects on every `init` call.
  """
  treedef = jax.tree.structure(abstract)
  leaves = [x.sharding for x in jax.tree.leaves(abstract)]
  repl = mesh_lib.replicated(mesh)

  def flat(*args):
    out = fn(*args)
    return (jax.tree.leaves(out[0]), *out[1:]) if rest else jax.tree.leaves(out)

  jitted = jax.jit(flat, donate_argnums=donate_argnums,
                   out_shardings=(leaves, *[repl] * rest) if rest else leaves)

  def call(*args):
    out = jitted(*args)
    if rest:
      return (jax.tree.unflatten(treedef, out[0]), *out[1:])
    return jax.tree.unflatten(treedef, out)

  return call


def restore_or_init(method: Method, config, mesh, ckpt: Checkpointer, first_batch, *,
                    workdir: str) -> TrainState:
  """The latest checkpoint of the run if there is one, else a fresh state.

  A fresh state is `init` jitted onto the state's shardings (big_vision's pattern), then the
  `config.init_from` loads put in (checked against the state's shapes first; passed to a jitted
  function as arguments, so never compile-time constants), then the rules applied (optimizer
  state and EMAs start from the loaded parameters). Restoring builds no state at all, only its
  shapes, and checks restored frozen arrays against the fingerprints the run recorded.
  """
  rng = jax.random.key(config.seed)
  abstract = abstract_state(method, config, rng, first_batch, mesh)
  if ckpt.latest_step() is not None:
    items = ckpt.restore(abstract.checkpoint_items())
    log.info("resumed from checkpoint step %d in %s", int(items["step"]), ckpt.directory)
    state = abstract.from_checkpoint_items(items)
    init_from_lib.verify_frozen(workdir, state.frozen)
    return state
  loads, steps = [], []
  for spec in init_from_lib.parse_init_from(config):
    tree, step = init_from_lib.load(spec)
    loads.append((spec, tree))
    steps.append(step)
    log.info("init_from %s: %s step %d (%s/%s) -> %s", spec.name, spec.workdir, step,
             spec.source, spec.subtree, spec.into)
  init_from_lib.check_loads(abstract, loads)
  rules = trainable_rules(config)
  init = method_init(method, config)
  fresh = with_shardings(jax.eval_shape(init, rng, first_batch), mesh)
  state = jit_onto(init, fresh, mesh)(rng, first_batch)

  def put(state, trees):
    placed = [(spec, tree) for (spec, _), tree in zip(loads, trees)]
    return init_from_lib.apply_loads(state, placed).with_rules(rules)

  trees = jax.device_put([tree for _, tree in loads], mesh_lib.replicated(mesh))
  state = jit_onto(put, abstract, mesh, donate_argnums=0)(state, trees)
  if loads and jax.process_index() == 0:
    init_from_lib.write_record(workdir, loads, steps)
  return state
