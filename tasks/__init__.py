"""One module per benchmark; `configs/task/<name>.yaml` names the module through its `name`."""
from __future__ import annotations

import importlib

from glm_eval.config import TaskConfig
from glm_eval.task import Task


def load_task(cfg: TaskConfig) -> Task:
    module = importlib.import_module(f"tasks.{cfg.name}")
    return module.TASK(cfg)
