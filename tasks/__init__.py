"""One module per benchmark; `configs/task/<name>.yaml` names the module through its `name` (a config in a
subfolder, e.g. `task=longbench/multi_news`, named `longbench/multi_news`, uses its folder's module)."""
from __future__ import annotations

import importlib

from glm_eval.core.config import TaskConfig
from glm_eval.core.errors import UserError
from glm_eval.tasks.base import Task


def load_task(cfg: TaskConfig) -> Task:
    name = cfg.name.split("/")[0]
    if not name.isidentifier():  # "../x", "a.b": a module path, not a task
        raise UserError(f"task.name={cfg.name}: not a task name (the name of a module in glm_eval/tasks/)")
    try:
        module = importlib.import_module(f"glm_eval.tasks.{name}")
    except ModuleNotFoundError as e:
        if e.name == f"glm_eval.tasks.{name}":
            raise UserError(f"task.name={cfg.name}: no module glm_eval/tasks/{name}.py") from None
        raise UserError(f"task {name} needs the Python module {e.name}, which is not installed: reinstall glm-eval "
                        f"(pip install .) for the dependencies its tasks use") from None
    task = getattr(module, "TASK", None)
    if not (isinstance(task, type) and issubclass(task, Task)):
        raise UserError(f"glm_eval/tasks/{name}.py defines no TASK (its Task subclass): the config task.name="
                        f"{cfg.name} names a module that is not a task")
    return task(cfg)
