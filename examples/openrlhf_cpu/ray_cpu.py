"""OpenRLHF's Ray job (train_ppo_ray) on a CPU, for tests and demos.

`start()` brings up a local Ray cluster before OpenRLHF does (it calls ray.init only when Ray is not
running), with fake GPUs because OpenRLHF asks one per actor and engine, and with a job runtime_env
that keeps OpenRLHF's own env_vars and prepares every worker through `worker_setup`:

- the working vLLM stand-in (vllm_hf/) first on the path, the import-only flash_attn after it;
- the torch.cuda no-ops of cuda.py, and the replay buffer on the CPU;
- with SFTRL_OPENRLHF_METRICS=FILE and --use_tensorboard, one JSON line per logged RL step.

The patches themselves are not armed here: they reach the workers through autoload (the package's
.pth), as they would on a GPU box.
"""
import json
import os
import sys

from . import STAND_INS

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
VLLM_HF = os.path.join(HERE, "vllm_hf")
METRICS_VAR = "SFTRL_OPENRLHF_METRICS"
SETUP_HOOK = "examples.openrlhf_cpu.ray_cpu.worker_setup"
# what OpenRLHF's own ray.init would have set (train_ppo_ray.train)
OPENRLHF_ENV = {"TOKENIZERS_PARALLELISM": "true", "NCCL_DEBUG": "WARN", "RAY_ENABLE_ZERO_COPY_TORCH_TENSORS": "1"}


def python_path(existing=None):
    """The stand-in vLLM before anything else (an import-only vllm may be on the path), the
    repository for this module, the import-only stand-ins last."""
    parts = [VLLM_HF, ROOT] + [p for p in (existing or "").split(os.pathsep) if p] + [STAND_INS]
    return os.pathsep.join(dict.fromkeys(parts))


def worker_setup():
    """Ray's worker_process_setup_hook: runs in every worker before any task."""
    if VLLM_HF not in sys.path:
        sys.path.insert(0, VLLM_HF)
    if STAND_INS not in sys.path:
        sys.path.append(STAND_INS)
    from . import cuda
    cuda.install()
    finder = post_import_finder()
    finder.watch("openrlhf.trainer.ppo_utils.replay_buffer", cuda.replay_buffer_on_cpu)
    if os.environ.get(METRICS_VAR):
        finder.watch("openrlhf.utils.logging_utils", metrics_to_file)


def post_import_finder():
    """sftrl_patches' post-import finder, loaded from its file rather than imported: importing the
    package would arm the patches here, and they must reach the workers through autoload alone."""
    import importlib.util
    name = "sftrl_cpu_post_import"
    if name not in sys.modules:
        origin = importlib.util.find_spec("sftrl_patches").submodule_search_locations[0]
        spec = importlib.util.spec_from_file_location(name, os.path.join(origin, "_bootstrap.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name].install()


def metrics_to_file(module):
    """For openrlhf.utils.logging_utils, once imported: its TensorboardLogger (--use_tensorboard DIR)
    appends each logged step as a JSON line to METRICS_VAR's file instead of writing event files.
    The class is changed in place because Ray carries the trainer's methods to its actor by value,
    so a wrapper on a trainer method would never be called there."""
    board = module.TensorboardLogger
    if getattr(board, "_sftrl_metrics", False):
        return

    def __init__(self, args):
        self.path = os.environ[METRICS_VAR]

    def write(self, global_step, logs_dict, **extra):
        row = {"step": global_step, **extra}
        for key, value in (logs_dict or {}).items():
            try:
                row[key] = float(value)
            except (TypeError, ValueError):
                continue  # the decoded sample and other text
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")

    board.__init__ = __init__
    board.log_train = lambda self, global_step, logs_dict: write(self, global_step, logs_dict)
    board.log_eval = lambda self, global_step, logs_dict: write(self, global_step, logs_dict, eval=True)
    board.close = lambda self: None
    board._sftrl_metrics = True


def start(num_gpus, num_cpus=None):
    """A local Ray cluster for one job. num_gpus is what OpenRLHF will ask for (actors + engines);
    the CPUs are logical too, so every actor gets scheduled; the machine's cores are shared."""
    import ray
    os.environ["PYTHONPATH"] = python_path(os.environ.get("PYTHONPATH"))
    env_vars = {name: os.environ.get(name, value) for name, value in OPENRLHF_ENV.items()}
    env_vars["PYTHONPATH"] = os.environ["PYTHONPATH"]
    ray.init(num_gpus=num_gpus, num_cpus=num_cpus or num_gpus + 2, include_dashboard=False,
             logging_level="WARNING", runtime_env={"env_vars": env_vars, "worker_process_setup_hook": SETUP_HOOK})
    return ray
