"""The mixed-policy methods: the piece that defines each one on tiny tensors, then the trainers on
a real TRL GRPOTrainer with a tiny Qwen2 built here (generation, rewards, loss; no GPU needed)."""
import math
from collections import defaultdict
import os
import sys
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from examples.mixed_policy import flops, losses  # noqa: E402
from examples.mixed_policy.hpt import HptTrainer, sft_groups  # noqa: E402
from examples.mixed_policy.relift import FailedQuestions  # noqa: E402
from examples.mixed_policy.srft import SrftTrainer  # noqa: E402
from examples.mixed_policy.trainer import EXPERT, PREFIXED, ROLLOUT, MixedPolicyTrainer  # noqa: E402


# ---- LUFFY: policy shaping -------------------------------------------------------------------
def test_luffy_shaping_weight_is_p_over_p_plus_gamma():
    probs = torch.tensor([0.01, 0.1, 0.5, 0.99])
    weight = losses.shaping_weight(probs.log(), gamma=0.1)
    assert torch.allclose(weight, torch.tensor([0.01 / 0.11, 0.1 / 0.2, 0.5 / 0.6, 0.99 / 1.09]))


def test_luffy_shaped_gradient_and_why_it_matters_for_rare_expert_tokens():
    gamma, advantage = 0.1, torch.tensor([2.0])
    probs = torch.tensor([[0.001, 0.05, 0.3, 0.9]])
    logps = probs.log().requires_grad_()
    losses.shaped_off_policy_loss(logps, advantage, gamma).sum().backward()
    # d/dlogp of -A * p/(p+gamma) = -A * gamma * p / (p+gamma)^2
    expected = -2.0 * gamma * probs / (probs + gamma) ** 2
    assert torch.allclose(logps.grad, expected, rtol=1e-5)
    # Unshaped importance weighting (-A * p) has gradient -A * p: shaping lifts rare expert tokens
    # and damps the ones the policy already predicts.
    plain = -2.0 * probs
    assert (logps.grad[0, :2].abs() > plain[0, :2].abs()).all()
    assert (logps.grad[0, 2:].abs() < plain[0, 2:].abs()).all()


def test_luffy_baseline_counts_only_the_rollouts():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0])  # 2 groups of 4, expert last
    counted = torch.tensor([True, True, True, False] * 2)
    advantages = losses.group_advantages(rewards, 4, counted=counted)
    assert advantages.tolist() == pytest.approx([2 / 3, -1 / 3, -1 / 3, 2 / 3, 0, 0, 0, 1])
    # with the expert in the baseline the advantages differ
    assert losses.group_advantages(rewards, 4).tolist() != pytest.approx(advantages.tolist())


# ---- SRFT: entropy-aware weights -------------------------------------------------------------
def test_srft_weights_follow_entropy_without_gradient():
    entropy = torch.tensor(0.7, requires_grad=True)
    w_sft, w_rl = losses.entropy_weights(entropy, 0.5, 0.1)
    assert w_sft.item() == pytest.approx(0.5 * math.exp(-0.7))
    assert w_rl.item() == pytest.approx(0.1 * math.exp(0.7))
    assert not w_sft.requires_grad and not w_rl.requires_grad
    low, _ = losses.entropy_weights(torch.tensor(0.1))
    high, _ = losses.entropy_weights(torch.tensor(2.0))
    assert low > high  # confident policy: demonstrations weigh more


def _bare(**args):
    """The smallest stand-in for a trainer: what the loss/annotate hooks read, nothing else."""
    return SimpleNamespace(args=SimpleNamespace(**args), epsilon_low=0.2, epsilon_high=0.28, num_generations=4,
                           model=SimpleNamespace(training=True), _metrics={"train": defaultdict(list)})


def test_srft_loss_weights_each_token_kind():
    fake = _bare(sft_weight_scale=0.5, rl_weight_scale=0.1, demonstration_pg=False, shaping_gamma=0.1)
    logps = torch.log(torch.tensor([[0.5, 0.5], [0.25, 0.25], [0.8, 0.8]]))
    entropies = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])  # each row's own H weighs it
    batch = {"advantages": torch.tensor([1.0, -1.0, 0.5]),
             "expert_mask": torch.tensor([[0, 0], [0, 0], [1, 1]]),
             "loss_mask": torch.ones(3, 2, dtype=torch.long)}
    loss, mask = SrftTrainer.per_token_loss(fake, batch, logps, logps.detach(), entropies)
    w_sft, w_rl = 0.5 * math.exp(-3.0), 0.1 * math.exp(1.0)
    assert loss[0].tolist() == pytest.approx([-w_rl * 1.0] * 2)        # positive rollout: scaled PG
    assert loss[1].tolist() == pytest.approx([1.0, 1.0])                # negative rollout: plain PG
    assert loss[2].tolist() == pytest.approx([-w_sft * math.log(0.8)] * 2)  # demonstration: w_sft * NLL
    assert mask.sum() == 6
    # With the off-policy term (the default, as reported for the authors' code): -A f(pi) on top.
    fake.args.demonstration_pg = True
    loss, _ = SrftTrainer.per_token_loss(fake, batch, logps, logps.detach(), entropies)
    assert loss[2].tolist() == pytest.approx([-w_sft * math.log(0.8) - 0.5 * 0.8 / 0.9] * 2)
    assert loss[0].tolist() == pytest.approx([-w_rl * 1.0] * 2)  # rollouts unchanged


def test_srft_baseline_counts_the_demonstration_only_with_its_off_policy_term():
    rewards, kinds = torch.tensor([1.0, 0.0, 0.0, 1.0]), torch.tensor([0, 0, 0, 1])
    for demonstration_pg, baseline in ((True, 0.5), (False, 1 / 3)):
        fake = _bare(demonstration_pg=demonstration_pg)
        batch = {}
        SrftTrainer.annotate(fake, batch, rewards, kinds, slice(0, 4))
        assert batch["advantages"].tolist() == pytest.approx((rewards - baseline).tolist())


# ---- ReLIFT: the buffer of failed questions --------------------------------------------------
def test_relift_buffer_keeps_one_row_per_failed_question_in_order():
    buffer = FailedQuestions(capacity=3)
    rows = [{"q": q, "copy": c} for q in "abc" for c in range(2)]  # 3 groups of 2
    buffer.add_failed(rows, [0.0, 0.5, 0.0], group_size=2)
    assert [r["q"] for r in buffer.rows] == ["a", "c"]
    buffer.add_failed([{"q": "d"}, {"q": "d"}, {"q": "e"}, {"q": "e"}], [0.0, 0.0], group_size=2)
    assert [r["q"] for r in buffer.rows] == ["c", "d", "e"]  # capacity 3: "a" dropped
    assert [r["q"] for r in buffer.take(1, newest=True)] == ["e"]  # the authors' order: newest first
    assert [r["q"] for r in buffer.take(1)] == ["c"]
    with pytest.raises(ValueError, match="2 rows asked, 1 buffered"):
        buffer.take(2)
    with pytest.raises(ValueError, match="capacity"):
        FailedQuestions(-1)
    unbounded = FailedQuestions(0)
    unbounded.add_failed([{"q": i} for i in range(2000)], [0.0] * 2000, group_size=1)
    assert len(unbounded) == 2000


# ---- HPT: the gate -----------------------------------------------------------------------------
def test_hpt_gate_switches_per_question():
    # 3 groups of 4: expert in the last slot; rollouts pass 0/3, 1/3, 3/3
    rewards = torch.tensor([0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 1, 1], dtype=torch.float)
    kinds = torch.tensor([ROLLOUT, ROLLOUT, ROLLOUT, EXPERT] * 3)
    assert sft_groups(rewards, kinds, 4, gate=0).tolist() == [True, False, False]
    assert sft_groups(rewards, kinds, 4, gate=1).tolist() == [True, True, False]  # a count, as the authors' gate
    assert sft_groups(rewards, kinds, 4, gate=3).tolist() == [True, True, True]
    fake = _bare(gate=0)
    batch = {"loss_mask": torch.ones(12, 3, dtype=torch.long)}
    HptTrainer.annotate(fake, batch, rewards, kinds, slice(0, 12))
    trained = batch["loss_mask"][:, 0].tolist()
    assert trained == [0, 0, 0, 1] + [1, 1, 1, 0] * 2  # SFT on the expert of group 0, GRPO elsewhere


# ---- Prefix-RFT: the schedule and the loss on the prefix ---------------------------------------
def test_prefix_schedule_decays_the_upper_bound_and_the_lower_follows():
    from examples.mixed_policy.prefix_rft import decayed, ratio_bounds
    assert [decayed(0.95, 0.05, t, "constant") for t in (0, 0.5, 1)] == [0.95] * 3
    assert [decayed(0.95, 0.05, t, "linear") for t in (0, 0.25, 1)] == pytest.approx([0.95, 0.725, 0.05])
    # cosine: flat at both ends, the mean of the two at half-way
    assert [decayed(0.95, 0.05, t, "cosine") for t in (0, 0.5, 1)] == pytest.approx([0.95, 0.5, 0.05])
    assert decayed(0.95, 0.05, 0.1, "cosine") > decayed(0.95, 0.05, 0.1, "linear")
    assert decayed(0.95, 0.05, 2.0, "linear") == pytest.approx(0.05)  # past the end it stays at the end
    args = SimpleNamespace(prefix_ratio_min=0.1, prefix_ratio_max=0.9, prefix_ratio_max_end=0.05,
                           prefix_schedule="linear")
    assert ratio_bounds(args, 0.0) == (0.1, 0.9)
    assert ratio_bounds(args, 1.0) == pytest.approx((0.05, 0.05))


def test_prefix_tokens_take_the_policy_loss_on_their_highest_entropy_share():
    from examples.mixed_policy.prefix_rft import PrefixRftTrainer, high_entropy_tokens
    entropies = torch.tensor([[0.1, 0.9, 0.5, 0.3], [0.8, 0.2, 0.7, 0.6]])
    prefix = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])  # 5 prefix tokens, pooled over the micro-batch
    assert high_entropy_tokens(entropies, prefix, 0.4).tolist() == [[False, True, False, False],
                                                                  [True, False, False, False]]
    assert high_entropy_tokens(entropies, prefix, 1.0).tolist() == prefix.bool().tolist()
    assert not high_entropy_tokens(entropies, prefix, 0.0).any()
    fake = _bare(prefix_entropy_share=1.0, clip_on_policy=True)
    fake.policy_loss = lambda batch, logps, old: MixedPolicyTrainer.policy_loss(fake, batch, logps, old)
    logps = torch.log(torch.full((2, 4), 0.5))
    batch = {"advantages": torch.tensor([1.0, -2.0]), "expert_mask": prefix,
             "loss_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])}
    loss, mask = PrefixRftTrainer.per_token_loss(fake, batch, logps, logps.detach(), entropies)
    assert loss.tolist() == [[-1.0] * 4, [2.0] * 4] and torch.equal(mask, batch["loss_mask"])  # prefix trained
    fake.args.prefix_entropy_share = 0.4
    loss, mask = PrefixRftTrainer.per_token_loss(fake, batch, logps, logps.detach(), entropies)
    assert loss.tolist() == [[0.0, -1.0, 0.0, -1.0], [2.0, 0.0, 2.0, 2.0]]
    assert torch.equal(mask, batch["loss_mask"])  # the dropped prefix tokens still count in the token mean


def test_rollouts_are_unclipped_where_the_authors_scripts_remove_the_clip():
    logps, old = torch.log(torch.tensor([[0.9, 0.1]])), torch.log(torch.tensor([[0.5, 0.5]]))
    batch = {"advantages": torch.tensor([1.0])}
    clipped = MixedPolicyTrainer.policy_loss(_bare(clip_on_policy=True), batch, logps, old)
    unclipped = MixedPolicyTrainer.policy_loss(_bare(clip_on_policy=False), batch, logps, old)
    assert clipped[0].tolist() == pytest.approx([-1.28, -0.2])  # ratio 1.8 clipped to 1 + 0.28
    assert unclipped[0].tolist() == pytest.approx([-1.8, -0.2])
    from examples.mixed_policy.hpt import HptConfig
    from examples.mixed_policy.relift import ReliftConfig
    import dataclasses
    for config in (HptConfig, ReliftConfig):
        assert {f.name: f.default for f in dataclasses.fields(config)}["clip_on_policy"] is False


# ---- the corrected aggregation and the FLOPs accounting ----------------------------------------
def test_step_mean_over_micro_batches_is_one_token_mean():
    torch.manual_seed(0)
    per_token = torch.rand(4, 6)
    mask = torch.tensor([[1] * 6, [1] * 1 + [0] * 5, [1] * 3 + [0] * 3, [1] * 2 + [0] * 4])
    total = mask.sum()
    accumulated = sum(losses.step_mean(per_token[i:i + 2], mask[i:i + 2], total) for i in (0, 2))
    assert accumulated.item() == pytest.approx(losses.masked_mean(per_token, mask).item(), rel=1e-6)
    mean_of_means = sum(losses.masked_mean(per_token[i:i + 2], mask[i:i + 2]) for i in (0, 2)) / 2
    assert abs(mean_of_means.item() - accumulated.item()) > 1e-3  # the buggy form differs here


def test_flops_follow_the_paper_accounting():
    counter = flops.FlopsCounter(parameters=1000)
    counter.add("on_policy", 10)
    counter.add("off_policy", 5)
    counter.add("sft", 2)
    assert counter.total == 1000 * (8 * 10 + 6 * 5 + 6 * 2)
    with pytest.raises(ValueError, match="unknown token kind"):
        counter.add("prompt", 1)


# ---- the trainers on a real TRL GRPOTrainer and a tiny model -----------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from examples.sftrl_tiny import data, model, tokenizer as tokenizer_module
    from transformers import AutoTokenizer
    folder = tmp_path_factory.mktemp("mixed")
    train, _ = data.generate(32, 4, operands=2, digits=1, seed=5)
    tokenizer_module.save(tokenizer_module.train(train), str(folder / "tok"))
    tokenizer = AutoTokenizer.from_pretrained(str(folder / "tok"), padding_side="left")
    model.build(tokenizer, seed=0).save_pretrained(str(folder / "model"))
    return folder, train, tokenizer


def _trainer(tiny, method, **options):
    from datasets import Dataset
    from examples.mixed_policy import methods, train as train_module
    from examples.sftrl_tiny.reward import accuracy_reward
    folder, rows, tokenizer = tiny
    trainer_class, config_class = methods.load(method)
    config = config_class(output_dir=str(folder / method), per_device_train_batch_size=8, num_generations=4,
                          steps_per_generation=2, max_completion_length=64, max_steps=2, beta=0.0,
                          loss_type="dapo", scale_rewards="none", learning_rate=1e-3, report_to="none",
                          save_strategy="no", disable_tqdm=True, seed=0, bf16=False, **options)
    dataset = Dataset.from_list([train_module.to_example(r) for r in rows])
    return trainer_class(model=str(folder / "model"), reward_funcs=accuracy_reward, args=config,
                         train_dataset=dataset, processing_class=tokenizer), rows


def _generation_batch(trainer, rows, questions=4):
    group = trainer.num_generations
    trainer.model.train()
    return trainer._generate_and_score_completions([dict(rows[q]) for q in range(questions) for _ in range(group)])


def test_luffy_puts_the_expert_trace_in_the_last_slot_and_counts_its_flops(tiny):
    trainer, rows = _trainer(tiny, "luffy")
    batch = _generation_batch(trainer, rows)
    assert batch["row_kind"].tolist() == [ROLLOUT, ROLLOUT, ROLLOUT, EXPERT] * 4
    for q in range(4):
        expert = trainer.expert_ids(rows[q])
        got = batch["completion_ids"][4 * q + 3][batch["completion_mask"][4 * q + 3].bool()].tolist()
        assert got == expert
        assert batch["rewards"][4 * q + 3].item() == 1.0  # the expert solution is correct
    expert_tokens = int(batch["expert_mask"].sum())
    generated = int(batch["completion_mask"].sum()) - expert_tokens
    parameters = sum(p.numel() for p in trainer.model.parameters())
    assert trainer.flops.total == parameters * (8 * generated + 6 * expert_tokens)


def test_plain_grpo_loss_equals_trls_own_dapo_loss(tiny):
    from trl import GRPOTrainer
    trainer, rows = _trainer(tiny, "grpo")
    batch = _generation_batch(trainer, rows)
    batch["advantages"] = torch.linspace(-1, 1, batch["advantages"].numel())  # non-zero, to compare
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop, which this test skips
    ours = trainer._compute_loss(trainer.model, batch)
    theirs = GRPOTrainer._compute_loss(trainer, trainer.model, batch)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
    assert ours.item() != 0


def test_prefix_rft_rows_start_with_the_expert_prefix_which_is_trained_on(tiny):
    trainer, rows = _trainer(tiny, "prefix_rft", prefixed_rollouts=2, prefix_ratio_min=0.5, prefix_ratio_max=0.5)
    batch = _generation_batch(trainer, rows)
    assert batch["row_kind"].tolist() == [ROLLOUT, ROLLOUT, PREFIXED, PREFIXED] * 4
    for i in range(16):
        length = int(batch["prefix_length"][i])
        if i % 4 < 2:
            assert length == 0
            continue
        expert = trainer.expert_ids(rows[i // 4])[:-1]
        assert length == int(0.5 * len(expert)) > 0
        assert batch["completion_ids"][i, :length].tolist() == expert[:length]
        assert batch["loss_mask"][i, :length].sum() == batch["expert_mask"][i, :length].sum() == length
        assert batch["loss_mask"][i, length:].sum() == batch["completion_mask"][i, length:].sum() > 0
    # the prompt itself no longer holds the prefix: same prompt for every row of a group
    assert torch.equal(batch["prompt_ids"][2], batch["prompt_ids"][0])


def test_prefix_rft_rows_of_a_question_share_one_prefix_and_their_own_baseline(tiny):
    trainer, rows = _trainer(tiny, "prefix_rft", prefixed_rollouts=2, prefix_ratio_min=0.1, prefix_ratio_max=0.9)
    batch = _generation_batch(trainer, rows)
    lengths = batch["prefix_length"].view(4, 4)[:, 2:]
    assert torch.equal(lengths[:, 0], lengths[:, 1])  # shared within a question
    assert len(set(lengths[:, 0].tolist())) > 1  # drawn per question (4 draws from 10-90%)
    rewards, kinds = batch["rewards"].view(4, 4), batch["row_kind"].view(4, 4)
    for group in range(4):
        plain, prefixed = rewards[group, :2], rewards[group, 2:]
        expected = torch.cat([plain - plain.mean(), prefixed - prefixed.mean()])
        assert batch["advantages"].view(4, 4)[group].tolist() == pytest.approx(expected.tolist())


def test_prefix_rft_schedule_shortens_the_prefixes_as_the_run_goes(tiny):
    trainer, rows = _trainer(tiny, "prefix_rft", prefixed_rollouts=2, prefix_ratio_min=0.5, prefix_ratio_max=0.9,
                             prefix_schedule="cosine", prefix_ratio_max_end=0.2)
    experts = torch.tensor([len(trainer.expert_ids(rows[q])) - 1 for q in range(4)])
    trainer.progress = lambda: 0.0
    early = _generation_batch(trainer, rows)["prefix_length"].view(4, 4)[:, 2]
    trainer.progress = lambda: 1.0
    late = _generation_batch(trainer, rows)["prefix_length"].view(4, 4)[:, 2]
    assert (early >= (0.5 * experts).long()).all() and (late <= (0.2 * experts).long()).all()
    with pytest.raises(ValueError, match="prefix_schedule"):
        _trainer(tiny, "prefix_rft", prefix_schedule="step")


def test_relift_round_mode_turns_a_full_buffer_into_an_sft_round(tiny):
    trainer, rows = _trainer(tiny, "relift", sft_mode="round")
    batch = _generation_batch(trainer, rows)  # an untrained model fails every question
    assert len(trainer.failed) == 4 and (batch["row_kind"] == ROLLOUT).all()
    trainer.failed.add_failed([dict(rows[q]) for q in range(4, 16) for _ in range(4)], [0.0] * 12, 4)
    batch = _generation_batch(trainer, rows)  # 16 buffered questions = a 16-row generation batch
    assert (batch["row_kind"] == EXPERT).all()
    assert (batch["expert_mask"] == batch["completion_mask"]).all()
    assert len(trainer.failed) == 0 and trainer.flops.tokens["sft"] == int(batch["completion_mask"].sum())


def test_relift_adds_an_sft_step_with_its_own_optimizer_on_the_newest_failed_questions(tiny):
    trainer, rows = _trainer(tiny, "relift", sft_questions=3, sft_lr=1e-2)
    _generation_batch(trainer, rows)  # 4 failed questions buffered, the RL batch untouched
    assert [r["prompt"] for r in trainer.failed.rows] == [rows[q]["prompt"] for q in range(4)]
    logged = {key: list(values) for key, values in trainer._metrics["train"].items()}
    before = [p.detach().clone() for p in trainer.model.parameters()]
    newest = [dict(rows[q]) for q in (3, 2, 1)]
    expected_grad = _nll_gradient(trainer, newest)
    assert trainer.maybe_sft_step()
    assert [r["prompt"] for r in trainer.failed.rows] == [rows[0]["prompt"]]  # the 3 newest left the buffer
    # AdamW's first step moves each weight by lr * sign(grad) (then decay): the step followed the NLL gradient
    moved = [(p.detach() - b) for p, b in zip(trainer.model.parameters(), before)]
    for delta, grad, b in zip(moved, expected_grad, before):
        sure = grad.abs() > 1e-4  # well above Adam's eps once the gradient norm is clipped to 1
        expected = -1e-2 * torch.sign(grad[sure]) - 1e-2 * 0.01 * b[sure]
        assert torch.allclose(delta[sure], expected, atol=2e-4)
    assert trainer.sft_optimizer is not trainer.optimizer
    assert trainer.flops.tokens["sft"] > 0  # counted as SFT tokens
    # the step logged only itself; the rollout metrics of the round are as they were
    assert {k: v for k, v in trainer._metrics["train"].items() if not k.startswith("relift/sft")} == logged
    assert trainer._metrics["train"]["relift/sft_step"] == [1.0]
    assert not trainer.maybe_sft_step() and len(trainer.failed) == 1  # 1 buffered < 3: no step
    with pytest.raises(ValueError, match="sft_mode"):
        _trainer(tiny, "relift", sft_mode="both")


def _nll_gradient(trainer, rows):
    """The gradient of the token-mean NLL (minus the entropy bonus) of these rows' expert solutions."""
    batch = trainer.expert_batch(rows)
    mask = batch["completion_mask"]
    input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    attention = torch.cat([batch["prompt_mask"], mask], dim=1)
    trainer.model.zero_grad()
    logps, entropies, _ = trainer._get_per_token_logps_and_entropies(
        trainer.model, input_ids, attention, batch["completion_ids"].size(1), compute_entropy=True)
    loss = ((-logps - trainer.args.entropy_coef * entropies) * mask).sum() / mask.sum()
    loss.backward()
    grads = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in trainer.model.parameters()]
    trainer.model.zero_grad()
    return grads


def test_entropy_bonus_subtracts_coef_times_the_step_mean_entropy_and_carries_a_gradient(tiny):
    trainer, rows = _trainer(tiny, "grpo")
    batch = _generation_batch(trainer, rows)
    batch["advantages"] = torch.zeros_like(batch["advantages"])  # no policy gradient: only the bonus moves
    trainer.current_gradient_accumulation_steps = 1
    input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    attention = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)

    def loss_and_grad(coef):
        trainer.args.entropy_coef = coef
        trainer.model.zero_grad()
        loss = trainer._compute_loss(trainer.model, batch)
        loss.backward()
        grad = sum(float(p.grad.abs().sum()) for p in trainer.model.parameters() if p.grad is not None)
        return loss.item(), grad

    plain, plain_grad = loss_and_grad(0.0)
    bonus, bonus_grad = loss_and_grad(0.01)
    with torch.no_grad():
        _, entropies, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, input_ids, attention, batch["completion_ids"].size(1), compute_entropy=True)
    tokens = batch["num_items_in_batch"] / trainer.args.steps_per_generation
    expected = 0.01 * float((entropies * batch["loss_mask"]).sum() / tokens)
    assert plain - bonus == pytest.approx(expected, rel=1e-4) and expected > 0
    assert plain_grad == 0.0 and bonus_grad > 0.0


def test_luffy_baseline_can_count_the_expert_row_as_its_authors_script_does(tiny):
    trainer, rows = _trainer(tiny, "luffy", baseline="group")
    batch = _generation_batch(trainer, rows)  # an untrained model fails every rollout; the expert row scores 1
    assert batch["advantages"].tolist() == pytest.approx([-0.25, -0.25, -0.25, 0.75] * 4)
    with pytest.raises(ValueError, match="baseline"):
        _trainer(tiny, "luffy", baseline="experts")


def test_cli_refuses_another_methods_flag():
    from examples.mixed_policy import train as train_module
    with pytest.raises(SystemExit):
        train_module.parse_args(["--method", "luffy", "--model", "m", "--data", "d", "--out", "o", "--gate", "2"])
    args = train_module.parse_args(["--method", "hpt", "--model", "m", "--data", "d", "--out", "o", "--gate", "2"])
    assert args.method_options == {"gate": 2}
    args = train_module.parse_args(["--method", "luffy", "--model", "m", "--data", "d", "--out", "o",
                                    "--entropy-coef", "0.001", "--baseline", "group"])
    assert args.method_options == {"entropy_coef": 0.001, "baseline": "group"}  # every method takes the bonus
