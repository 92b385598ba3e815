"""sftrl-doctor: what in this environment is affected, patched or unpatchable.

Exit codes: 0 nothing to do, 1 action needed, 2 usage error, 3 the doctor itself failed.
"""
import argparse
import sys

EXIT_OK, EXIT_ACTION, EXIT_USAGE, EXIT_FAILED = 0, 1, 2, 3

# Checks beside one per patch. startup, launchers and llamafactory are static and always run; ray and probe
# start processes, so they run only when named (or with --probe).
EXTRA_CHECKS = {
    "startup": "autoload: every interpreter of this environment arms the patches at start-up",
    "launchers": "deepspeed/torchrun/accelerate ranks, and switches on remote DeepSpeed nodes",
    "llamafactory": "the DeepSpeed releases the installed Llama-Factory allows, against the bug windows",
    "ray": "start or join Ray; a worker on every node reports the patch state (runs only when named)",
    "probe": "numerical proof on the installed DeepSpeed (runs with --probe)",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        from ..audit.redact import safe_message
        self.print_usage(sys.stderr)
        sys.stderr.write(safe_message(f"sftrl-doctor: error: {message}") + "\n")
        raise SystemExit(EXIT_USAGE)


def _seconds(text):
    """A timeout: a positive whole number of seconds, at most a day (a larger one overflows the clock)."""
    from ..audit.cli import positive_int  # the audit sits below the doctor: its argument types serve both
    value = positive_int(text)
    if value > 86400:
        raise argparse.ArgumentTypeError(f"expected at most 86400 seconds (a day), got {value}")
    return value


def build_parser():
    parser = _Parser(prog="sftrl-doctor", description=__doc__.split("\n\n")[0],
                     epilog="Static by default: reads installed metadata and source files, imports neither "
                            "torch nor DeepSpeed. --probe runs a tiny training step in child interpreters; "
                            "`sftrl-doctor ray` asks Ray workers on every node. `sftrl-doctor audit --help`: "
                            "was a run made elsewhere hit, from its versions, configs and launch command.")
    parser.add_argument("checks", nargs="*", metavar="CHECK", help="run only these checks (see --list-checks)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON (schema sftrl-doctor/1)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="the full text of every check (by default: one line each, details where action is needed)")
    parser.add_argument("--probe", action="store_true",
                        help="prove it numerically: run the DeepSpeed probe with patches disabled and enabled")
    parser.add_argument("--probe-timeout", type=_seconds, default=300, metavar="S",
                        help="seconds per child (default 300)")
    parser.add_argument("--ray-address", metavar="ADDR", default=None,
                        help="for the ray check: the cluster to join (default: Ray's own discovery, RAY_ADDRESS or a "
                             "running local cluster, else a new local one)")
    parser.add_argument("--list-checks", action="store_true", help="list the named checks and exit")
    return parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["audit"]:
        from ..audit.cli import main as audit_main
        return audit_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        import sftrl_patches
        from . import render, report
        titles = {name: patch.title for name, patch in {**sftrl_patches.PATCHES, **sftrl_patches.HOOKS}.items()}
        titles.update(EXTRA_CHECKS)
        names = list(titles)
        if args.list_checks:
            for name in names:
                print(f"{name:36} {titles[name]}")
            return EXIT_OK
        unknown = [c for c in args.checks if c not in names]
        if unknown:
            sys.stderr.write(f"sftrl-doctor: error: unknown check(s): {', '.join(unknown)}; "
                             "see sftrl-doctor --list-checks\n")
            return EXIT_USAGE
        selected = set(args.checks) or None
        run_probe = args.probe or (selected is not None and "probe" in selected)
        probe_runner = None
        if run_probe:
            from ..probes import run_deepspeed_probe
            probe_runner = lambda: run_deepspeed_probe(timeout=args.probe_timeout)  # noqa: E731
        ray_runner = None
        if selected is not None and "ray" in selected:
            from .ray_check import run_ray_check
            ray_runner = lambda: run_ray_check(sftrl_patches.PATCHES.values(), args.ray_address)  # noqa: E731
        records = [*sftrl_patches.PATCHES.values(), *sftrl_patches.HOOKS.values()]
        data = report.collect(sftrl_patches._registry, records, selected, probe_runner, ray_runner)
        print(render.to_json(data) if args.json else render.to_text(data, verbose=args.verbose))
        return EXIT_ACTION if data["action_needed"] else EXIT_OK
    except Exception as exc:  # the doctor itself failed: say so, distinctly from "action needed"
        from ..audit.redact import safe_message
        sys.stderr.write(safe_message(f"sftrl-doctor: internal error: {type(exc).__name__}: {exc}") + "\n")
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
