"""The one train loop and its machinery: state (params, model_state, frozen, EMAs), rules,
init_from, optimizers, mesh, checkpoints, logs."""

from jgen.train.checkpoint import CheckpointError, Checkpointer
from jgen.train.config import base_config
from jgen.train.init_from import InitFrom, InitFromError
from jgen.train.loop import NonFiniteLossError, evaluate, sample, train
from jgen.train.mesh import batch_sharding, make_mesh, replicated
from jgen.train.method import (Conditional, Evaluates, Method, Reconstructs, TagsSamples,
                               load_method)
from jgen.train.optim import learning_rate_schedule, make_optimizer
from jgen.train.rules import parse_rules
from jgen.train.state import EmaSpec, PerNetwork, TrainState, ema_update, per_network
from jgen.train.writers import MetricWriter, image_grid, save_image_grid

__all__ = [
    "CheckpointError", "Checkpointer", "base_config", "InitFrom", "InitFromError",
    "NonFiniteLossError", "evaluate", "sample", "train", "batch_sharding", "make_mesh",
    "replicated", "Conditional", "Evaluates", "Method", "Reconstructs", "TagsSamples", "load_method",
    "learning_rate_schedule", "make_optimizer", "parse_rules", "EmaSpec", "PerNetwork",
    "TrainState", "ema_update", "per_network", "MetricWriter", "image_grid", "save_image_grid",
]
