"""Predictors of the score after RL, measured on an SFT checkpoint (Quagmires in SFT-RL Post-Training,
arXiv 2510.01624: the SFT score alone predicts it poorly; the loss on held-out expert solutions and
pass@k at large k predict it better).

- pass@k, the unbiased estimator from n answers per problem of which c are correct:
  pass@k = 1 - C(n-c, k) / C(n, k), computed as a product of c ratios (no large binomials), averaged
  over problems for k = 1..min(64, n).
- the held-out loss: the mean token NLL of the model on held-out problems' expert solutions, each
  problem tokenised exactly as TRL's SFTTrainer tokenises it for examples/sftrl_tiny/sft.py
  (conversational prompt-completion, the chat template, loss on the completion tokens only).
"""
import math

MAX_K = 64


def pass_at_k(n, c, k):
    """The probability that at least one of k answers drawn without replacement from n, c of them
    correct, is correct: 1 - C(n-c, k)/C(n, k) = 1 - prod_{j<c} (n-k-j)/(n-j)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}")
    if n - c < k:  # every k-subset holds a correct answer
        return 1.0
    miss = 1.0
    for j in range(c):
        miss *= (n - k - j) / (n - j)
    return 1.0 - miss


def pass_at_k_summary(counts, max_k=MAX_K):
    """{"1": mean pass@1, ..., "K": mean pass@K} over problems, K = min(max_k, the smallest n); counts
    holds one (n, c) per problem. Empty when there are no problems."""
    counts = list(counts)
    if not counts:
        return {}
    top = min(max_k, min(n for n, _ in counts))
    return {str(k): math.fsum(pass_at_k(n, c, k) for n, c in counts) / len(counts) for k in range(1, top + 1)}


# ---- the held-out loss ---------------------------------------------------------------------------

def sft_example(tokenizer, row):
    """(input_ids, labels) of one row as sft.py trains on it: TRL's SFTTrainer on
    {"prompt": row["prompt"], "completion": row["target"]} renders the prompt with the generation
    prompt, the prompt + completion without, and puts the loss on the tokens after their common prefix
    (labels -100 before it)."""
    if not row.get("target"):
        raise ValueError("the held-out loss needs worked solutions: rows with a `target` (the OpenR1-Math "
                         "schema); this split has none")
    prompt = tokenizer.apply_chat_template(row["prompt"], tokenize=True, add_generation_prompt=True,
                                           return_dict=True)["input_ids"]
    full = tokenizer.apply_chat_template(row["prompt"] + row["target"], tokenize=True, return_dict=True)["input_ids"]
    start = 0
    while start < min(len(prompt), len(full)) and prompt[start] == full[start]:
        start += 1
    return list(full), [-100] * start + list(full[start:])


def heldout_loss(model, tokenizer, rows, batch_size=8, device=None):
    """{"heldout_loss": mean NLL per completion token, "heldout_tokens", "heldout_problems"}: one token
    mean over every row (as the SFT loss is one token mean over its batch), right-padded batches."""
    import torch
    examples = [sft_example(tokenizer, row) for row in rows]
    device = device or next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    total, tokens = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(examples), batch_size):
            chunk = examples[start:start + batch_size]
            width = max(len(ids) for ids, _ in chunk)
            input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            attention = torch.zeros((len(chunk), width), dtype=torch.long)
            labels = torch.full((len(chunk), width), -100, dtype=torch.long)
            for i, (ids, lab) in enumerate(chunk):
                input_ids[i, :len(ids)] = torch.tensor(ids)
                attention[i, :len(ids)] = 1
                labels[i, :len(lab)] = torch.tensor(lab)
            with torch.no_grad():
                logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits
                targets = labels[:, 1:].to(logits.device)
                mask = targets != -100
                picked = logits[:, :-1][mask]  # (completion tokens, vocab)
                wanted = targets[mask]
                for part in range(0, picked.shape[0], 1024):  # float32 log-softmax a slice at a time
                    log_probs = torch.log_softmax(picked[part:part + 1024].float(), dim=-1)
                    total -= log_probs.gather(1, wanted[part:part + 1024, None]).sum().item()
                tokens += int(mask.sum())
    finally:
        model.train(was_training)
    return {"heldout_loss": total / tokens if tokens else float("nan"), "heldout_tokens": tokens,
            "heldout_problems": len(rows)}


def heldout_loss_of(model_path, rows, batch_size=8):
    """heldout_loss() of a checkpoint folder or hub name: on the GPU in bf16 when there is one, else on the
    CPU in float32. The model is freed afterwards (a vLLM engine may need the memory next)."""
    import gc
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    cuda = torch.cuda.is_available()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16 if cuda else torch.float32)
    model.to("cuda" if cuda else "cpu")
    try:
        return heldout_loss(model, tokenizer, rows, batch_size)
    finally:
        del model
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
