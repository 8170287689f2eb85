"""The one train loop and its machinery: state (+EMA), optimizers, mesh, checkpoints, logs."""

from jgen.train.checkpoint import CheckpointError, Checkpointer
from jgen.train.config import base_config
from jgen.train.loop import NonFiniteLossError, evaluate, sample, train
from jgen.train.mesh import batch_sharding, make_mesh, replicated
from jgen.train.method import Method, load_method
from jgen.train.optim import learning_rate_schedule, make_optimizer
from jgen.train.state import TrainState, ema_update
from jgen.train.writers import MetricWriter, image_grid, save_image_grid

__all__ = [
    "CheckpointError", "Checkpointer", "base_config", "NonFiniteLossError", "evaluate",
    "sample", "train", "batch_sharding", "make_mesh", "replicated", "Method", "load_method",
    "learning_rate_schedule", "make_optimizer", "TrainState", "ema_update", "MetricWriter",
    "image_grid", "save_image_grid",
]
