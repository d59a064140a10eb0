"""Our `TrainingArguments`: with an empty ``output_dir`` nothing is ever saved.

A module of its own so the Trainer can pickle the class, and so that only the stages,
which import it lazily, pay for importing transformers.
"""

from transformers import TrainingArguments


class Arguments(TrainingArguments):
    """`TrainingArguments` whose ``should_save`` is False when ``output_dir`` is empty (a transient model)."""

    @property
    def should_save(self) -> bool:
        return bool(self.output_dir) and super().should_save
