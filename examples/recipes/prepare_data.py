"""Flatten rows of the OpenR1-Math-46k-8192 schema for frameworks that read top-level keys:
adds `answer` (OpenRLHF's --label_key) and `system` + `messages` (Llama-Factory's sharegpt
format, OpenAI-style tags), keeping `prompt` and `target`.

    python -m examples.recipes.prepare_data --data Elliott/Openr1-Math-46k-8192 --out data/openr1.jsonl
"""
import argparse

from examples.sftrl_tiny.data import ground_truth, write_jsonl
from examples.sftrl_tiny.loading import load_rows

from . import common


def flatten(row):
    system = [m["content"] for m in row["prompt"] if m["role"] == "system"]
    turns = [m for m in row["prompt"] if m["role"] != "system"] + list(row["target"])
    return {"prompt": row["prompt"], "target": row["target"], "answer": ground_truth(row),
            "system": system[0] if system else "", "messages": turns}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=common.DATASET, help="hub data set, jsonl file or folder")
    parser.add_argument("--split", default="train")
    parser.add_argument("--out", required=True, help="jsonl file to write")
    args = parser.parse_args(argv)
    rows = [flatten(row) for row in load_rows(args.data, args.split)]
    write_jsonl(rows, args.out)
    print(f"wrote {len(rows)} rows to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
