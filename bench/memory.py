"""Memory: measured peak RSS against `pipeline.estimate`, one process a cell.

    python -m bench.memory                 # the whole matrix (about 40 minutes here), writes bench/MEMORY.md
    python -m bench.memory --models bert-22m --seqs 128
    python -m bench.memory --models bert-110m --ways full --seqs 128 --checkpointing false --processes 2 \
        --zero none,1,2,3 --markdown bench/MEMORY-zero.md --out bench/memory-zero.json   # per process, torchrun

Each cell builds nothing itself: the parent writes every model once (random weights,
from a config) and each cell runs `fine_tune` on it for a few steps in a fresh process.
Measured = peak RSS of that process (``ru_maxrss``) minus its RSS just before `load`
(after torch, transformers and peft are imported), so the interpreter and libraries
are not counted; estimated = `estimate(...).total` for the same spec on `Hardware()`.
With ``--processes N`` each cell runs under torchrun (gloo): every rank measures itself, and the
estimate is the per-process one for ``Hardware(processes=N)`` (``--zero`` adds DeepSpeed ZeRO).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from itertools import product
from pathlib import Path

HERE = Path(__file__).parent
STEPS = 3

# Model shapes: (family, config fields). Vocabularies are the real models' sizes.
MODELS = {
    "bert-22m": ("bert", dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                              intermediate_size=1536, max_position_embeddings=512)),
    "bert-110m": ("bert", dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                               intermediate_size=3072, max_position_embeddings=512)),
    "llama-30m": ("llama", dict(vocab_size=32000, hidden_size=256, num_hidden_layers=8, num_attention_heads=8,
                                num_key_value_heads=4, intermediate_size=688, max_position_embeddings=2048)),
    "llama-500m": ("llama", dict(vocab_size=32000, hidden_size=1280, num_hidden_layers=24, num_attention_heads=16,
                                 num_key_value_heads=4, intermediate_size=3456, max_position_embeddings=2048)),
}
BATCH = {"bert-22m": 8, "bert-110m": 8, "llama-30m": 8, "llama-500m": 2}
LONGEST = {"llama-500m": 256}
"""Sequence lengths are capped per model, to keep a cell of the ~0.5B model within minutes here."""
WAYS = ("full", "lora", "qlora")


def build(name: str, folder: Path) -> str:
    """Write model ``name`` (random weights, float32) with a small tokenizer; returns its folder."""
    import torch
    from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM

    from pipeline.testing import _bpe, _wordpiece

    path = folder / name
    if (path / "config.json").is_file():
        return str(path)
    family, fields = MODELS[name]
    torch.manual_seed(0)
    if family == "bert":
        _wordpiece(path)
        BertModel(BertConfig(**fields)).save_pretrained(path)
    else:
        tokenizer = _bpe(path, pad=False, wrap=False)
        config = LlamaConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **fields)
        LlamaForCausalLM(config).save_pretrained(path)
    return str(path)


def spec_for(cell: dict, path: str):
    """The spec a cell trains: fixed-length batches (texts longer than ``seq``, truncated or blocked)."""
    from pipeline import Spec
    from pipeline.testing import sentences

    family = MODELS[cell["model"]][0]
    words = " ".join(sentences(cell["seq"], seed=1))  # ~10 tokens a sentence: far more than seq tokens
    texts = [words[i * 7 :] for i in range(cell["batch"] * STEPS)]
    if family == "bert":
        task, rows = "text-classification", [{"text": t, "label": i % 2} for i, t in enumerate(texts)]
    else:
        task, rows = "language-generation", [{"text": t} for t in texts]
    training = {"max_steps": STEPS, "per_device_train_batch_size": cell["batch"], "learning_rate": 1e-4,
                "logging_strategy": "no", "disable_tqdm": True, "gradient_checkpointing": cell["checkpointing"],
                **cell.get("training", {})}
    if cell.get("dtype", "float32") != "float32":
        cell = {**cell, "spec": {"dtype": cell["dtype"], **cell.get("spec", {})}}
    if cell.get("zero"):
        cell = {**cell, "spec": {"zero": cell["zero"], **cell.get("spec", {})}}
    fields = dict(base=path, task=task, train=rows, maxlength=cell["seq"], lora=cell["way"] != "full" or None,
                  quantize=cell["way"] == "qlora" or None, quantize_on_cpu=cell["way"] == "qlora", training=training,
                  lean_memory=True)  # the estimate is of the lean peak; the default picks lean only when tight
    return Spec(**{**fields, **cell.get("spec", {})})


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cell_main(cell: dict, path: str) -> dict:
    """Run one cell in this process; returns measured MB (above the baseline) per stage."""
    import peft  # noqa: F401  imported before the baseline, like torch and transformers
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from pipeline import adapt, load, quantize, start, train

    spec = spec_for(cell, path)
    run = start(spec, hardware(cell))
    import datasets  # noqa: F401

    baseline = rss_mb()
    run = load(run)
    loaded = peak_mb() - baseline
    sampled = []  # RSS while training, every 2 ms: the training peak apart from loading's
    done = threading.Event()
    sampler = threading.Thread(target=lambda: [sampled.append(rss_mb()) for _ in iter(lambda: done.wait(0.002), True)])
    sampler.start()
    try:
        run = train(adapt(quantize(run)))
    finally:
        done.set()
        sampler.join()
    return {"rank": int(os.environ.get("RANK", 0)), "baseline_mb": baseline, "load_mb": loaded,
            "peak_mb": peak_mb() - baseline,
            "train_peak_mb": max(sampled, default=baseline) - baseline,
            "attention": run.model.config._attn_implementation if hasattr(run.model, "config") else "?",
            "train_loss": run.metrics.get("train_loss")}


def hardware(cell: dict):
    from pipeline import Hardware

    return Hardware(processes=cell.get("processes", 1))


def measure(cell: dict, path: str) -> dict:
    """One cell in a fresh process, or in ``cell["processes"]`` under torchrun: the highest rank's peak, and
    each rank's in ``ranks_mb`` (one thread a rank, as the two cores here hold two)."""
    processes = cell.get("processes", 1)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": f"{HERE.parent}:{HERE.parent / 'src'}", **({"OMP_NUM_THREADS": "1"} if processes > 1 else {})}
    launcher = [sys.executable] if processes == 1 else [
        str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node", str(processes)]
    started = time.perf_counter()
    done = subprocess.run([*launcher, "-m", "bench.memory", "--cell", json.dumps(cell), "--path", path],
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr[-2000:]}
    ranks = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    highest = max(ranks, key=lambda r: r["peak_mb"])
    extra = {"ranks_mb": [r["peak_mb"] for r in sorted(ranks, key=lambda r: r["rank"])]} if processes > 1 else {}
    return {**highest, **extra, "seconds": time.perf_counter() - started}


def estimated(cell: dict, path: str) -> dict:
    from pipeline import estimate

    memory = estimate(spec_for(cell, path), hardware(cell))
    return {"estimate_mb": memory.total / 2**20, "parts": {k: v / 2**20 for k, v in memory.parts.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--ways", default=",".join(WAYS))
    parser.add_argument("--seqs", default="128,512")
    parser.add_argument("--checkpointing", default="false,true")
    parser.add_argument("--dtypes", default="float32", help="the weights' dtypes (float32, bfloat16)")
    parser.add_argument("--batch", type=int, help="batch size for every model (default: per model)")
    parser.add_argument("--processes", type=int, default=1, help="training processes (torchrun over gloo)")
    parser.add_argument("--zero", default="none", help="DeepSpeed ZeRO stages to run (none,1,2,3)")
    parser.add_argument("--markdown", default=str(HERE / "MEMORY.md"), help="where the report goes")
    parser.add_argument("--out", default=str(HERE / "memory.json"), help="raw results (JSON lines)")
    parser.add_argument("--report", action="store_true", help="only rewrite MEMORY.md from --out")
    options = parser.parse_args()
    if options.cell:
        print(json.dumps(cell_main(json.loads(options.cell), options.path)))
        return
    folder = Path(os.environ.get("BENCH_MODELS", Path(tempfile.gettempdir()) / "bench-memory-models"))
    out = Path(options.out)
    if not options.report:
        out.write_text("")
        for name in options.models.split(","):
            path = build(name, folder)
            seqs = [min(int(s), LONGEST.get(name, int(s))) for s in options.seqs.split(",")]
            for seq in dict.fromkeys(seqs):
                for way in options.ways.split(","):
                    for checkpointing in (c == "true" for c in options.checkpointing.split(",")):
                        for dtype, zero in product(options.dtypes.split(","), options.zero.split(",")):
                            cell = {"model": name, "way": way, "checkpointing": checkpointing, "seq": seq,
                                    "batch": options.batch or BATCH[name], "dtype": dtype,
                                    "processes": options.processes, "zero": None if zero == "none" else int(zero)}
                            row = {**cell, **measure(cell, path)}
                            print(json.dumps(row), flush=True)
                            with out.open("a") as f:
                                f.write(json.dumps(row) + "\n")
    report([json.loads(line) for line in out.read_text().splitlines()], folder, options)


def report(rows: list[dict], folder: Path, options: argparse.Namespace) -> None:
    lines = [
        "# Memory: measured against the estimate",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB, no GPU.",
        f"Command: `python -m bench.memory --models {options.models} --ways {options.ways} --seqs {options.seqs} "
        f"--checkpointing {options.checkpointing}{f' --batch {options.batch}' if options.batch else ''}"
        f"{f' --dtypes {options.dtypes}' if options.dtypes != 'float32' else ''}"
        f"{f' --processes {options.processes} --zero {options.zero}' if options.processes > 1 else ''}` "
        f"(raw rows: `{options.out}`).",
        "",
        f"Each cell is its own process: {STEPS} training steps of fixed-length batches (random weights, float32",
        "unless the way says bfloat16, AdamW). Measured = peak RSS minus the RSS just before `load` (libraries imported); estimated =",
        "`pipeline.estimate(spec, Hardware())`. Error = estimate / measured - 1. Under torchrun (a way's",
        "`N processes`): each rank's own peak, the highest measured, the estimate per process.",
        "",
        "| model | way | checkpointing | batch x seq | measured MB | estimated MB | error | attention | s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    errors = []
    failed = [row for row in rows if "error" in row]
    rows = [row for row in rows if "error" not in row]
    for row in rows:
        estimate = estimated(row, str(folder / row["model"]))["estimate_mb"]
        error = estimate / row["peak_mb"] - 1
        errors.append(error)
        dtype = row.get("dtype", "float32")
        way = ", ".join([row["way"], *([dtype] if dtype != "float32" else []),
                         *([f"{row['processes']} processes"] if row.get("processes", 1) > 1 else []),
                         *([f"ZeRO-{row['zero']}"] if row.get("zero") else [])])
        lines.append(
            f"| {row['model']} | {way} | "
            f"{'on' if row['checkpointing'] else 'off'} | "
            f"{row['batch']} x {row['seq']} | {row['peak_mb']:.0f} | {estimate:.0f} | {error:+.0%} | "
            f"{row['attention']} | {row['seconds']:.0f} |"
        )
    lines += ["", f"Largest error: {max(errors, key=abs):+.0%} over {len(rows)} cells.", ""]
    lines += [f"Failed: {r['model']} {r['way']} seq {r['seq']}: {r['error'].splitlines()[-1]}" for r in failed]
    lines += ["Measured peaks compared: LoRA / full, QLoRA / LoRA, and QLoRA / LoRA while training (RSS sampled",
              "every 2 ms after loading; on a CPU, quantizing holds the float checkpoint mapped while it loads):", "",
              "| model | checkpointing | seq | LoRA / full | QLoRA / LoRA | QLoRA / LoRA training |",
              "|---|---|---|---|---|---|"]
    rows = [r for r in rows if r.get("dtype", "float32") == "float32"]
    by = {(r["model"], r["checkpointing"], r["seq"], r["way"]): r for r in rows}
    for model, checkpointing, seq in dict.fromkeys((r["model"], r["checkpointing"], r["seq"]) for r in rows):
        full, lora, qlora = (by.get((model, checkpointing, seq, w)) for w in WAYS)
        if not (full and lora and qlora):
            continue
        training = (f"{qlora['train_peak_mb'] / lora['train_peak_mb']:.2f}"
                    if "train_peak_mb" in qlora and "train_peak_mb" in lora else "-")
        lines.append(f"| {model} | {'on' if checkpointing else 'off'} | {seq} | {lora['peak_mb'] / full['peak_mb']:.2f} "
                     f"| {qlora['peak_mb'] / lora['peak_mb']:.2f} | {training} |")
    Path(options.markdown).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
