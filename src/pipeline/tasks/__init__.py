"""The tasks: one `Task` value per module, and the registry that names them.

Adding a task is one module that builds its `Task` and one line here.
"""

from __future__ import annotations

from types import MappingProxyType

from pipeline.tasks import (chat, classification, detection, embeddings, entities, generation, masked, questions,
                            reranking, sequences, similarity)
from pipeline.tasks.task import Labels, Task

__all__ = ["TASKS", "Labels", "Task"]

TASKS: MappingProxyType[str, Task] = MappingProxyType(
    {
        task.name: task
        for task in (
            classification.TASK,
            generation.TASK,
            masked.TASK,
            questions.TASK,
            sequences.TASK,
            detection.TASK,
            entities.TASK,
            chat.TASK,
            embeddings.TASK,
            reranking.TASK,
            similarity.TASK,
        )
    }
)
"""Every task by its name (``Spec.task``)."""
