"""predict: a trained run (in memory or its folder, full model or adapter) on a few inputs, per task."""

import json

import pytest

from pipeline import DataError, Hardware, Spec, SpecError, evaluate, fine_tune, predict, start
from pipeline.io.runs import write_run
from pipeline.testing import invoke, questions, sentences, sentiment

TEXTS = [{"text": t} for t in sentences(160)]
JOBS = {  # task -> (model, rows, extra spec fields, inputs)
    "text-classification": ("bert", sentiment(160), {"lora": True}, ["the car was great", "the hat was awful"]),
    "language-generation": ("llama", TEXTS, {}, ["the car is"]),
    "language-modeling": ("bert", TEXTS, {}, ["the car is [MASK] and the hat is red"]),
    "question-answering": ("bert", questions(160), {"stride": 8},
                           [("what color is the boat ?", "the hat the boat is green .")]),
    "sequence-sequence": ("bart", [{"source": t, "target": t} for t in sentences(160)], {"prefix": "copy: "},
                          ["copy: the car is red"]),
    "token-detection": ("electra", TEXTS, {}, ["the car is red and the hat is blue"]),
}


@pytest.fixture(scope="module")
def trained(models, tmp_path_factory):
    """Per task: the trained Run and its run folder (as `pipeline train` writes it)."""
    found = {}
    for task, (name, rows, extra, _) in JOBS.items():
        folder = tmp_path_factory.mktemp(task)
        if task == "token-detection":
            extra = {**extra, "generator": f"{models['electra']}/generator"}
        spec = Spec(base=models[name], task=task, train=rows, maxlength=32, **extra,
                    training={"learning_rate": 1e-2 if "lora" in extra else 3e-3, "num_train_epochs": 6,
                              "per_device_train_batch_size": 16, "disable_tqdm": True, "output_dir": str(folder)})
        run = fine_tune(start(spec, Hardware()))
        write_run(folder, "test", run)
        found[task] = (run, folder)
    return found


@pytest.mark.parametrize("task", list(JOBS))
def test_predictions_per_task_agree_between_the_run_and_its_folder(trained, task):
    run, folder = trained[task]
    inputs = JOBS[task][3]
    live, saved = predict(run, inputs), predict(str(folder), inputs)
    assert len(live) == len(saved) == len(inputs)
    for a, b in zip(live, saved):
        assert a.keys() == b.keys()
        for key in a:
            if key in ("score", "value"):
                assert a[key] == pytest.approx(b[key], abs=1e-4)
            elif key not in ("scores", "fills", "tokens"):
                assert a[key] == b[key], (task, key)
    first = live[0]
    if task == "text-classification":
        assert [p["label"] for p in live] == ["positive", "negative"]  # learned, and names kept through LoRA
        assert sum(first["scores"].values()) == pytest.approx(1.0, abs=1e-5)
    elif task == "question-answering":
        assert first["answer"] == "green"
    elif task == "language-modeling":
        (fills,) = first["fills"]  # one mask, its five likeliest tokens, likeliest first
        scores = [f["score"] for f in fills]
        assert len(fills) == 5 and scores == sorted(scores, reverse=True) and sum(scores) <= 1 + 1e-6
    elif task == "token-detection":
        assert [t["token"] for t in first["tokens"]][:3] == ["[CLS]", "the", "car"]
        assert all(0 <= t["replaced"] <= 1 for t in first["tokens"])
    else:
        assert isinstance(first["text"], str) and first["text"]


def test_predict_says_what_is_wrong(trained, tmp_path):
    run, _ = trained["language-modeling"]
    with pytest.raises(SpecError, match="fills '\\[MASK\\]' tokens"):
        predict(run, ["no mask here"])
    with pytest.raises(SpecError, match="holds no model"):
        predict(str(tmp_path), ["text"], task="text-classification")


def test_the_predict_command(trained):
    def command(*args):
        return invoke("predict", *args)

    _, folder = trained["text-classification"]
    shown = command(folder, "the car was great", "the hat was awful")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[0].startswith("positive (") and "the car was great" in shown.stdout
    _, qa = trained["question-answering"]
    answered = command(qa, "what color is the boat ?", "--context", "the hat the boat is green .", "-f", "json")
    assert json.loads(answered.stdout.splitlines()[0])["answer"] == "green", answered.stderr
    assert "needs --context" in command(qa, "what color ?").stderr
    line = command(qa, "what color is the boat ?", "--context", "the hat the boat is green .").stdout.splitlines()[0]
    assert line == "green (%s)  what color is the boat ?" % line.split("(")[1].split(")")[0]  # not the context


@pytest.mark.parametrize("task", list(JOBS))
def test_evaluate_scores_a_run_on_other_data_with_the_task_metrics(trained, task):
    run, folder = trained[task]
    rows = JOBS[task][1][:48]
    live, saved = evaluate(run, rows), evaluate(str(folder), rows)
    assert live["eval_loss"] == pytest.approx(saved["eval_loss"], rel=1e-4)
    assert not {k for k in saved if "runtime" in k or "per_second" in k or "preparation" in k or k == "epoch"}
    if task == "text-classification":
        assert saved["eval_accuracy"] >= 0.9 and "eval_macro_f1" in saved
    if task in ("language-generation", "language-modeling"):
        assert saved["eval_perplexity"] > 1
    if task == "question-answering":  # seen questions: answered as text, per question
        assert saved["eval_exact_match"] >= 0.9 and saved["eval_f1"] >= saved["eval_exact_match"]
    if task == "sequence-sequence":
        assert live["eval_token_accuracy"] == pytest.approx(saved["eval_token_accuracy"])


def test_evaluate_refuses_labels_the_model_does_not_know(trained):
    _, folder = trained["text-classification"]
    with pytest.raises(DataError, match="labels \\['neutral'\\] are not the model's"):
        evaluate(str(folder), [{"text": "the car was fine", "label": "neutral"}, *sentiment(4)])


def test_the_evaluate_command(trained, tmp_path):
    _, folder = trained["text-classification"]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in sentiment(32, 5)))
    shown = invoke("evaluate", folder, data, "-f", "json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["eval_accuracy"] >= 0.9


def test_evaluate_reports_each_class_and_the_confusion_matrix(trained, tmp_path):
    """A classifier's evaluation: per class precision, recall, F1 and support, and the confusion matrix, counted
    by hand from `predict`'s labels; the command prints both and draws the matrix in the run folder."""
    from pipeline.training.inference import evaluation

    run, folder = trained["text-classification"]
    rows = sentiment(40, 7) + [{"text": "the car was great and the hat was awful", "label": "negative"}] * 3
    metrics, report = evaluation(str(folder), rows)
    predicted = [p["label"] for p in predict(run, [r["text"] for r in rows])]
    names = report["confusion"]["labels"]
    assert names == ["negative", "positive"]
    counts = [[sum(1 for r, p in zip(rows, predicted) if r["label"] == t and p == q) for q in names] for t in names]
    assert report["confusion"]["matrix"] == counts and sum(map(sum, counts)) == len(rows)
    for i, row in enumerate(report["classes"]):
        hits, said, true = counts[i][i], sum(c[i] for c in counts), sum(counts[i])
        assert (row["class"], row["support"]) == (names[i], true)
        assert row["precision"] == pytest.approx(hits / said) and row["recall"] == pytest.approx(hits / true)
    assert metrics["eval_accuracy"] == pytest.approx(sum(counts[i][i] for i in range(2)) / len(rows))

    data = tmp_path / "held.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    shown = invoke("evaluate", folder, data)
    assert shown.returncode == 0, shown.stderr
    assert "per class" in shown.stdout and "confusion (rows: true class, columns: predicted)" in shown.stdout
    assert (folder / "confusion-held.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads(invoke("evaluate", folder, data, "-f", "json").stdout)["confusion"]["matrix"] == counts


def test_a_merged_run_folder_is_a_run_folder(trained, tmp_path):
    """`pipeline merge RUN OUT` writes a run folder: predict and evaluate take it as they take the run, and it
    says which run it was merged from."""
    from pipeline import merge_dir

    run, folder = trained["text-classification"]
    target = merge_dir(folder, tmp_path / "merged")
    record = json.loads((target / "run.json").read_text())
    assert record["merged_from"] == str(folder) and record["id"] == "test"
    inputs = ["the car was great", "the hat was awful"]
    assert [p["label"] for p in predict(str(target), inputs)] == [p["label"] for p in predict(run, inputs)]
    rows = sentiment(32, 5)
    assert evaluate(str(target), rows)["eval_accuracy"] == pytest.approx(evaluate(str(folder), rows)["eval_accuracy"])
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "config.json").write_text((target / "config.json").read_text())
    with pytest.raises(SpecError, match="^evaluate: .* has no spec.yaml"):
        evaluate(str(tmp_path / "bare"), rows)
