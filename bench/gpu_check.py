"""GPU check: bf16 LoRA vs QLoRA (the seed's NF4 defaults) on a ~0.8B Llama-style model.

Run on an NVIDIA machine (no network needed): bash bench/gpu_check.sh [OUT_FILE]
Builds the model from a config (random weights), trains each way for 40 steps, and
writes peak GPU memory (against `pipeline.estimate`), samples/s and the loss before
and after, plus `plan` with `detect()` there, to one Markdown file. Takes about 2-4 minutes on one H100/H200.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path


def build_model(folder: Path) -> str:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from pipeline.testing import _bpe

    tokenizer = _bpe(folder, pad=False, wrap=False)
    config = LlamaConfig(
        vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=14, num_attention_heads=16,
        num_key_value_heads=4, max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    parameters = sum(p.numel() for p in model.parameters())
    model.save_pretrained(folder)
    del model
    torch.cuda.empty_cache()
    return f"{parameters / 1e9:.2f}B parameters"


def train(folder: Path, quantize: bool) -> dict:
    import torch

    from pipeline import Spec, detect, fine_tune, start
    from pipeline.testing import sentences

    torch.cuda.reset_peak_memory_stats()
    spec = Spec(
        base=str(folder), task="language-generation", train=[{"text": t} for t in sentences(4000)], maxlength=256,
        lora=True, quantize=True if quantize else None,
        training={"bf16": True, "max_steps": 40, "per_device_train_batch_size": 8, "learning_rate": 2e-4,
                  "logging_steps": 5, "disable_tqdm": True},
    )
    started = time.perf_counter()
    run = start(spec, detect())
    estimate = run.plan.memory
    run = fine_tune(run)
    losses = [e["loss"] for e in run.log_history if "loss" in e]
    return {
        "way": "QLoRA (NF4, seed defaults)" if quantize else "bf16 LoRA",
        "peak GPU memory (GiB)": f"{torch.cuda.max_memory_allocated() / 2**30:.2f}",
        # max_memory_allocated counts tensors only: compare without the estimate's fixed CUDA overhead
        "estimated tensors (GiB)": f"{(estimate.total - estimate.parts['overhead']) / 2**30:.2f}" if estimate else "-",
        "train samples/s": f"{run.metrics['train_samples_per_second']:.1f}",
        "loss first -> last": f"{losses[0]:.3f} -> {losses[-1]:.3f}",
        "seconds (load + train)": f"{time.perf_counter() - started:.0f}",
        "4-bit layers": str(sum(type(m).__name__ == "Linear4bit" for m in run.model.modules())),
    }


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "gpu_check.md")
    lines = ["# GPU check: bf16 LoRA vs QLoRA", ""]
    try:
        import torch

        from pipeline import Spec, detect, plan

        lines += [f"Device: {torch.cuda.get_device_name(0)}; torch {torch.__version__}", ""]
        folder = Path(tempfile.mkdtemp())
        lines += [f"Model: Llama-style, random weights, {build_model(folder)}; 40 steps, batch 8, 256 tokens.", ""]
        rows = [train(folder, quantize=False), train(folder, quantize=True)]
        lines += ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        lines += ["| " + " | ".join(r.values()) + " |" for r in rows]
        spec = Spec(base=str(folder), task="language-generation", train=[{"text": "a"}], quantize=True, lora=True,
                    training={"bf16": True})
        lines += ["", "`plan` with `detect()` on this machine:", "", "```", str(plan(spec, detect())), "```"]
    except Exception as e:  # report what broke in the one file this check leaves
        import traceback

        lines += ["", "FAILED:", "```", traceback.format_exc(), "```"]
        out.write_text("\n".join(lines) + "\n")
        raise SystemExit(f"gpu check failed: {e}")
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
