"""The `launchers` check: do launcher ranks get the patches, and do our switches reach remote nodes?

DeepSpeed's multi-node runner (pdsh, OpenMPI, MVAPICH, ...) exports to remote nodes only the
variables whose names start with a few prefixes, plus the lines of `.deepspeed_env` in the
home and the current folder. Read statically from the installed runner: no DeepSpeed import.
"""
import ast
import os

from .._config import SWITCH_VARS


def deepspeed_export_prefixes(runner_path):
    """The EXPORT_ENVS prefixes named as a list literal in deepspeed/launcher/runner.py, or None."""
    try:
        with open(runner_path, encoding="utf-8") as handle:
            tree = ast.parse(handle.read())
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "EXPORT_ENVS" for t in node.targets):
            try:
                return [str(value) for value in ast.literal_eval(node.value)]
            except ValueError:
                return None
    return None


def deepspeed_env_files(environ=None, cwd=None):
    """The .deepspeed_env files the runner would read, in its order (home, then current folder)."""
    environ = os.environ if environ is None else environ
    name = environ.get("DS_ENV_FILE", ".deepspeed_env")
    folders = [os.path.expanduser("~"), cwd or os.getcwd()]
    return [os.path.join(f, name) for f in dict.fromkeys(folders) if os.path.isfile(os.path.join(f, name))]


def read_env_file(path):
    values = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            key, sep, value = line.rstrip("\n").partition("=")
            if sep:
                values[key.strip()] = value.strip()
    return values


def remote_switch_problems(environ, prefixes, env_files):
    """Lines describing switches that remote nodes of a multi-node DeepSpeed run would not share."""
    forwarded = {}
    for path in env_files:
        forwarded.update(read_env_file(path))
    problems = []
    for var in SWITCH_VARS:
        local = environ.get(var)
        by_prefix = local is not None and prefixes is not None and any(var.startswith(p) for p in prefixes)
        if local is not None and not by_prefix and forwarded.get(var) != local:
            where = f"{var}={forwarded[var]} in .deepspeed_env" if var in forwarded else "not in .deepspeed_env"
            problems.append(f"{var}={local} is set here but DeepSpeed's multi-node runner would not pass it to "
                            f"remote nodes ({where}): they would run with a different patch setting; add the line "
                            f"`{var}={local}` to .deepspeed_env")
        elif local is None and var in forwarded:
            problems.append(f".deepspeed_env sets {var}={forwarded[var]} for remote nodes, but this node does not "
                            "have it: ranks here and there would differ")
    return problems
