"""OpenRLHF weights every micro-batch and every rank equally (FACTS.md, bug 2).

Each micro-batch loss is a token mean (0.10.3: a token mean over that micro-batch on all ranks),
then DeepSpeed divides by GA and averages gradients over ranks. The fix wraps the trainer
methods that run one epoch: their loader is read one optimizer step ahead, the step's loss
tokens are counted over all ranks, and each micro-batch's loss is rescaled on its way into
`strategy.backward` (sftrl_patches/loss_window.py). The loss functions, the logged values and
everything else the trainer does stay OpenRLHF's own.

Covered: SFT 0.7.0-0.10.3 (`SFTLoss`), actor and critic 0.8.6-0.10.3 (`PolicyLoss` with its KL and
entropy terms, `ValueLoss`). Dynamic batching (actor and critic): on 0.8.6-0.10.2 each micro-batch's
token mean times its share of the step's samples on its rank is rescaled to the step's token mean
(loss_window.DynamicStepWindows); 0.10.3 already divides by the step's tokens on all ranks. Either
way the step's micro-batches must all reach the optimizer: openrlhf_dynamic_batch.py.
Left as they are, with a warning: ring attention, tensor parallel, sequence-level losses (GSPO).
"""
import functools

from .._version import VersionRange
from ..conditions import All, Any, Fact, several_micro_batches, several_ranks
from ..registry import Patch, Target, _logger

DISTRIBUTION = "openrlhf"
FIXED_IN = "0.10.4"
LINKS = ("https://github.com/OpenRLHF/OpenRLHF/pull/1249", "https://arxiv.org/abs/2604.23747")
SFT_RUN = Fact("trainer", "==", "openrlhf-sft", "OpenRLHF's SFT trainer")
RL_RUN = Fact("trainer", "==", "openrlhf-ppo", "OpenRLHF's PPO/GRPO trainer")
MEANS_OF_MEANS = ("the step's loss is a mean of {micro_batches_per_step} micro-batch means on each of "
                  "{data_parallel_size} data-parallel ranks, not a mean over the step's tokens: a token in a short "
                  "micro-batch or on a rank with few tokens weighs more than one elsewhere")
# Where the window rescaling is exact: what unsupported_reason() refuses at run time, as a predicate.
NO_SHARED_SAMPLES = All(Fact("tensor_parallel_size", "==", 1, "no DeepSpeed tensor parallelism"),
                        Fact("ring_attn_size", "==", 1, "no ring attention"))
TOKEN_LEVEL = Fact("policy_loss_type", "!=", "gspo", "a token-level policy loss (not GSPO)")
UPGRADE = ("upgrade to openrlhf>=0.10.4 (it pins deepspeed>=0.19.1), or stay on a release this "
           "package patches (SFT 0.7.0-0.10.3, PPO/GRPO 0.8.6-0.10.3)")


_ABSENT = object()
DYNAMIC_FLAGS = ("use_dynamic_batch", "train.dynamic_batch_enable")  # flat (<= 0.10.1), dotted (>= 0.10.2)


def read_arg(args, *names, default=None):
    """The first of `names` present on args; dotted names walk OpenRLHF's >=0.10.2 nested config."""
    for name in names:
        value = args
        for part in name.split("."):
            value = getattr(value, part, _ABSENT)
            if value is _ABSENT:
                break
        if value is not _ABSENT:
            return value
    return default


def unsupported_reason(strategy, loss_fn=None):
    """Why this run is left unpatched, or '' when the window rescaling is exact for it."""
    args = getattr(strategy, "args", None)
    if getattr(strategy, "ring_attn_group", None) is not None:
        return "ring attention (ranks of one ring share a sample)"
    tensor_parallel = read_arg(args, "ds_tensor_parallel_size", "ds.tensor_parallel_size", default=1) or 1
    if int(tensor_parallel) > 1:
        return "DeepSpeed tensor parallelism"
    if loss_fn is not None and getattr(loss_fn, "token_level_loss", True) is False:
        return "a sequence-level loss (token_level_loss=False, e.g. GSPO)"
    return ""


def _mode(function):
    from .. import loss_window
    # 0.10.3 already divides each micro-batch by its token count summed over ranks (times D).
    if "get_loss_batch_info" in function.__globals__:
        return loss_window.GLOBAL_MICRO_MEAN
    return loss_window.LOCAL_MEAN


_WARNED = set()


def _warn_once(patch_name, where, reason):
    """where: the qualified name of the trainer method left as it is."""
    if (patch_name, reason) not in _WARNED:
        _WARNED.add((patch_name, reason))
        _logger().warning("sftrl_patches: %s left %s as it is for this run: %s; the loss is still a mean "
                          "of per-micro-batch means", patch_name, where, reason)


def _windows(patch_name, original, loader, strategy, count, mode):
    from .. import loss_window
    return loss_window.StepWindows(
        loader, strategy.accumulated_gradient, count, mode,
        on_fallback=lambda reason: _warn_once(patch_name, original.__qualname__, reason))


# ---- SFT --------------------------------------------------------------------------------------

def _sft_loss_tokens(batch):
    # SFTTrainer.fit unpacks (inputs, attention_masks, loss_masks) and trains on loss_mask[:, :-1].
    _, _, loss_masks = batch
    return loss_masks.squeeze(1)[:, :-1].sum().item()


def wrap_sft_fit(original):
    mode = _mode(original)

    def fit(self, *args, **kwargs):
        from .. import loss_window
        reason = unsupported_reason(self.strategy, getattr(self, "loss_fn", None))
        if reason:
            _warn_once(SFT.name, original.__qualname__, reason)
            return original(self, *args, **kwargs)
        windows = _windows(SFT.name, original, self.train_dataloader, self.strategy, _sft_loss_tokens, mode)
        with loss_window.replaced_attribute(self, "train_dataloader", windows), \
                loss_window.scaled_backward(self.strategy, windows):
            return original(self, *args, **kwargs)
    return fit


# ---- PPO / GRPO: actor and critic -------------------------------------------------------------

def _action_tokens(experience):
    mask = experience.action_mask
    if mask is None:
        from ..loss_window import CountError
        raise CountError("experience.action_mask is None")
    return mask.sum().item()


def _wrap_ppo_train(patch_name, loss_attribute):
    def make_wrapper(original):
        mode = _mode(original)

        def ppo_train(self, *args, **kwargs):
            from .. import loss_window
            reason = unsupported_reason(self.strategy, getattr(self, loss_attribute, None))
            if reason:
                _warn_once(patch_name, original.__qualname__, reason)
                return original(self, *args, **kwargs)
            if read_arg(self.strategy.args, *DYNAMIC_FLAGS, default=False):
                if mode != loss_window.LOCAL_MEAN:
                    # 0.10.3: dynamic micro-batches are already divided by the step's tokens on all ranks.
                    return original(self, *args, **kwargs)
                windows = loss_window.DynamicStepWindows(
                    None, self.replay_buffer, _action_tokens,
                    on_fallback=lambda why: _warn_once(patch_name, original.__qualname__, why))
            else:
                windows = _windows(patch_name, original, None, self.strategy, _action_tokens, mode)

            def windowed_loader(data_loader_class):
                # ppo_train builds its own DataLoader over the replay buffer: hand back that
                # loader wrapped, so that its shuffled order is the order we count.
                @functools.wraps(data_loader_class)
                def build(*loader_args, **loader_kwargs):
                    windows.loader = data_loader_class(*loader_args, **loader_kwargs)
                    return windows
                return build

            with loss_window.replaced_global(original, "DataLoader", windowed_loader), \
                    loss_window.scaled_backward(self.strategy, windows):
                return original(self, *args, **kwargs)
        return ppo_train
    return make_wrapper


# ---- records ----------------------------------------------------------------------------------
# Fingerprints from sftrl_patches._fingerprint over every release's wheel (0.6.4-0.11.2).

SFT = Patch(
    name="openrlhf-sft-loss-aggregation",
    title="OpenRLHF SFT: loss is a mean of per-micro-batch (and per-rank) token means",
    distribution=DISTRIBUTION,
    affected=VersionRange("0.7.0", FIXED_IN),
    fixed_in=FIXED_IN,
    targets=(
        Target("openrlhf.trainer.sft_trainer", "SFTTrainer", "fit", wrap_sft_fit,
               fingerprints={"e88edebfa8787682": "0.7.0-0.9.5", "7f52ffcb147f84d0": "0.9.6",
                             "2bf401a30de363eb": "0.9.7-0.10.1.post2", "e3f6e6dc8e59bdad": "0.10.2",
                             "d27995e0458b0a56": "0.10.3"},
               fixed_fingerprints={"3148056c5f2cee35": "0.10.4-0.11.1", "3cb5299e17709170": "0.11.2"}),
        # Guard: the rescaling assumes SFTLoss is a token mean over the mask it is given.
        Target("openrlhf.models.loss", "SFTLoss", "forward", None,
               fingerprints={"427bbe3d391a88b2": "0.7.0-0.10.2", "40b76af85a819045": "0.10.3-0.11.2"}),
    ),
    when=All(SFT_RUN, Any(several_micro_batches(), several_ranks())),
    covers=NO_SHARED_SAMPLES,
    impact=MEANS_OF_MEANS,
    links=LINKS,
    remediation=UPGRADE,
)

ACTOR = Patch(
    name="openrlhf-actor-loss-aggregation",
    title="OpenRLHF PPO/GRPO actor: policy, KL and entropy losses are means of per-micro-batch means",
    distribution=DISTRIBUTION,
    affected=VersionRange("0.8.6", FIXED_IN),
    fixed_in=FIXED_IN,
    targets=(
        Target("openrlhf.trainer.ray.ppo_actor", "ActorPPOTrainer", "ppo_train",
               _wrap_ppo_train("openrlhf-actor-loss-aggregation", "actor_loss_fn"),
               fingerprints={"3bab8669e71a20db": "0.8.6-0.9.1", "9522f4844dbdd16e": "0.9.2-0.9.7",
                             "99f2e7d5391090fa": "0.9.8", "4be3f5056b1423cb": "0.9.9-0.9.10",
                             "ac900046d938fddd": "0.10.0-0.10.1.post2", "83cd1da177b61c7d": "0.10.2-0.10.3"},
               fixed_fingerprints={"798f751e7184a770": "0.10.4-0.11.2"}),
        # Guard: one backward per micro-batch of a loss whose terms are token means over action_mask.
        Target("openrlhf.trainer.ray.ppo_actor", "ActorPPOTrainer", "training_step", None,
               fingerprints={"51f13a3cd5d010b7": "0.8.6-0.8.7", "05e5a7b7f9ce591e": "0.8.8",
                             "2ff583dc69d95ecb": "0.8.9-0.9.1", "56557d2cd5abf1b1": "0.9.2-0.9.5",
                             "fb5ca453dad55167": "0.9.6-0.9.7", "9ceff9321831e37c": "0.9.8-0.9.10",
                             "15f740395c6689cc": "0.10.0-0.10.1.post2", "b5c81e8c2a082eb2": "0.10.2",
                             "6bf0fdb66fdb34de": "0.10.3"},
               fixed_fingerprints={"9853f090d748afed": "0.10.4-0.11.0", "7123b1f53d31ffc3": "0.11.1",
                                   "327ba02586f48941": "0.11.2"}),
    ),
    when=All(RL_RUN, Any(several_micro_batches(), several_ranks())),
    covers=All(NO_SHARED_SAMPLES, TOKEN_LEVEL),
    impact="policy, KL and entropy losses: " + MEANS_OF_MEANS,
    links=LINKS,
    remediation=UPGRADE,
)

CRITIC = Patch(
    name="openrlhf-critic-loss-aggregation",
    title="OpenRLHF PPO critic: value loss is a mean of per-micro-batch means",
    distribution=DISTRIBUTION,
    affected=VersionRange("0.8.6", FIXED_IN),
    fixed_in=FIXED_IN,
    targets=(
        Target("openrlhf.trainer.ray.ppo_critic", "CriticPPOTrainer", "ppo_train",
               _wrap_ppo_train("openrlhf-critic-loss-aggregation", "critic_loss_fn"),
               fingerprints={"7b8ec038d8154cf0": "0.8.6-0.9.8", "e11bf9d64667968a": "0.9.9-0.10.1.post2",
                             "085ef89b3f3fa260": "0.10.2-0.10.3"},
               fixed_fingerprints={"ce2d59f8c278939a": "0.10.4-0.11.2"}),
        Target("openrlhf.trainer.ray.ppo_critic", "CriticPPOTrainer", "training_step", None,
               fingerprints={"a82eb959d4be4e80": "0.8.6-0.9.5", "30a0fd75438592ef": "0.9.6-0.10.1.post2",
                             "d76c1e78e29a2561": "0.10.2", "77ca7409f7ebba8f": "0.10.3"},
               fixed_fingerprints={"039e7e73874effd6": "0.10.4", "0f0759133d976561": "0.11.0-0.11.2"}),
    ),
    when=All(RL_RUN, Fact("critic", "==", True), Any(several_micro_batches(), several_ranks())),
    covers=NO_SHARED_SAMPLES,
    impact="value loss: " + MEANS_OF_MEANS,
    links=LINKS,
    remediation=UPGRADE,
)

SFT_BEFORE_0_7 = Patch(
    name="openrlhf-sft-loss-gptlmloss",
    title="OpenRLHF SFT before 0.7.0 (GPTLMLoss): same per-micro-batch mean",
    distribution=DISTRIBUTION,
    affected=VersionRange(None, "0.7.0"),
    fixed_in=FIXED_IN,
    no_patch_reason="GPTLMLoss-era trainers are not patched by this package",
    when=All(SFT_RUN, Any(several_micro_batches(), several_ranks())),
    impact=MEANS_OF_MEANS,
    links=LINKS,
    remediation=UPGRADE,
)

RL_BEFORE_0_8_6 = Patch(
    name="openrlhf-rl-loss-before-0.8.6",
    title="OpenRLHF PPO/GRPO before 0.8.6: same per-micro-batch mean in actor and critic",
    distribution=DISTRIBUTION,
    affected=VersionRange(None, "0.8.6"),
    fixed_in=FIXED_IN,
    no_patch_reason="actor/critic trainers before 0.8.6 are not patched by this package",
    when=All(RL_RUN, Any(several_micro_batches(), several_ranks())),
    impact=MEANS_OF_MEANS,
    links=LINKS,
    remediation=UPGRADE,
)

ORDER = 60  # where its patches sit in the registry (application and doctor order)
PATCHES = (SFT, ACTOR, CRITIC, SFT_BEFORE_0_7, RL_BEFORE_0_8_6)
