"""Task adapters and their registry. Adding a task = adding one module with a `TASK` object and one line here."""

from __future__ import annotations

from iclpt.data.tasks.base import SPLITS, Task, one_line
from iclpt.data.tasks.dart import TASK as _DART
from iclpt.data.tasks.logic2text import TASK as _LOGIC2TEXT
from iclpt.data.tasks.mtop import TASK as _MTOP
from iclpt.data.tasks.spider import TASK as _SPIDER
from iclpt.data.tasks.totto import TASK as _TOTTO


class UnknownTaskError(KeyError):
    """An unknown task name; the message lists the known ones."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


TASKS: dict[str, Task] = {t.name: t for t in (_TOTTO, _DART, _LOGIC2TEXT, _SPIDER, _MTOP)}


def get_task(name: str | Task) -> Task:
    """The adapter registered under `name` (an adapter passes through); unknown names list the known tasks."""
    if isinstance(name, Task):
        return name
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise UnknownTaskError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}") from None


__all__ = ["SPLITS", "TASKS", "Task", "UnknownTaskError", "get_task", "one_line"]
