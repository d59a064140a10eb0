"""Field names of the library configs a spec may override, kept here so that validating
a spec needs no import of transformers or peft.

Read from the versions in `KNOWN` (those requirements.lock pins). tests/test_fields.py checks them against
the installed libraries: equal at those versions; under another version, every name here must still exist
there. A field a newer library added is one this list does not know: a spec naming it is refused with the
version the list comes from, until the lists are read again from the new lock.
"""

KNOWN = {"transformers": "5.25.0", "peft": "0.22.0"}
"""The library versions these lists were read from (TrainingArguments and BitsAndBytesConfig: transformers;
LoraConfig: peft)."""

TRAINING_ARGUMENTS = frozenset(
    ["accelerator_config", "activation_checkpointing", "activation_checkpointing_kwargs", "adam_beta1", "adam_beta2", "adam_epsilon", "auto_find_batch_size", "average_tokens_across_devices", "batch_eval_metrics", "bf16", "bf16_full_eval", "data_seed", "dataloader_drop_last", "dataloader_in_order", "dataloader_multiprocessing_context", "dataloader_num_workers", "dataloader_persistent_workers", "dataloader_pin_memory", "dataloader_prefetch_factor", "ddp_backend", "ddp_broadcast_buffers", "ddp_bucket_cap_mb", "ddp_find_unused_parameters", "ddp_static_graph", "ddp_timeout", "debug", "deepspeed", "disable_tqdm", "do_eval", "do_predict", "do_train", "enable_jit_checkpoint", "eval_accumulation_steps", "eval_delay", "eval_do_concat_batches", "eval_on_start", "eval_steps", "eval_strategy", "eval_use_gather_object", "fp16", "fp16_full_eval", "fsdp", "fsdp_config", "full_determinism", "gradient_accumulation_steps", "gradient_checkpointing", "gradient_checkpointing_kwargs", "greater_is_better", "hub_always_push", "hub_model_id", "hub_private_repo", "hub_revision", "hub_strategy", "hub_token", "ignore_data_skip", "include_for_metrics", "include_num_input_tokens_seen", "label_names", "label_smoothing_factor", "learning_rate", "length_column_name", "liger_kernel_config", "load_best_model_at_end", "local_rank", "log_level", "log_level_replica", "log_on_each_node", "logging_first_step", "logging_nan_inf_filter", "logging_steps", "logging_strategy", "lr_scheduler_kwargs", "lr_scheduler_type", "max_grad_norm", "max_steps", "metric_for_best_model", "neftune_noise_alpha", "num_train_epochs", "optim", "optim_args", "optim_target_modules", "output_dir", "parallelism_config", "per_device_eval_batch_size", "per_device_train_batch_size", "prediction_loss_only", "project", "push_to_hub", "remove_unused_columns", "report_to", "restore_callback_states_from_checkpoint", "resume_from_checkpoint", "run_name", "save_on_each_node", "save_only_model", "save_steps", "save_strategy", "save_total_limit", "seed", "skip_memory_metrics", "tf32", "torch_compile", "torch_compile_backend", "torch_compile_mode", "torch_empty_cache_steps", "trackio_bucket_id", "trackio_space_id", "trackio_static_space_id", "train_sampling_strategy", "use_cache", "use_cpu", "use_liger_kernel", "warmup_steps", "weight_decay"]
)

LORA_CONFIG = frozenset(
    ["alora_invocation_tokens", "alpha_pattern", "arrow_config", "astra_config", "auto_mapping", "base_model_name_or_path", "bias", "corda_config", "ensure_weight_tying", "eva_config", "exclude_modules", "fan_in_fan_out", "inference_mode", "init_lora_weights", "kasa_config", "layer_replication", "layers_pattern", "layers_to_transform", "loftq_config", "lora_alpha", "lora_bias", "lora_dropout", "lora_ga_config", "megatron_config", "megatron_core", "modules_to_save", "monteclora_config", "peft_type", "peft_version", "qalora_group_size", "r", "rank_pattern", "revision", "runtime_config", "target_modules", "target_parameters", "task_type", "trainable_token_indices", "use_bdlora", "use_dora", "use_qalora", "use_rslora", "velora_config"]
)

BITS_AND_BYTES_CONFIG = frozenset(
    ["bnb_4bit_compute_dtype", "bnb_4bit_quant_storage", "bnb_4bit_quant_type", "bnb_4bit_use_double_quant", "llm_int8_enable_fp32_cpu_offload", "llm_int8_has_fp16_weight", "llm_int8_skip_modules", "llm_int8_threshold", "load_in_4bit", "load_in_8bit"]
)

# Types of the scalar TrainingArguments fields ("?": None allowed too), and the choices of
# the ones that take a name; tests/test_fields.py checks both against transformers.
TRAINING_TYPES = {
    **dict.fromkeys(
        ["average_tokens_across_devices", "bf16", "fp16", "bf16_full_eval", "fp16_full_eval", "torch_compile",
         "use_liger_kernel", "use_cache", "auto_find_batch_size", "logging_first_step", "log_on_each_node",
         "logging_nan_inf_filter", "prediction_loss_only", "eval_on_start", "eval_do_concat_batches",
         "eval_use_gather_object", "batch_eval_metrics", "save_only_model", "save_on_each_node",
         "enable_jit_checkpoint", "push_to_hub", "hub_always_push", "load_best_model_at_end", "ignore_data_skip",
         "restore_callback_states_from_checkpoint", "full_determinism", "use_cpu", "dataloader_drop_last",
         "dataloader_pin_memory", "dataloader_persistent_workers", "dataloader_in_order", "remove_unused_columns",
         "skip_memory_metrics", "do_train", "do_eval", "do_predict"],
        "bool",
    ),
    **dict.fromkeys(
        ["tf32", "activation_checkpointing", "gradient_checkpointing", "disable_tqdm", "hub_private_repo",
         "greater_is_better", "ddp_find_unused_parameters", "ddp_broadcast_buffers", "ddp_static_graph"],
        "bool?",
    ),
    **dict.fromkeys(
        ["per_device_train_batch_size", "max_steps", "gradient_accumulation_steps", "per_device_eval_batch_size",
         "seed", "dataloader_num_workers", "ddp_timeout", "local_rank"],
        "int",
    ),
    **dict.fromkeys(
        ["torch_empty_cache_steps", "eval_accumulation_steps", "save_total_limit", "data_seed",
         "dataloader_prefetch_factor", "ddp_bucket_cap_mb"],
        "int?",
    ),
    **dict.fromkeys(
        ["num_train_epochs", "learning_rate", "warmup_steps", "weight_decay", "adam_beta1", "adam_beta2",
         "adam_epsilon", "max_grad_norm", "label_smoothing_factor", "logging_steps", "eval_delay", "save_steps"],
        "float",
    ),
    **dict.fromkeys(["neftune_noise_alpha", "eval_steps"], "float?"),
    **dict.fromkeys(
        ["log_level", "log_level_replica", "project", "train_sampling_strategy", "length_column_name"], "str"
    ),
    **dict.fromkeys(
        ["output_dir", "optim_args", "torch_compile_backend", "torch_compile_mode", "run_name", "trackio_space_id",
         "trackio_bucket_id", "hub_token", "hub_model_id", "hub_revision", "metric_for_best_model",
         "dataloader_multiprocessing_context", "ddp_backend", "fsdp", "resume_from_checkpoint"],
        "str?",
    ),
}

# Strategies with a "no": YAML 1.1 (Hugging Face configs, PyYAML's default) reads ``no`` as false, so false means "no".
FALSE_MEANS_NO = ("logging_strategy", "eval_strategy", "save_strategy")

TRAINING_CHOICES = {
    "lr_scheduler_type": ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                          "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
                          "warmup_stable_decay", "greedy"),
    "logging_strategy": ("no", "steps", "epoch"),
    "eval_strategy": ("no", "steps", "epoch"),
    "save_strategy": ("no", "steps", "epoch", "best"),
    "hub_strategy": ("end", "every_save", "checkpoint", "all_checkpoints"),
    "log_level": ("detail", "debug", "info", "warning", "error", "critical", "passive"),
    "log_level_replica": ("detail", "debug", "info", "warning", "error", "critical", "passive"),
    "train_sampling_strategy": ("random", "sequential", "group_by_length", "batch_rebalance"),
    "optim": ("adamw_torch", "adamw_torch_fused", "adamw_torch_xla", "adamw_torch_npu_fused", "adafactor",
              "adamw_anyprecision", "adamw_torch_4bit", "adamw_torch_8bit", "ademamix", "sgd", "adagrad",
              "adamw_bnb_8bit", "adamw_8bit", "ademamix_8bit", "lion_8bit", "lion_32bit", "paged_adamw_32bit",
              "paged_adamw_8bit", "paged_ademamix_32bit", "paged_ademamix_8bit", "paged_lion_32bit",
              "paged_lion_8bit", "rmsprop", "rmsprop_bnb", "rmsprop_bnb_8bit", "rmsprop_bnb_32bit", "galore_adamw",
              "galore_adamw_8bit", "galore_adafactor", "galore_adamw_layerwise", "galore_adamw_8bit_layerwise",
              "galore_adafactor_layerwise", "lomo", "adalomo", "grokadamw", "schedule_free_radam",
              "schedule_free_adamw", "schedule_free_sgd", "apollo_adamw", "apollo_adamw_layerwise", "stable_adamw"),
}
