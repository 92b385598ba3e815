"""Accuracy on a held-out split: generate k answers per problem, grade each with the reward
(last \\boxed{} equal to the ground truth under Math-Verify), report avg@k (the mean over all k
answers; with k = 1 it is pass@1, as the paper reports MATH-500).

Two predictors of the score after RL (examples/sftrl_tiny/predictors.py), off by default:
--pass-k-samples N draws N answers per problem (the avg@k answers themselves when N = --samples, else
N more, seed + 1) and reports the unbiased pass@k for k = 1..min(64, N); --heldout-loss reports the
mean token NLL of the model on the split's expert solutions, tokenised as sft.py trains on them.
With --samples 0 nothing is generated for avg@k.

Generation runs on transformers (CPU, the tiny demo) or vLLM (GPU, paper scale):

    python -m examples.sftrl_tiny.evaluate --model runs/sft --data data/tiny --split test
    python -m examples.sftrl_tiny.evaluate --backend vllm --model ckpt --data math500.jsonl \\
        --samples 32 --temperature 0.6 --max-new-tokens 8192
"""
import argparse
import json
import statistics

from . import data, predictors
from .loading import load_rows
from .reward import score


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, nargs="+",
                        help="one checkpoint, or several (one process grades them all, e.g. the checkpoints of a run)")
    parser.add_argument("--data", required=True, help="a jsonl file, a folder with <split>.jsonl, or a hub data set")
    parser.add_argument("--split", default="test")
    parser.add_argument("--backend", choices=("transformers", "vllm"), default="transformers")
    parser.add_argument("--samples", type=int, default=1, help="answers per problem (k of avg@k); 0: no avg@k "
                                                               "(with --heldout-loss or --pass-k-samples)")
    parser.add_argument("--pass-k-samples", type=int, default=0, metavar="N",
                        help="answers per problem for the unbiased pass@k, k = 1..min(64, N); 0 = none (default). "
                             "N = --samples reuses the avg@k answers, any other N draws N more")
    parser.add_argument("--heldout-loss", action="store_true",
                        help="also report the mean token NLL on the split's expert solutions (SFT formatting)")
    parser.add_argument("--heldout-batch-size", type=int, default=8, help="sequences per forward (--heldout-loss)")
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
    if args.samples < 0 or args.pass_k_samples < 0 or args.heldout_batch_size < 1:
        parser.error("--samples and --pass-k-samples must be >= 0, --heldout-batch-size >= 1")
    if args.samples == 0 and not (args.pass_k_samples or args.heldout_loss):
        parser.error("--samples must be >= 1 (0 only with --heldout-loss or --pass-k-samples)")
    if args.temperature == 0 and args.samples > 1:
        parser.error("greedy decoding gives the same answer k times: set --temperature > 0 for --samples > 1")
    if args.temperature == 0 and args.pass_k_samples > 1:
        parser.error("greedy decoding gives the same answer N times: set --temperature > 0 for --pass-k-samples > 1")
    return args


def transformers_sampler(model_path, args):
    """sample(prompts, n, seed=None) -> n answers per prompt, on transformers; the first call continues
    from the seed set at loading (args.seed), a later one re-seeds with its own."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_path).eval()
    sampling = dict(do_sample=True, temperature=args.temperature, top_p=args.top_p) if args.temperature > 0 \
        else dict(do_sample=False)

    def sample(prompts, n, seed=None):
        if seed is not None:
            torch.manual_seed(seed)
        answers = []
        for start in range(0, len(prompts), args.batch_size):
            texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
                     for p in prompts[start:start + args.batch_size]]
            batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.no_grad():
                output = model.generate(**batch, max_new_tokens=args.max_new_tokens, num_return_sequences=n,
                                        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                                        **sampling)
            decoded = tokenizer.batch_decode(output[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
            answers += [decoded[i:i + n] for i in range(0, len(decoded), n)]
        return answers
    return sample


def vllm_sampler(model_path, args):  # GPU only: vLLM has no CPU wheel on the registry
    from vllm import LLM, SamplingParams
    llm = LLM(model=model_path, tensor_parallel_size=args.tensor_parallel_size, seed=args.seed)

    def sample(prompts, n, seed=None):
        params = SamplingParams(n=n, temperature=args.temperature, top_p=args.top_p,
                                max_tokens=args.max_new_tokens, seed=args.seed if seed is None else seed)
        outputs = llm.chat(prompts, params)
        return [[choice.text for choice in output.outputs] for output in outputs]
    return sample


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


def grade_pass_k(rows, answers, scores=None):
    """(summary part, per-problem scores): pass@k for k = 1..min(64, n) from n answers per problem;
    `scores` (per problem) when the answers are graded already."""
    if scores is None:
        scores = [[score(answer, data.ground_truth(row)) for answer in k_answers]
                  for row, k_answers in zip(rows, answers)]
    counts = [(len(s), int(sum(s))) for s in scores]
    return {"pass_at_k": predictors.pass_at_k_summary(counts),
            "pass_k_samples": min((n for n, _ in counts), default=0)}, scores


def evaluate(args):
    """The summary of every --model, in order (each written to its --out)."""
    rows = load_rows(args.data, args.split, args.max_samples)
    prompts = [row["prompt"] for row in rows]
    open_sampler = vllm_sampler if args.backend == "vllm" else transformers_sampler
    summaries = []
    for index, model in enumerate(args.model):
        # first, so that the model is freed before a vLLM engine takes the GPU
        heldout = predictors.heldout_loss_of(model, rows, args.heldout_batch_size) if args.heldout_loss else {}
        summary, details = {"problems": len(rows), "samples": 0}, [
            {"question": data.question(row), "truth": data.ground_truth(row)} for row in rows]
        if args.samples or args.pass_k_samples:
            sample = open_sampler(model, args)
            if args.samples:
                answers = sample(prompts, args.samples)
                summary, details = grade(rows, answers)
            if args.pass_k_samples:
                reuse = args.pass_k_samples == args.samples
                extra, scores = grade_pass_k(
                    rows, None if reuse else sample(prompts, args.pass_k_samples, args.seed + 1),
                    [d["scores"] for d in details] if reuse else None)
                summary.update(extra)
                for detail, problem_scores in zip(details, scores):
                    detail["pass_k_correct"] = int(sum(problem_scores))
                    if not reuse:
                        detail["pass_k_scores"] = problem_scores
        summary.update(heldout)
        summary.update(model=model, data=args.data, split=args.split, temperature=args.temperature)
        if args.out:
            with open(args.out[index], "w", encoding="utf-8") as handle:
                json.dump({"summary": summary, "details": details}, handle, indent=1)
        summaries.append(summary)
    return summaries


def main(argv=None):
    for summary in evaluate(parse_args(argv)):
        if "accuracy" in summary:
            label = "pass@1" if summary["samples"] == 1 else f"avg@{summary['samples']}"
            print(f"{label} = {summary['accuracy']:.4f} on {summary['problems']} problems ({summary['model']})")
        if summary.get("pass_at_k"):
            shown = [k for k in ("1", "8", "16", "32", "64") if k in summary["pass_at_k"]]
            top = str(len(summary["pass_at_k"]))
            shown += [top] if top not in shown else []
            print(", ".join(f"pass@{k} = {summary['pass_at_k'][k]:.4f}" for k in shown)
                  + f" from {summary['pass_k_samples']} answers per problem ({summary['model']})")
        if "heldout_loss" in summary:
            print(f"held-out loss = {summary['heldout_loss']:.4f} over {summary['heldout_tokens']} solution tokens of "
                  f"{summary['heldout_problems']} problems ({summary['model']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
