"""Stand-in for a pretrained base model: the tiny Qwen2 from examples.sftrl_tiny.model, trained
briefly with plain torch on raw text (no chat format) where every single step of a generated
problem ("7 × 3") is posed and worked out as a one-operation problem of its own. It learns the
arithmetic facts and to copy numbers from a question; chaining three operands with × first, and the
chat format, are left to SFT, as a real base model knows mathematics but not the instruction format.

With --worked-share s, a share s of the documents are whole worked problems instead, written in the
chat format (never one of the held-out problems), so the base model already solves some of the task
when asked as the task asks, as a math base model that has seen instruction-style data does before
SFT: the mixed-policy comparison starts from such a base. Written as raw text instead, 5% of worked
problems leave the base at 1.25% (the chat format does not transfer), in the chat format at 40%
(docs/mixed-policy.md).

    python -m examples.sftrl_tiny.pretrain --tokenizer runs/tokenizer --out runs/base
"""
import argparse
import math
import random
import time

from . import data
from .loading import load_rows
from .model import add_size_arguments, build, sizes


def corpus(count, seed, operands=3, digits=1, operators=data.OPERATORS, worked_share=0.0, held_out=(),
           chat=None):
    """Raw-text documents in the words of the SFT solutions: every single step of a generated problem
    ("7 × 3"), posed and worked out as a one-operation problem of its own; with `worked_share`, that
    share of the documents is whole problems of `operands` operands worked out, none whose question
    is in `held_out`, each written by `chat(row)`, shuffled in (worked_share 0 gives the corpus the
    other demos' base models learn from)."""
    if not 0 <= worked_share <= 1:
        raise ValueError(f"worked_share must be in [0, 1], got {worked_share}")
    rng, documents, worked, held_out = random.Random(seed), [], [], set(held_out)
    while len(worked) < round(worked_share * count):
        row = data.make_row(*data.random_problem(rng, operands, digits, tuple(operators)))
        if data.question(row) not in held_out:
            worked.append(chat(row))
    while len(documents) < count - len(worked):
        numbers, ops = data.random_problem(rng, operands, digits, tuple(operators))
        for step in data.solve(numbers, ops)[0]:
            a, op, b = step.split(" = ")[0].split(" ")
            documents.append(document(data.make_row([int(a), int(b)], [op])))
    documents = documents[:count - len(worked)]
    if worked:
        documents += worked
        random.Random(seed + 1).shuffle(documents)
    return documents


def document(row):
    return data.question(row) + "\n" + data.expert_solution(row)


def chat_writer(tokenizer):
    """A worked problem as its whole conversation in the tokenizer's chat template, up to the last
    end-of-turn (pretrain() appends the EOS, which is that token)."""
    def write(row):
        text = tokenizer.apply_chat_template(row["prompt"] + row["target"], tokenize=False)
        return text[:text.rindex(tokenizer.eos_token)]
    return write


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
    parser.add_argument("--worked-share", type=float, default=0.0,
                        help="share of documents that are whole worked problems (0: one-operation steps only)")
    parser.add_argument("--held-out", nargs="*", default=[],
                        help="jsonl files whose problems no worked document may be (the test and validation splits)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    add_size_arguments(parser)
    args = parser.parse_args(argv)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    model = build(tokenizer, args.seed, **sizes(args))
    held_out = {data.question(row) for path in args.held_out for row in load_rows(path)}
    documents = corpus(args.documents, args.seed, worked_share=args.worked_share, held_out=held_out,
                       chat=chat_writer(tokenizer))
    pretrain(model, tokenizer, documents, args.batch_size, args.lr, args.seed)
    model.save_pretrained(args.out)
    save_tokenizer(tokenizer, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
