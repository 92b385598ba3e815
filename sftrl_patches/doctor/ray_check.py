"""The `ray` check (only when asked): start or join a Ray cluster and ask a worker on every node
whether the patches are armed, once with autoload alone and once with our setup hook alone."""
from ..registry import PROBLEM_STATES

AUTOLOAD_ONLY, HOOK_ONLY = "autoload", "setup-hook"


def _target_modules(patches):
    from ..registry import installed_version
    return list(dict.fromkeys(m for p in patches if p.targets and installed_version(p.distribution)[0]
                              for m in p.target_modules))


def ask_workers(targets, timeout):
    """{node_id: worker report} from one task per alive node of the connected cluster."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    from . import ray_worker
    ray.cloudpickle.register_pickle_by_value(ray_worker)
    task = ray.remote(num_cpus=0, max_retries=0)(ray_worker.report)
    pending = {node["NodeID"]: task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        node["NodeID"], soft=False)).remote(targets) for node in ray.nodes() if node.get("Alive")}
    results = {}
    for node_id, ref in pending.items():
        try:
            results[node_id] = ray.get(ref, timeout=timeout)
        except Exception as exc:
            results[node_id] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    return results


def _ask_hooked_workers(address, targets, timeout):
    """The same question from a second driver whose job carries our setup hook (Ray runs the hook
    only for a job-level runtime_env) and switches autoload off in its workers."""
    import json
    import subprocess
    import sys
    command = [sys.executable, "-m", __name__, "--address", address, "--timeout", str(timeout), *targets]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout + 120)
    if done.returncode != 0:
        raise RuntimeError(f"setup-hook driver exited {done.returncode}: {done.stderr.strip()[-300:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_ray_check(patches, address=None, timeout=300):
    """{"status": "ran"|"skipped"|"failed", "reason", "nodes": {node_id: {variant: worker report}}}."""
    try:
        import ray
    except ImportError as exc:
        return {"status": "skipped", "reason": f"Ray is not installed here ({exc})"}
    started_here = not ray.is_initialized()
    try:
        if started_here:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False, include_dashboard=False)
        targets = _target_modules(patches)
        gcs_address = ray.get_runtime_context().gcs_address
        nodes = {}
        for node_id, report in ask_workers(targets, timeout).items():
            nodes.setdefault(node_id, {})[AUTOLOAD_ONLY] = report
        try:
            hooked = _ask_hooked_workers(gcs_address, targets, timeout)
        except Exception as exc:
            hooked = {node_id: {"error": f"{type(exc).__name__}: {exc}"[:300]} for node_id in nodes}
        for node_id, report in hooked.items():
            nodes.setdefault(node_id, {})[HOOK_ONLY] = report
        return {"status": "ran", "reason": "", "nodes": nodes, "targets": targets, "address": gcs_address}
    except Exception as exc:
        return {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
    finally:
        if started_here and ray.is_initialized():
            ray.shutdown()


def _hooked_driver(argv=None):
    import argparse
    import json
    import ray
    from .. import _config
    from ..integrations import ray as integration
    parser = argparse.ArgumentParser(description="internal: the setup-hook half of `sftrl-doctor ray`")
    parser.add_argument("--address", required=True)
    parser.add_argument("--timeout", type=int, default=300)
    parser.add_argument("targets", nargs="*")
    args = parser.parse_args(argv)
    ray.init(address=args.address, logging_level="ERROR", log_to_driver=False,
             runtime_env=integration.runtime_env({"env_vars": {_config.AUTOLOAD_VAR: "0"}}))
    try:
        print(json.dumps(ask_workers(args.targets, args.timeout)))
    finally:
        ray.shutdown()


def summarize(result):
    """(level, state, summary, details, remediation) for the doctor."""
    if result["status"] != "ran":
        return ("skipped" if result["status"] == "skipped" else "fail"), result["status"], result["reason"], [], ""
    details, armed_by = [], {AUTOLOAD_ONLY: [], HOOK_ONLY: []}
    problems = []
    for node_id, variants in result["nodes"].items():
        for variant, report in variants.items():
            if "error" in report:
                details.append(f"node {node_id[:12]} ({variant}): worker failed: {report['error']}")
                continue
            armed_by[variant].append(report["armed"])
            states = report["patches"] or {}
            bad = {n: s for n, s in states.items() if s in PROBLEM_STATES and s != "affected-no-patch"}
            problems += [f"node {report['node']}: {n} {s}" for n, s in bad.items()]
            applied = sorted(n for n, s in states.items() if s == "patched")
            details.append(f"node {report['node']} ({variant}): Python {report['python']}, "
                           f"{'armed' if report['armed'] else 'NOT armed'}"
                           + (f", patched: {', '.join(applied)}" if applied else "")
                           + "".join(f"; {m}: {e}" for m, e in report["imports"].items() if e != "ok"))
    nodes = len(result["nodes"])
    autoload_everywhere = len(armed_by[AUTOLOAD_ONLY]) == nodes and all(armed_by[AUTOLOAD_ONLY])
    hook_everywhere = len(armed_by[HOOK_ONLY]) == nodes and all(armed_by[HOOK_ONLY])
    if problems:
        return "fail", "problem", "patches failed inside Ray workers", details + problems, ""
    if autoload_everywhere:
        return "ok", "armed", f"workers on all {nodes} node(s) arm the patches by themselves (autoload)", details, ""
    if hook_everywhere:
        return ("warn", "hook-only", f"workers on {nodes} node(s) are armed only when the job carries our setup hook",
                details, "run the job under `python -m sftrl_patches.launch`, or pass "
                "runtime_env=sftrl_patches.integrations.ray.runtime_env(...) to ray.init")
    return ("fail", "not-armed", "some Ray workers cannot arm the patches, not even with the setup hook", details,
            "pip install sftrl-patches in the Python environment of every node")


if __name__ == "__main__":
    _hooked_driver()
