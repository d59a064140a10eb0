"""Side-by-side benchmarks: pipeline vs hand-written Trainer code vs txtai's HFTrainer."""
