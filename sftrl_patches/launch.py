"""python -m sftrl_patches.launch [launcher options] MODULE|SCRIPT.py [ARGS...]

Arms the patches in this process, points Ray's RAY_RUNTIME_ENV_HOOK at ours (so a `ray.init`
in the job arms its workers too), then runs MODULE (or SCRIPT.py) as __main__ with ARGS.
Use it where a launcher starts fresh interpreters:
  deepspeed --module sftrl_patches.launch openrlhf.cli.train_sft ...
  torchrun --nproc_per_node 8 -m sftrl_patches.launch llamafactory.launcher train config.yaml
  accelerate launch -m sftrl_patches.launch trl.scripts.sft ...
Options that a launcher puts before the module (DeepSpeed's --local_rank=N) are passed on to it.
"""
import os
import runpy
import sys

import sftrl_patches  # noqa: F401  (importing arms the import hook)
from . import _config
from .integrations import ray as ray_integration

USAGE = __doc__.split("\n\n")[0]
# Put in front of the module by launchers, meant for the module.
_LAUNCHER_OPTIONS = ("--local_rank", "--local-rank")


def split_argv(argv):
    """(target, args for the target) from our argv; launcher options move behind the target."""
    passed_on = []
    rest = list(argv)
    while rest and rest[0].startswith(_LAUNCHER_OPTIONS):
        option = rest.pop(0)
        passed_on.append(option)
        if "=" not in option and rest:
            passed_on.append(rest.pop(0))
    if rest and rest[0] == "--":
        rest.pop(0)
    if not rest:
        return None, passed_on
    return rest[0], passed_on + rest[1:]


def _is_script(target):
    return target.endswith(".py") or os.path.isfile(target)


def _find_module(name):
    import importlib.util
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):  # a parent package is missing, or the name is malformed
        return None


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    target, args = split_argv(argv)
    if target is None or target.startswith("-"):
        sys.stderr.write(f"usage: {USAGE}\nsftrl_patches.launch: error: name the module or script to run\n")
        return 2
    if _config.disabled_names() != "all":
        ray_integration.install_runtime_env_hook()
    sys.argv = [target] + args
    if _is_script(target):
        sys.path[0] = os.path.dirname(os.path.abspath(target))  # as `python SCRIPT.py` would
        runpy.run_path(target, run_name="__main__")
    elif _find_module(target) is None:
        sys.stderr.write(f"sftrl_patches.launch: error: no module named {target!r}\n")
        return 1
    else:
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
