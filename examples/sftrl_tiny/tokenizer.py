"""A small byte-level BPE tokenizer trained here with `tokenizers`, in the shape of Qwen2's:
digits split one by one, ChatML special tokens and chat template. Saved as
PreTrainedTokenizerFast, which transformers 4.x and 5.x both load.

    python -m examples.sftrl_tiny.tokenizer --data data/tiny/train.jsonl --out runs/tokenizer
"""
import argparse
import json
import os

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from .loading import load_rows

IM_START, IM_END, PAD = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def texts(rows):
    for row in rows:
        for message in row["prompt"] + row["target"]:
            yield message["role"]
            yield message["content"]


def train(rows, vocab_size=384):
    """A PreTrainedTokenizerFast trained on the rows' messages."""
    from transformers import PreTrainedTokenizerFast
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, IM_START, IM_END],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(texts(rows), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=IM_END, pad_token=PAD,
                                        additional_special_tokens=[IM_START])
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def save(tokenizer, folder):
    """Save, naming the class PreTrainedTokenizerFast: transformers 5 writes its own
    TokenizersBackend, which transformers 4.x cannot load."""
    tokenizer.save_pretrained(folder)
    config_path = os.path.join(folder, "tokenizer_config.json")
    with open(config_path, encoding="utf-8") as handle:
        config = json.load(handle)
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    with open(config_path, "w", encoding="utf-8") as handle:
        json.dump(config, handle, indent=2)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a jsonl file of rows (see examples.sftrl_tiny.data)")
    parser.add_argument("--out", required=True, help="folder to save the tokenizer in")
    parser.add_argument("--vocab-size", type=int, default=384)
    args = parser.parse_args(argv)
    tokenizer = train(load_rows(args.data), args.vocab_size)
    save(tokenizer, args.out)
    print(f"tokenizer with {len(tokenizer)} tokens saved to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
