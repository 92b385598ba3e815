"""A tiny Qwen2-style causal LM built from a config (nothing is downloaded), sized so that SFT
on the generated arithmetic runs in about a minute on two CPU cores.

    python -m examples.sftrl_tiny.model --tokenizer runs/tokenizer --out runs/base
"""
import argparse

DEFAULTS = dict(hidden_size=96, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=256)


def build(tokenizer, seed=0, **overrides):
    """A freshly initialised Qwen2ForCausalLM whose vocabulary and special tokens match `tokenizer`."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM
    config = Qwen2Config(vocab_size=len(tokenizer), tie_word_embeddings=True,
                         bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, **{**DEFAULTS, **overrides})
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config)


def add_size_arguments(parser):
    for name, value in DEFAULTS.items():
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=value)


def sizes(args):
    return {name: getattr(args, name) for name in DEFAULTS}


def main(argv=None):
    from transformers import AutoTokenizer
    from .tokenizer import save as save_tokenizer
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", required=True, help="folder of the tokenizer (examples.sftrl_tiny.tokenizer)")
    parser.add_argument("--out", required=True, help="folder to save the model in")
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed")
    add_size_arguments(parser)
    args = parser.parse_args(argv)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    model = build(tokenizer, args.seed, **sizes(args))
    model.save_pretrained(args.out)
    save_tokenizer(tokenizer, args.out)  # a model folder that loads on its own
    print(f"model with {sum(p.numel() for p in model.parameters()):,} parameters saved to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
