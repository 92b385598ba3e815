"""What a Ray worker reports to the `ray` check. Sent to workers by value (cloudpickle), so
that unpickling it does not import sftrl_patches: the report must see what autoload alone did."""


def report(target_modules):
    import importlib
    import os
    import platform
    import sys
    result = {"node": platform.node(), "pid": os.getpid(), "python": sys.version.split()[0],
              "autoload_loaded": "_sftrl_patches_autoload" in sys.modules,
              "armed_at_start": "sftrl_patches" in sys.modules, "imports": {}}
    for name in target_modules:
        try:
            importlib.import_module(name)
            result["imports"][name] = "ok"
        except Exception as exc:  # a target that cannot import on this node is a finding, not a crash
            result["imports"][name] = f"{type(exc).__name__}: {exc}"[:200]
    result["armed"] = "sftrl_patches" in sys.modules
    result["patches"] = None
    if result["armed"]:
        import sftrl_patches
        result["patches"] = {name: status.state for name, status in sftrl_patches.status().items()}
    return result
