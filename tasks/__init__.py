"""One module per benchmark; `configs/task/<name>.yaml` names the module through its `name` (a config in a
subfolder, e.g. `task=longbench/multi_news`, named `longbench/multi_news`, uses its folder's module)."""
from __future__ import annotations

import importlib

from glm_eval.config import TaskConfig
from glm_eval.task import Task


def load_task(cfg: TaskConfig) -> Task:
    module = importlib.import_module(f"tasks.{cfg.name.split('/')[0]}")
    return module.TASK(cfg)
