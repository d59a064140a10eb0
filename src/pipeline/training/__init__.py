"""The shell that trains: the stages, the Trainer's few changes, LoRA dropout, distillation, inference,
the machine (`detect`). torch, transformers and peft are imported inside functions."""
