"""Arm the patches in every Ray worker of a job, without importing Ray here.

Three ways, from least to most automatic:
- runtime_env(base): a job's runtime_env with our worker_process_setup_hook added (string form,
  so it also works with `ray job submit --runtime-env-json`), chained to a hook already there;
- RAY_RUNTIME_ENV_HOOK=sftrl_patches.integrations.ray.runtime_env_hook: Ray calls it on the
  runtime_env of every `ray.init` in that process, so a job that calls `ray.init` itself
  (OpenRLHF) gets the hook with its own env_vars kept. install_runtime_env_hook() sets it and
  chains to a hook set before; `python -m sftrl_patches.launch` does that for you;
- autoload (sftrl_patches.pth): workers are interpreters of the same environment, so they arm
  themselves; the hook matters where autoload is off or the workers run elsewhere.
"""
import os

SETUP_HOOK = "sftrl_patches.integrations.ray.setup_worker"
RUNTIME_ENV_HOOK = "sftrl_patches.integrations.ray.runtime_env_hook"
RAY_HOOK_VAR = "RAY_RUNTIME_ENV_HOOK"
# Where the hooks we displaced are kept, so ours can call them.
NEXT_SETUP_HOOK_VAR = "SFTRL_PATCHES_NEXT_SETUP_HOOK"
PREVIOUS_RUNTIME_ENV_HOOK_VAR = "SFTRL_PATCHES_PREVIOUS_RUNTIME_ENV_HOOK"


def _resolve(dotted):
    import pkgutil
    return pkgutil.resolve_name(dotted)


def setup_worker():
    """The worker_process_setup_hook: arm the patches, then run the hook we displaced, if any."""
    try:
        import sftrl_patches  # noqa: F401  (importing arms the import hook)
    except Exception:  # a worker must start even if we cannot arm
        import logging
        logging.getLogger("sftrl_patches").exception("sftrl_patches: could not arm the patches in this Ray worker")
    chained = os.environ.get(NEXT_SETUP_HOOK_VAR, "").strip()
    if chained and chained != SETUP_HOOK:
        _resolve(chained)()  # the user's own hook: its errors are theirs to see


def runtime_env(base=None):
    """A copy of `base` (a dict or ray.runtime_env.RuntimeEnv, or None) whose workers arm the patches.

    A setup hook already in `base` keeps running after ours (passed through an env var); a
    hook given as a function cannot be chained by name, so that raises ValueError.
    """
    env = dict(base or {})
    hook = env.get("worker_process_setup_hook")
    if hook is None or hook == SETUP_HOOK:
        env["worker_process_setup_hook"] = SETUP_HOOK
        return env
    if not isinstance(hook, str):
        raise ValueError("runtime_env already has a worker_process_setup_hook given as a function; give it as a "
                         f"dotted string ('module.function') so {SETUP_HOOK} can chain to it")
    env_vars = dict(env.get("env_vars") or {})
    if env_vars.get(NEXT_SETUP_HOOK_VAR, hook) != hook:
        raise ValueError(f"runtime_env sets {NEXT_SETUP_HOOK_VAR}={env_vars[NEXT_SETUP_HOOK_VAR]!r} and a different "
                         f"worker_process_setup_hook {hook!r}")
    env_vars[NEXT_SETUP_HOOK_VAR] = hook
    env["env_vars"] = env_vars
    env["worker_process_setup_hook"] = SETUP_HOOK
    return env


def runtime_env_hook(runtime_env_in):
    """Ray's RAY_RUNTIME_ENV_HOOK: called by every ray.init in this process with the job's
    runtime_env (already merged with `ray job submit`'s). Never breaks ray.init."""
    previous = os.environ.get(PREVIOUS_RUNTIME_ENV_HOOK_VAR, "").strip()
    if previous and previous != RUNTIME_ENV_HOOK:
        runtime_env_in = _resolve(previous)(runtime_env_in)
    try:
        return runtime_env(runtime_env_in)
    except ValueError as exc:
        import logging
        logging.getLogger("sftrl_patches").warning(
            "sftrl_patches: Ray workers of this job rely on autoload only: %s", exc)
        return runtime_env_in


def install_runtime_env_hook(environ=None):
    """Point RAY_RUNTIME_ENV_HOOK at ours in `environ` (os.environ by default), keeping a hook set
    before as the one ours calls first. Children inherit it. Returns the displaced hook or ''."""
    environ = os.environ if environ is None else environ
    current = environ.get(RAY_HOOK_VAR, "").strip()
    if current == RUNTIME_ENV_HOOK:
        return environ.get(PREVIOUS_RUNTIME_ENV_HOOK_VAR, "")
    if current:
        environ[PREVIOUS_RUNTIME_ENV_HOOK_VAR] = current
    environ[RAY_HOOK_VAR] = RUNTIME_ENV_HOOK
    return current
