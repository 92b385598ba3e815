"""sftrl-doctor: what in this environment is affected, patched or unpatchable.

Exit codes: 0 nothing to do, 1 action needed, 2 usage error, 3 the doctor itself failed.
"""
import argparse
import sys

EXIT_OK, EXIT_ACTION, EXIT_USAGE, EXIT_FAILED = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        sys.stderr.write(f"sftrl-doctor: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def build_parser():
    parser = _Parser(prog="sftrl-doctor", description=__doc__.split("\n\n")[0],
                     epilog="Static by default: reads installed metadata and source files, imports neither "
                            "torch nor DeepSpeed. --probe runs a tiny training step in child interpreters.")
    parser.add_argument("checks", nargs="*", metavar="CHECK", help="run only these checks (see --list-checks)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON (schema sftrl-doctor/1)")
    parser.add_argument("--probe", action="store_true",
                        help="prove it numerically: run the DeepSpeed probe with patches disabled and enabled")
    parser.add_argument("--probe-timeout", type=int, default=300, metavar="S", help="per child (default 300)")
    parser.add_argument("--list-checks", action="store_true", help="list the named checks and exit")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        import sftrl_patches
        from . import render, report
        names = list(sftrl_patches.PATCHES) + ["probe"]
        if args.list_checks:
            for name in names:
                title = sftrl_patches.PATCHES[name].title if name in sftrl_patches.PATCHES else \
                    "numerical proof on the installed DeepSpeed (runs with --probe)"
                print(f"{name:36} {title}")
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
        data = report.collect(sftrl_patches._registry, sftrl_patches.PATCHES.values(), selected, probe_runner)
        print(render.to_json(data) if args.json else render.to_text(data))
        return EXIT_ACTION if data["action_needed"] else EXIT_OK
    except Exception as exc:  # the doctor itself failed: say so, distinctly from "action needed"
        sys.stderr.write(f"sftrl-doctor: internal error: {type(exc).__name__}: {exc}\n")
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
