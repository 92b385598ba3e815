"""Accuracy on a held-out split: generate k answers per problem, grade each with the reward
(last \\boxed{} equal to the ground truth under Math-Verify), report avg@k (the mean over all k
answers; with k = 1 it is pass@1, as the paper reports MATH-500).

Generation runs on transformers (CPU, the tiny demo) or vLLM (GPU, paper scale):

    python -m examples.sftrl_tiny.evaluate --model runs/sft --data data/tiny --split test
    python -m examples.sftrl_tiny.evaluate --backend vllm --model ckpt --data math500.jsonl \\
        --samples 32 --temperature 0.6 --max-new-tokens 8192
"""
import argparse
import json
import statistics

from . import data
from .loading import load_rows
from .reward import score


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, nargs="+",
                        help="one checkpoint, or several (one process grades them all, e.g. the checkpoints of a run)")
    parser.add_argument("--data", required=True, help="a jsonl file, a folder with <split>.jsonl, or a hub data set")
    parser.add_argument("--split", default="test")
    parser.add_argument("--backend", choices=("transformers", "vllm"), default="transformers")
    parser.add_argument("--samples", type=int, default=1, help="answers per problem (k of avg@k)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (needs --samples 1)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--max-samples", type=int, default=None, help="grade only the first N problems")
    parser.add_argument("--batch-size", type=int, default=64, help="prompts per generate call (transformers)")
    parser.add_argument("--tensor-parallel-size", type=int, default=1, help="vLLM")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", nargs="+", help="write the summary and every graded answer here (json); one file "
                                                  "per --model")
    args = parser.parse_args(argv)
    if args.out and len(args.out) != len(args.model):
        parser.error(f"--out names {len(args.out)} file(s) for {len(args.model)} --model(s): give one per model")
    if args.samples < 1:
        parser.error("--samples must be >= 1")
    if args.temperature == 0 and args.samples > 1:
        parser.error("greedy decoding gives the same answer k times: set --temperature > 0 for --samples > 1")
    return args


def generate_transformers(model_path, prompts, args):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_path).eval()
    sampling = dict(do_sample=True, temperature=args.temperature, top_p=args.top_p) if args.temperature > 0 \
        else dict(do_sample=False)
    answers = []
    for start in range(0, len(prompts), args.batch_size):
        texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
                 for p in prompts[start:start + args.batch_size]]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            output = model.generate(**batch, max_new_tokens=args.max_new_tokens, num_return_sequences=args.samples,
                                    pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                                    **sampling)
        decoded = tokenizer.batch_decode(output[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        answers += [decoded[i:i + args.samples] for i in range(0, len(decoded), args.samples)]
    return answers


def generate_vllm(model_path, prompts, args):  # GPU only: vLLM has no CPU wheel on the registry
    from vllm import LLM, SamplingParams
    llm = LLM(model=model_path, tensor_parallel_size=args.tensor_parallel_size, seed=args.seed)
    params = SamplingParams(n=args.samples, temperature=args.temperature, top_p=args.top_p,
                            max_tokens=args.max_new_tokens, seed=args.seed)
    outputs = llm.chat(prompts, params)
    return [[choice.text for choice in output.outputs] for output in outputs]


def grade(rows, answers):
    """avg@k over problems, and per-problem details."""
    details, per_problem = [], []
    for row, k_answers in zip(rows, answers):
        truth = data.ground_truth(row)
        scores = [score(answer, truth) for answer in k_answers]
        per_problem.append(statistics.fmean(scores))
        details.append({"question": data.question(row), "truth": truth, "answers": k_answers,
                        "scores": scores})
    return {"accuracy": statistics.fmean(per_problem) if per_problem else 0.0, "problems": len(rows),
            "samples": len(answers[0]) if answers else 0}, details


def evaluate(args):
    """The summary of every --model, in order (each written to its --out)."""
    rows = load_rows(args.data, args.split, args.max_samples)
    prompts = [row["prompt"] for row in rows]
    generate = generate_vllm if args.backend == "vllm" else generate_transformers
    summaries = []
    for index, model in enumerate(args.model):
        summary, details = grade(rows, generate(model, prompts, args))
        summary.update(model=model, data=args.data, split=args.split, temperature=args.temperature)
        if args.out:
            with open(args.out[index], "w", encoding="utf-8") as handle:
                json.dump({"summary": summary, "details": details}, handle, indent=1)
        summaries.append(summary)
    return summaries


def main(argv=None):
    for summary in evaluate(parse_args(argv)):
        label = "pass@1" if summary["samples"] == 1 else f"avg@{summary['samples']}"
        print(f"{label} = {summary['accuracy']:.4f} on {summary['problems']} problems ({summary['model']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
