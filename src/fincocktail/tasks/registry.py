"""The task registry: built-in tasks by id, plus user tasks from YAML folders.

Built-ins are named in `tasks/builtin.py` as "module:Class" and imported on first use, so
listing tasks does not import every loader.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from fincocktail.errors import ConfigError
from fincocktail.tasks.base import Task
from fincocktail.tasks.builtin import BUILTIN_TASKS


def _builtin(task_id: str) -> Task:
    module, cls = BUILTIN_TASKS[task_id].split(":")
    return getattr(importlib.import_module(module), cls)()


def user_tasks_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    """`--tasks-dir` or FINCOCKTAIL_TASKS, absolute: a relative folder is the working directory's.

    Why absolute here: the tasks' data files are named relative to their YAML, and code that
    later meets a relative path (hashing source files for the run card) joins it to the data
    folder, so `FINCOCKTAIL_TASKS=tasks/ok` was looked for under the data folder in train and
    sweeps. One rule, applied where the folder is first read, holds everywhere.
    """
    value = explicit or os.environ.get("FINCOCKTAIL_TASKS")
    return Path(value).expanduser().absolute() if value else None


def _user_tasks(tasks_dir: Path | None) -> dict[str, Task]:
    if tasks_dir is None:
        return {}
    from fincocktail.tasks.custom import load_user_tasks  # YAML tasks need pydantic: read only when asked

    return load_user_tasks(tasks_dir)


def task_ids(tasks_dir: str | os.PathLike | None = None) -> list[str]:
    return list(BUILTIN_TASKS) + sorted(_user_tasks(user_tasks_dir(tasks_dir)))


def get_task(task_id: str, tasks_dir: str | os.PathLike | None = None) -> Task:
    """The task named `task_id` (a built-in, or a user task from `tasks_dir` / FINCOCKTAIL_TASKS).

    The user folder is read first even for a built-in id, so a user task that reuses a
    built-in id is an error every time, not silently shadowed by (or shadowing) the built-in.
    """
    user = _user_tasks(user_tasks_dir(tasks_dir))
    if task_id in BUILTIN_TASKS:
        return _builtin(task_id)
    if task_id in user:
        return user[task_id]
    known = ", ".join(task_ids(tasks_dir))
    raise ConfigError(f"unknown task {task_id!r}; known tasks: {known}")


def all_tasks(tasks_dir: str | os.PathLike | None = None) -> list[Task]:
    return [get_task(t, tasks_dir) for t in task_ids(tasks_dir)]
