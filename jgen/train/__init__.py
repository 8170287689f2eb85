"""The train core: state (params, model_state, frozen, EMAs), the method contract and its
abilities, rules, init_from, optimizers, mesh, checkpoints, logs.

The run machinery that uses them -- the train loop (`jgen.train.loop`) and the sample and eval
modes (`jgen.train.inference`) -- is imported from its own modules, not from here.
"""

from jgen.train.checkpoint import CheckpointError, Checkpointer
from jgen.train.config import base_config
from jgen.train.init_from import InitFrom, InitFromError
from jgen.train.mesh import batch_sharding, make_mesh, replicated
from jgen.train.method import (Conditional, DiscreteCodes, Evaluates, Method, PathLengths,
                               Prepares, Reconstructs, SampleFigures, Samples,
                               SamplesWithFrozen, SamplesWithoutData, TagsSamples, Translates,
                               TranslatesByLabel, Truncates, load_method, sample_tag)
from jgen.train.optim import learning_rate_schedule, make_optimizer
from jgen.train.rules import parse_rules
from jgen.train.state import EmaSpec, PerNetwork, TrainState, ema_update, per_network
from jgen.train.stepper import NonFiniteLossError
from jgen.train.writers import MetricWriter, image_grid, save_image_grid

__all__ = [
    "CheckpointError", "Checkpointer", "base_config", "InitFrom", "InitFromError",
    "batch_sharding", "make_mesh", "replicated",
    "Method", "Conditional", "DiscreteCodes", "Evaluates", "PathLengths", "Prepares",
    "Reconstructs", "SampleFigures", "Samples", "SamplesWithFrozen", "SamplesWithoutData",
    "TagsSamples", "Translates", "TranslatesByLabel", "Truncates", "load_method", "sample_tag",
    "learning_rate_schedule", "make_optimizer", "parse_rules", "EmaSpec", "PerNetwork",
    "TrainState", "ema_update", "per_network", "NonFiniteLossError", "MetricWriter",
    "image_grid", "save_image_grid",
]
