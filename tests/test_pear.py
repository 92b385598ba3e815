"""PEAR-reweighted SFT (examples/sftrl_tiny/pear.py): the token, block and sequence weights against a
2-sequence batch worked by hand, clipping, normalisation over a micro-batch and over an optimizer step,
no gradient through the weights, and `--sft-loss plain` being TRL's SFTTrainer untouched (a PEAR
trainer whose weights are all 1 gives its loss to the bit)."""
import math
import os
import subprocess
import sys

import pytest

from conftest import ROOT

torch = pytest.importorskip("torch")
pytest.importorskip("trl")
sys.path.insert(0, ROOT)
from examples.sftrl_tiny import pear  # noqa: E402

# ---- the weights, by hand ------------------------------------------------------------------------------
# Two sequences, 5 label positions each (prompt first, right padding last). The completion tokens carry
# log pi_theta - log pi_beta = r:
#   sequence 0, positions 1-4: ln 2, 0, ln 1/2, ln 8     (ratios 2, 1, 1/2, 8)
#   sequence 1, positions 2-3: ln 3, ln 1/3              (ratios 3, 1/3)
MASK = torch.tensor([[0, 1, 1, 1, 1], [0, 0, 1, 1, 0]], dtype=torch.bool)
RATIOS = [[2.0, 1.0, 0.5, 8.0], [3.0, 1 / 3]]
BEHAVIOUR = torch.tensor([[-9.0, -1.0, -2.0, -0.5, -3.0], [-9.0, -9.0, -1.5, -0.25, -9.0]])


def policy_logps():
    policy = BEHAVIOUR.clone()
    for row, ratios in enumerate(RATIOS):
        positions = MASK[row].nonzero().flatten().tolist()
        for position, ratio in zip(positions, ratios):
            policy[row, position] += math.log(ratio)
    return policy


def laid_out(values):
    """Per-sequence lists of completion weights -> the (2, 5) layout, 0 off the completion."""
    out = torch.zeros(2, 5)
    for row, row_values in enumerate(values):
        out[row, MASK[row]] = torch.tensor(row_values, dtype=torch.float32)
    return out


def normalised(values):
    flat = [v for row in values for v in row]
    scale = len(flat) / sum(flat)
    return [[v * scale for v in row] for row in values]


def weights(loss, **settings):
    clip = settings.pop("clip", (0.25, 4.0))
    w, _ = pear.pear_weights(policy_logps(), BEHAVIOUR, MASK, pear.Settings(loss, clip=clip, **settings))
    return w


S2 = math.sqrt(2)
CASES = {
    # per token: the ratio, clipped to [1/4, 4] (8 -> 4)
    "token": (dict(loss="pear-token"), [[2, 1, 0.5, 4], [3, 1 / 3]]),
    # blocks of 2: geometric mean of (2, 1) = sqrt 2, of (1/2, 8) = 2; of (3, 1/3) = 1
    "block-mean": (dict(loss="pear-block", block_size=2), [[S2, S2, 2, 2], [1, 1]]),
    # blocks of 2, product: 2, 4 and 1
    "block-sum": (dict(loss="pear-block", block_size=2, reduce="sum"), [[2, 2, 4, 4], [1, 1]]),
    # blocks of 3: (2, 1, 1/2) -> 1, (8) -> 8 clipped to 4; (3, 1/3) -> 1
    "block-3": (dict(loss="pear-block", block_size=3), [[1, 1, 1, 4], [1, 1]]),
    # sequence: geometric mean 8^(1/4); 1
    "seq-mean": (dict(loss="pear-seq"), [[8 ** 0.25] * 4, [1, 1]]),
    # sequence, product: 8 clipped to 4; 1
    "seq-sum": (dict(loss="pear-seq", reduce="sum"), [[4] * 4, [1, 1]]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_weights_match_the_hand_computed_batch(case):
    settings, by_hand = CASES[case]
    got = weights(**settings)
    assert torch.allclose(got, laid_out(normalised(by_hand)), atol=1e-6), (case, got)
    assert got[~MASK].abs().sum() == 0


def test_discounted_suffix_weights_by_hand():
    g = 0.5
    ln = math.log
    # sum: a_t = r_t + g a_{t+1}, within each sequence
    a4 = ln(8)
    a3 = ln(0.5) + g * a4
    a2 = 0 + g * a3
    a1 = ln(2) + g * a2
    b2 = ln(1 / 3)
    b1 = ln(3) + g * b2
    raw = [[a1, a2, a3, a4], [b1, b2]]
    by_hand = [[min(max(math.exp(a), 0.25), 4.0) for a in row] for row in raw]
    got = weights("pear-token", discount=g, reduce="sum")
    assert torch.allclose(got, laid_out(normalised(by_hand)), atol=1e-6)
    # mean: divided by the discounted count 1 + g + g^2 + ... of what is left of the sequence
    counts = [[1 + g + g * g + g ** 3, 1 + g + g * g, 1 + g, 1], [1 + g, 1]]
    by_hand = [[min(max(math.exp(a / c), 0.25), 4.0) for a, c in zip(r, n)] for r, n in zip(raw, counts)]
    got = weights("pear-token", discount=g)
    assert torch.allclose(got, laid_out(normalised(by_hand)), atol=1e-6)
    # blocks of 2 with discount 1 and sum: each block's ratio times every later block's (2*4, 4; 1)
    got = weights("pear-block", block_size=2, discount=1.0, reduce="sum", clip=(0.1, 100.0))
    assert torch.allclose(got, laid_out(normalised([[8, 8, 4, 4], [1, 1]])), atol=1e-6)


def test_the_variants_agree_at_their_limits():
    # blocks of one token are the token variant; one block as long as the sequence is the sequence variant
    assert torch.allclose(weights("pear-block", block_size=1), weights("pear-token"))
    assert torch.allclose(weights("pear-block", block_size=64), weights("pear-seq"))
    # with discount 1, the first token's suffix is the whole sequence
    log_ratio = torch.where(MASK, policy_logps() - BEHAVIOUR, 0.0)
    suffix = pear.log_weights(log_ratio, MASK, "pear-token", discount=1.0)
    sequence = pear.log_weights(log_ratio, MASK, "pear-seq")
    assert torch.allclose(suffix[0, 1], sequence[0, 1]) and torch.allclose(suffix[1, 2], sequence[1, 2])


def test_clipping_bounds_every_weight_and_counts_what_it_clipped():
    log_ratio = torch.tensor([[60.0, -60.0, 0.0, 1000.0]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    log_w = pear.log_weights(log_ratio, mask, "pear-token")
    w, stats = pear.clipped_weights(log_w, mask, (0.5, 2.0))
    assert w.tolist() == [[2.0, 0.5, 1.0, 2.0]]
    assert stats == {"clipped_low": 0.25, "clipped_high": 0.5}
    # before normalising they are at the bounds; after, the mean is 1 and nothing is infinite
    w, _ = pear.pear_weights(log_ratio, torch.zeros(1, 4), mask, pear.Settings("pear-token", clip=(0.5, 2.0)))
    assert torch.isfinite(w).all() and w.mean().item() == pytest.approx(1.0)
    assert torch.allclose(w, torch.tensor([[2.0, 0.5, 1.0, 2.0]]) * 4 / 5.5)


def test_normalisation_over_one_batch_and_over_a_larger_one():
    w = weights("pear-token")
    assert w[MASK].mean().item() == pytest.approx(1.0, abs=1e-6)
    # an optimizer step of two micro-batches: normalised with the step's totals, the union averages 1
    raw = torch.tensor([[1.0, 2.0, 0.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    first = pear.normalise(raw[:1], mask[:1], total=7.0, count=3)
    second = pear.normalise(raw[1:], mask[1:], total=7.0, count=3)
    assert torch.allclose(torch.cat([first, second]), pear.normalise(raw, mask))
    assert torch.cat([first, second])[mask].mean().item() == pytest.approx(1.0)
    assert pear.normalise(torch.zeros(1, 2), torch.ones(1, 2, dtype=torch.bool)).tolist() == [[0.0, 0.0]]


def test_no_gradient_flows_through_the_weights():
    policy = policy_logps().requires_grad_(True)
    w, _ = pear.pear_weights(policy, BEHAVIOUR, MASK, pear.Settings("pear-seq", clip=(0.25, 4.0)))
    assert not w.requires_grad
    loss = (-policy * w).sum() / MASK.sum()
    loss.backward()
    # the gradient of each log-probability is its weight over the token count: nothing through the weight
    assert torch.allclose(policy.grad, -w / MASK.sum())


# ---- the trainer, on a tiny model --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from datasets import Dataset
    from examples.sftrl_tiny import data, model, tokenizer
    from examples.sftrl_tiny.loading import to_prompt_completion
    rows, _ = data.generate(8, 0, operands=2, digits=1, seed=3)
    tok = tokenizer.train(rows, vocab_size=300)
    dataset = Dataset.from_list([to_prompt_completion(row) for row in rows])
    sizes = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                 num_key_value_heads=1)
    return tok, dataset, lambda: model.build(tok, seed=0, **sizes), tmp_path_factory.mktemp("pear")


def make_trainer(tiny, *flags):
    from examples.sftrl_tiny import sft
    tok, dataset, build, out = tiny
    args = sft.parse_args(["--model", "m", "--data", "d", "--out", str(out), "--max-length", "256", *flags])
    return sft.build_trainer(args, build(), tok, dataset)


def a_batch(trainer, rows=(0, 1, 2)):
    batch = trainer.data_collator([{k: trainer.train_dataset[i][k] for k in ("input_ids", "labels")} for i in rows])
    return dict(batch)


def test_plain_is_trls_sfttrainer_and_all_one_weights_give_its_loss_exactly(tiny):
    from trl import SFTTrainer
    plain = make_trainer(tiny)
    assert type(plain) is SFTTrainer
    flat = make_trainer(tiny, "--sft-loss", "pear-token", "--pear-clip", "1", "1", "--pear-normalise", "micro-batch",
                        "--pear-behaviour", "deterministic")
    assert isinstance(flat, SFTTrainer) and type(flat) is not SFTTrainer
    batch = a_batch(plain)
    assert plain.model.training and flat.model.training   # the training path, not the evaluation one
    expected = plain.compute_loss(plain.model, dict(batch), num_items_in_batch=None)
    got = flat.compute_loss(flat.model, dict(batch), num_items_in_batch=None)
    assert torch.equal(got, expected)
    assert flat._metrics["train"]["pear/weight_max"] == [1.0]   # PEAR's path ran, with weights of exactly 1
    expected = plain.compute_loss(plain.model, dict(batch), num_items_in_batch=torch.tensor(500))
    assert torch.equal(flat.compute_loss(flat.model, dict(batch), num_items_in_batch=torch.tensor(500)), expected)


def test_the_initial_model_as_behaviour_gives_ratio_one_before_training(tiny):
    plain = make_trainer(tiny)
    trainer = make_trainer(tiny, "--sft-loss", "pear-seq", "--pear-normalise", "micro-batch")
    trainer.behaviour = trainer.collect_behaviour()
    assert trainer.pear_facts["behaviour_sequences"] == len(trainer.train_dataset)
    batch = a_batch(trainer)
    expected = plain.compute_loss(plain.model, dict(batch))
    got = trainer.compute_loss(trainer.model, dict(batch))
    assert abs(trainer._metrics["train"]["pear/log_ratio_mean"][-1]) < 1e-5
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_step_normalisation_spans_the_accumulation_window(tiny):
    # micro-batch 1, two micro-batches per step, pear-seq: against a deterministic generator the weight of a
    # sequence is its geometric-mean probability under the model, so the two sequences differ; normalised
    # over the step, the step's tokens average 1 (per micro-batch each sequence's weight would be 1)
    trainer = make_trainer(tiny, "--sft-loss", "pear-seq", "--pear-behaviour", "deterministic",
                           "--pear-clip", "0", "100")
    batches = [a_batch(trainer, (0,)), a_batch(trainer, (1,))]
    samples, _ = trainer.get_batch_samples(iter(batches), 2, trainer.args.device)
    w = [s["pear_weights"][s["labels"][:, 1:] != -100] for s in samples]
    assert all(torch.allclose(x, x[0].expand_as(x)) for x in w)      # one weight per sequence
    assert torch.cat(w).mean().item() == pytest.approx(1.0, abs=1e-5)
    assert abs(w[0][0].item() - w[1][0].item()) > 1e-4
    # compute_loss uses the attached weights
    inputs = dict(samples[0])
    loss = trainer.compute_loss(trainer.model, inputs, num_items_in_batch=torch.tensor(int(w[0].numel())))
    plain = make_trainer(tiny).compute_loss(trainer.model, {k: v for k, v in samples[0].items() if k != "pear_weights"},
                                            num_items_in_batch=torch.tensor(int(w[0].numel())))
    assert loss.item() == pytest.approx(plain.item() * w[0][0].item(), rel=1e-5)


def test_a_short_pear_run_trains_and_logs_its_weights(tiny):
    trainer = make_trainer(tiny, "--sft-loss", "pear-block", "--pear-block-size", "4", "--max-steps", "2",
                           "--grad-accum", "2", "--lr", "1e-3")
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 2 and all(math.isfinite(entry["loss"]) for entry in logged)
    assert all("pear/log_ratio_mean" in entry and "pear/clipped_high" in entry for entry in logged)
    assert abs(logged[0]["pear/log_ratio_mean"]) < 1e-5       # the first step is the behaviour policy itself
    assert trainer.pear_facts["behaviour_policy"].startswith("initial model")


def test_bad_settings_are_refused_and_the_recipe_passes_pear_through(tiny, tmp_path):
    from examples.sftrl_tiny import sft
    for flags in (["--pear-clip", "2", "1"], ["--pear-discount", "1.5"], ["--pear-block-size", "0"]):
        with pytest.raises(SystemExit):
            sft.parse_args(["--model", "m", "--data", "d", "--out", "o", "--sft-loss", "pear-token", *flags])
    proc = subprocess.run([sys.executable, "-m", "examples.recipes.trl", "sft", "--sft-loss", "pear-block",
                           "--pear-block-size", "32", "--pear-discount", "0.9", "--out", str(tmp_path), "--dry-run"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode == 0, proc.stderr[-2000:]
    argv = proc.stdout.replace("\\\n", " ").split()
    args = sft.parse_args(argv[argv.index("examples.sftrl_tiny.sft") + 1:])
    assert (args.sft_loss, args.pear_block_size, args.pear_discount) == ("pear-block", 32, 0.9)
    plain = subprocess.run([sys.executable, "-m", "examples.recipes.trl", "sft", "--out", str(tmp_path), "--dry-run"],
                           cwd=ROOT, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PYTHONPATH": ROOT})
    assert "--sft-loss" not in plain.stdout and "--pear" not in plain.stdout
