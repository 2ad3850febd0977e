"""Which prompt template should SmolLM2-135M use on each GLUE task? Chosen zero-shot on the TRAIN split.

For every task, a few candidate templates (plain prompts and SmolLM2-Instruct's chat format) with their label
words are scored by label-word log-probability (`model.head: verbalizer`, no training) on the same seeded
200 rows of the task's training split; the best by the task's GLUE metric becomes the template of the GLUE
task table (src/fedranklite/glue.py). The dev split is never read here, so the template is not tuned on what
the runs are scored on. Results: experiments/slm_prompts/slm_prompts.json (resumable per task and template).

    python experiments/slm_prompts/bench_slm_prompts.py [--glue-dir ../shared/data/glue] [--rows 200]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import quiet_clock, write  # noqa: E402

OUT = HERE / "slm_prompts.json"
CHAT = "<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"
YES_NO = (" yes", " no")  # class 0 entailment -> yes
STS_WORDS = tuple(str(k) for k in range(6))

# task -> {name: (template, label words in class-id order)}
CANDIDATES: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {
    "sst2": {
        "review_sentiment": ("Review: {text_a}\nSentiment (positive or negative):", (" negative", " positive")),
        "question": ("{text_a}\nQuestion: Is this review positive or negative?\nAnswer:", (" negative", " positive")),
        "chat": (CHAT.format(q="Is this movie review positive or negative?\n{text_a}"), ("negative", "positive")),
    },
    "qnli": {
        "question_sentence": (
            "Question: {text_a}\nSentence: {text_b}\nDoes the sentence answer the question (yes or no)?\nAnswer:",
            YES_NO,
        ),
        "contains_answer": (
            '{text_b}\nQuestion: Does this sentence contain the answer to "{text_a}"? Yes or no?\nAnswer:',
            YES_NO,
        ),
        "chat": (
            CHAT.format(
                q="Does the sentence answer the question? Answer yes or no.\nQuestion: {text_a}\nSentence: {text_b}"
            ),
            ("yes", "no"),
        ),
    },
    "rte": {
        "premise_hypothesis": (
            "Premise: {text_a}\nHypothesis: {text_b}\nDoes the premise imply the hypothesis (yes or no)?\nAnswer:",
            YES_NO,
        ),
        "question_true": ("{text_a}\nQuestion: Is it true that {text_b} Yes or no?\nAnswer:", YES_NO),
        "chat": (
            CHAT.format(q='{text_a}\nDoes this mean that "{text_b}"? Answer yes or no.'),
            ("yes", "no"),
        ),
    },
    "mrpc": {  # class 0 not_equivalent -> no
        "same_meaning": (
            "Sentence 1: {text_a}\nSentence 2: {text_b}\nDo both sentences mean the same thing (yes or no)?\nAnswer:",
            (" no", " yes"),
        ),
        "paraphrase": (
            "{text_a}\n{text_b}\nQuestion: Is the second sentence a paraphrase of the first?\nAnswer:",
            (" no", " yes"),
        ),
        "chat": (
            CHAT.format(q="Do these two sentences mean the same thing? Answer yes or no.\n1: {text_a}\n2: {text_b}"),
            ("no", "yes"),
        ),
    },
    "stsb": {  # words 0..5 with the centred values of glue.center_scores
        "scale": (
            "Sentence 1: {text_a}\nSentence 2: {text_b}\nOn a scale from 0 to 5, how similar are the two "
            "sentences?\nAnswer: ",
            STS_WORDS,
        ),
        "similarity": (
            "Rate how similar these two sentences are, from 0 (unrelated) to 5 (same meaning).\nA: {text_a}\n"
            "B: {text_b}\nSimilarity: ",
            STS_WORDS,
        ),
        "chat": (
            CHAT.format(
                q="How similar are these two sentences, from 0 (unrelated) to 5 (same meaning)? Answer with "
                "one digit.\n1: {text_a}\n2: {text_b}"
            ),
            STS_WORDS,
        ),
    },
}


def score_template(model_name: str, task: str, template: str, words, rows: int, seed: int, glue_dir: Path) -> dict:
    import torch

    from fedranklite.data.glue import GLUE_TASKS, load_glue
    from fedranklite.data.scoring import SCORE_METRICS
    from fedranklite.data.textsplit import TextSplit
    from fedranklite.model.backbones import load_backbone
    from fedranklite.model.fedmodel import FedModel
    from fedranklite.model.verbalizer import Verbalizer
    from fedranklite.run.client import collate, encode

    info = GLUE_TASKS[task]
    train, _ = load_glue(task, str(glue_dir))  # the dev split is not used
    idx = np.random.default_rng(seed).permutation(len(train))[:rows]
    split = train.subset(idx)
    regression = info.task == "regression"
    values = tuple(float(v) for v in (np.arange(6) - 2.5) / 2.5) if regression else None
    verbalizer = Verbalizer(template, tuple(words), values)
    backbone = load_backbone(model_name, with_lm_head=True)
    model = FedModel(backbone, len(words), 1, 2.0, 0.0, ["q_proj", "v_proj"], verbalizer=verbalizer).eval()
    prompts = verbalizer.render(split.texts, model.tokenizer, info.max_length * 2)
    enc = encode(TextSplit([(p,) for p in prompts], split.labels), model.tokenizer, info.max_length * 2)
    outs = []
    with torch.no_grad():
        for start in range(0, len(enc), 16):
            inputs, _ = collate(
                enc,
                range(start, min(start + 16, len(enc))),
                model.tokenizer.pad_token_id,
                torch.device("cpu"),
                regression,
            )
            outs.append(model(**inputs))
    out = torch.cat(outs)
    pred = out.squeeze(-1).numpy() if regression else out.argmax(-1).numpy()
    metrics = ["pearson", "spearman"] if regression else ["accuracy", "f1"]
    scores = {m: float(SCORE_METRICS[m].fn(pred, split.labels)) for m in metrics}
    return {
        "metric": info.metric,
        "score": scores[info.metric],
        **scores,
        "predicted_classes": None if regression else int(len(np.unique(pred))),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--glue-dir", type=Path, default=ROOT.parent / "shared" / "data" / "glue")
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="bundled:smollm2-135m")
    args = ap.parse_args()
    clock = quiet_clock()
    done = json.loads(OUT.read_text())["runs"] if OUT.exists() else []
    have = {(d["task"], d["template_name"]) for d in done}
    for task, cands in CANDIDATES.items():
        for name, (template, words) in cands.items():
            if (task, name) in have:
                continue
            began = clock()
            res = score_template(args.model, task, template, words, args.rows, args.seed, args.glue_dir)
            done.append(
                {
                    "task": task,
                    "template_name": name,
                    "template": template,
                    "label_words": list(words),
                    **res,
                    "cpu_s": round(clock() - began, 1),
                }
            )
            print(json.dumps(done[-1]), flush=True)
            best = {
                t: max((d for d in done if d["task"] == t), key=lambda d: d["score"])["template_name"]
                for t in {d["task"] for d in done}
            }
            write(
                "slm_prompts",
                folder=HERE,
                payload={
                    "model": args.model,
                    "split": "train",
                    "rows": args.rows,
                    "seed": args.seed,
                    "best": best,
                    "runs": done,
                },
            )


if __name__ == "__main__":
    main()
