"""Stand-in for a pretrained base model: the tiny Qwen2 from examples.sftrl_tiny.model, trained
briefly with plain torch on raw text (no chat format) where every single step of a generated
problem ("7 × 3") is posed and worked out as a one-operation problem of its own. It learns the
arithmetic facts and to copy numbers from a question; chaining three operands with × first, and the
chat format, are left to SFT, as a real base model knows mathematics but not the instruction format.

    python -m examples.sftrl_tiny.pretrain --tokenizer runs/tokenizer --out runs/base
"""
import argparse
import math
import random
import time

from . import data
from .model import add_size_arguments, build, sizes


def corpus(count, seed, operands=3, digits=1, operators=data.OPERATORS):
    """Raw-text documents: every single step of a generated problem ("7 × 3"), posed and worked
    out as a one-operation problem of its own, in the words of the SFT solutions."""
    rng, documents = random.Random(seed), []
    while len(documents) < count:
        numbers, ops = data.random_problem(rng, operands, digits, tuple(operators))
        for step in data.solve(numbers, ops)[0]:
            a, op, b = step.split(" = ")[0].split(" ")
            row = data.make_row([int(a), int(b)], [op])
            documents.append(data.question(row) + "\n" + data.expert_solution(row))
    return documents[:count]


def pretrain(model, tokenizer, documents, batch_size=64, lr=1e-3, seed=0, log=print):
    import torch
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    steps = len(documents) // batch_size
    warmup = max(1, steps // 10)

    def factor(step):  # linear warm-up, then cosine down to a tenth
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.45 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    model.train()
    started = time.time()
    for step in range(steps):
        texts = [d + tokenizer.eos_token for d in documents[step * batch_size:(step + 1) * batch_size]]
        batch = tokenizer(texts, return_tensors="pt", padding=True)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        if step % 100 == 0 or step == steps - 1:
            log(f"pretrain step {step + 1}/{steps} loss {loss.item():.3f} ({time.time() - started:.0f} s)")
    return model.eval()


def main(argv=None):
    from transformers import AutoTokenizer
    from .tokenizer import save as save_tokenizer
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--documents", type=int, default=96000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    add_size_arguments(parser)
    args = parser.parse_args(argv)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    model = build(tokenizer, args.seed, **sizes(args))
    pretrain(model, tokenizer, corpus(args.documents, args.seed), args.batch_size, args.lr, args.seed)
    model.save_pretrained(args.out)
    save_tokenizer(tokenizer, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
