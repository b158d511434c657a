"""One module per benchmark; `configs/task/<name>.yaml` names the module through its `name` (a config in a
subfolder, e.g. `task=longbench/multi_news`, named `longbench/multi_news`, uses its folder's module)."""
from __future__ import annotations

import importlib

from glm_eval.core.config import TaskConfig
from glm_eval.core.errors import UserError
from glm_eval.tasks.base import Task


def load_task(cfg: TaskConfig) -> Task:
    name = cfg.name.split("/")[0]
    try:
        module = importlib.import_module(f"glm_eval.tasks.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"glm_eval.tasks.{name}":
            raise
        raise UserError(f"task.name={cfg.name}: no module glm_eval/tasks/{name}.py") from None
    return module.TASK(cfg)
