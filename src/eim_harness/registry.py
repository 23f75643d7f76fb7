"""Every demo and study task by name (:class:`eim_harness.task.Task`): ``eim demo --task NAME`` and a
study spec's ``task``."""

from eim_harness import coco, lavin, llava
from eim_harness.task import Task

TASKS: dict[str, Task] = {"coco": coco.TASK, "scienceqa": lavin.SCIENCEQA, "mme": lavin.MME, "llava": llava.TASK}
