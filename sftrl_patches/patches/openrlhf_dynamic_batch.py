"""OpenRLHF dynamic batching never tells DeepSpeed which backward() calls end an optimizer step.

With dynamic batching (`--use_dynamic_batch` up to 0.10.1, `--train.dynamic_batch_enable` from
0.10.2) OpenRLHF sets DeepSpeed's GA to 1, calls backward() once per micro-batch and step() only
where `replay_buffer.dynamic_optimizer_step[step]` is 1. DeepSpeed then treats every backward() as
the end of a step: only the last micro-batch of a step counts (0.18.3-0.19.x without offload,
< 0.19 with offload), the run crashes (0.17.6-0.18.2, OpenRLHF #1131), or with offload on 0.19.x
the CPU accumulator carries every earlier step.

The fix is DeepSpeed's own interface for manual accumulation: before each micro-batch, the
wrapped `training_step` calls `set_gradient_accumulation_boundary(False)` on the engine, and
`True` for the micro-batch that ends the step. One rule on every DeepSpeed release OpenRLHF pins
(0.17.6-0.19.6); chosen over `managed_gradient_accumulation: false`, which exists only from
DeepSpeed 0.19.5 (0.19.4 without offload) and must be set before the engine is built. The step's
gradient is then the sum of its micro-batches, which is what OpenRLHF's per-micro-batch loss
scales are written for. On DeepSpeed releases where the documented pattern itself is broken this
package's DeepSpeed patches fix it (#7718 on 0.17.6-0.18.2, offload multi-backward on
0.15.2-0.18.9); 0.19.x handles it upstream. The loss weighting of these micro-batches is the
loss-aggregation patches' job (openrlhf_loss.py).

ZeRO stages 1 and 2 only, where the bug is measured; other stages are left as they are.
"""
from .._version import VersionRange, parse
from ..conditions import All, Any, Fact
from ..registry import Patch, Target, _logger
from .openrlhf_loss import DYNAMIC_FLAGS, RL_RUN, read_arg

DISTRIBUTION = "openrlhf"
NAME = "openrlhf-dynamic-batch-zero12"

_WARNED = set()


def _warn_once(reason):
    if reason not in _WARNED:
        _WARNED.add(reason)
        _logger().warning("sftrl_patches: %s left this dynamic-batching run as it is: %s", NAME, reason)


def _engine(model):
    """The DeepSpeed engine behind an OpenRLHF model: Actor keeps it in .model, the critic is it."""
    if hasattr(model, "set_gradient_accumulation_boundary"):
        return model
    inner = getattr(model, "model", None)
    if inner is not None and hasattr(inner, "set_gradient_accumulation_boundary"):
        return inner
    return None


def _zero_stage(engine):
    try:
        return int(engine.zero_optimization_stage())
    except Exception:  # noqa: BLE001 - an engine without the query: do not guess
        return None


def wrap_training_step(model_attribute):
    """model_attribute: 'actor' or 'critic', the trainer attribute holding the trained model."""
    def make_wrapper(original):
        import inspect  # here, not at import time: `import sftrl_patches` stays light
        step_index = list(inspect.signature(original).parameters).index("step")

        def training_step(self, *args, **kwargs):
            if not read_arg(getattr(self, "args", None), *DYNAMIC_FLAGS, default=False):
                return original(self, *args, **kwargs)
            engine = _engine(getattr(self, model_attribute, None))
            stage = None if engine is None else _zero_stage(engine)
            if engine is None:
                _warn_once(f"no DeepSpeed engine found on {type(self).__name__}.{model_attribute}")
            elif stage not in (1, 2):
                _warn_once(f"ZeRO stage {stage} (the patch covers stages 1 and 2)")
            else:
                try:
                    step = kwargs["step"] if "step" in kwargs else args[step_index - 1]
                    ends_step = bool(self.replay_buffer.dynamic_optimizer_step[step])
                except (AttributeError, IndexError, KeyError, TypeError) as exc:  # never break the job
                    _warn_once(f"cannot tell where the optimizer step ends ({exc!r})")
                else:
                    engine.set_gradient_accumulation_boundary(ends_step)
            return original(self, *args, **kwargs)
        return training_step
    return make_wrapper


# Fingerprints from sftrl_patches._fingerprint over every release's wheel (0.8.6-0.11.2).

def dynamic_batch_impact(run):
    """What the run's DeepSpeed makes of the micro-batches (measured: benchmarks/results/dynamic_batch.md)."""
    version = parse(run.get("versions", {}).get("deepspeed") or "")
    offload = run.get("offload_optimizer") == "cpu"
    if version is None:
        return ("depending on DeepSpeed: a crash in the second backward (0.17.6-0.18.2), only the last micro-batch "
                "of each step (0.18.3-0.19.x), or with --adam_offload on 0.19.x a lost first micro-batch and "
                "earlier steps carried into later ones")
    if parse("0.17.6") <= version < parse("0.18.3") and not offload:
        return "the second backward of a step raises TypeError (OpenRLHF #1131)"
    if version >= parse("0.19.0") and offload:
        return ("step 1 loses its first micro-batch, and every later update also carries the gradients of all "
                "earlier steps")
    return "the optimizer sees only the last micro-batch of every step"

DYNAMIC_BATCH = Patch(
    name=NAME,
    title="OpenRLHF dynamic batching with ZeRO-1/2: DeepSpeed is never told which backward() ends a step",
    distribution=DISTRIBUTION,
    affected=VersionRange("0.8.6", None),
    verified_through="0.11.2",
    targets=(
        Target("openrlhf.trainer.ray.ppo_actor", "ActorPPOTrainer", "training_step", wrap_training_step("actor"),
               fingerprints={"51f13a3cd5d010b7": "0.8.6-0.8.7", "05e5a7b7f9ce591e": "0.8.8",
                             "2ff583dc69d95ecb": "0.8.9-0.9.1", "56557d2cd5abf1b1": "0.9.2-0.9.5",
                             "fb5ca453dad55167": "0.9.6-0.9.7", "9ceff9321831e37c": "0.9.8-0.9.10",
                             "15f740395c6689cc": "0.10.0-0.10.1.post2", "b5c81e8c2a082eb2": "0.10.2",
                             "6bf0fdb66fdb34de": "0.10.3", "9853f090d748afed": "0.10.4-0.11.0",
                             "7123b1f53d31ffc3": "0.11.1", "327ba02586f48941": "0.11.2"}),
        Target("openrlhf.trainer.ray.ppo_critic", "CriticPPOTrainer", "training_step", wrap_training_step("critic"),
               fingerprints={"a82eb959d4be4e80": "0.8.6-0.9.5", "30a0fd75438592ef": "0.9.6-0.10.1.post2",
                             "d76c1e78e29a2561": "0.10.2", "77ca7409f7ebba8f": "0.10.3",
                             "039e7e73874effd6": "0.10.4", "0f0759133d976561": "0.11.0-0.11.2"}),
        # Guard: one step's micro-batches are the runs of dynamic_optimizer_step that end in a 1.
        Target("openrlhf.trainer.ppo_utils.replay_buffer", "NaiveReplayBuffer", "setup_dynamic_batch", None,
               fingerprints={"2c81902e94c687fc": "0.8.6-0.9.7", "d740262ad4c167e0": "0.9.8-0.10.1.post2",
                             "61d088883659b010": "0.10.2", "f3ee06f22fa5c25e": "0.10.3-0.11.2"}),
    ),
    when=All(RL_RUN, Fact("dynamic_batch", "==", True, "--use_dynamic_batch (<= 0.10.1) or "
                          "--train.dynamic_batch_enable (>= 0.10.2)"), Fact("zero_stage", "in", (1, 2)),
             # Without offload, DeepSpeed before 0.17.6 sums backward calls with no boundary set.
             Any(Fact("offload_optimizer", "==", "cpu"),
                 All(Fact("offload_optimizer", "==", "none", "no optimizer offload"),
                     Fact("version:deepspeed", ">=", "0.17.6")))),
    impact=dynamic_batch_impact,
    links=("https://github.com/OpenRLHF/OpenRLHF/issues/1131", "https://github.com/deepspeedai/DeepSpeed/pull/7981"),
    effect=("measured on OpenRLHF's own ppo_train, 3 steps of 2-4 uneven micro-batches (benchmarks/results/"
            "dynamic_batch.md): DeepSpeed 0.17.6-0.18.2 (OpenRLHF 0.8.11, 0.9.0) crash in the second backward (#1131); "
            "0.18.3-0.18.9 (0.9.1-0.10.3) and 0.19.x without --adam_offload keep only the last micro-batch of each "
            "step (updates 73-104% off the step's token-mean gradient); 0.19.x with --adam_offload (0.10.4+) loses "
            "the first micro-batch of the first step and every later update carries earlier steps. Patched: every "
            "micro-batch counts with its token-mean weight (1.2e-7 max abs diff, fp32)"),
    remediation="install sftrl-patches (it sets the boundary), or train without dynamic batching",
    advisory=True,
)

ORDER = 70  # where its patches sit in the registry (application and doctor order)
PATCHES = (DYNAMIC_BATCH,)
