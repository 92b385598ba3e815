"""Hooks a user might already have set, for the chaining tests in tests/test_autoload.py."""
import os


def worker_setup():
    """A user's own worker_process_setup_hook: leaves a trace our hook must not erase."""
    os.environ["SFTRL_TEST_USER_SETUP_HOOK"] = "ran"


def runtime_env_hook(runtime_env):
    """A user's own RAY_RUNTIME_ENV_HOOK: adds one env var to every job."""
    env = dict(runtime_env or {})
    env["env_vars"] = dict(env.get("env_vars") or {}, SFTRL_TEST_USER_ENV_HOOK="ran")
    return env
