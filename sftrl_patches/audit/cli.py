"""sftrl-doctor audit: was a run, made here or elsewhere, hit by a known silent gradient bug?

Reads versions, config files and the launch command the run used; says for every known bug
`hit`, `not-hit` or `unknown`, with the facts that decided it.
Exit codes: 0 nothing hit, 1 something hit (an unknown too with --strict), 2 usage error or
unreadable input, 3 the audit itself failed.

--probe also proves the run's configuration on the DeepSpeed installed here (sftrl_patches.audit.prove): one
probe case, run with the patches off and on. It keeps the audit's exit code, except 1 when the patched run still
drops a micro-batch, 2 when the run description lacks what the case needs, and 3 when the probe itself failed.
"""
import argparse
import json
import sys

from ..run import RUN_ORDER, InputError, summary

EXIT_OK, EXIT_HIT, EXIT_USAGE, EXIT_FAILED = 0, 1, 2, 3
SCHEMA = "sftrl-audit/1"


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        sys.stderr.write(f"sftrl-doctor audit: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


class _SafeParser(_Parser):
    """_Parser whose error lines are redacted and shortened (argparse quotes the offending word)."""

    def error(self, message):
        from .redact import safe_message
        _Parser.error(self, safe_message(message))


def positive_int(text):
    """argparse type of a count or a number of seconds: a whole number above 0 (exit 2 otherwise)."""
    try:
        value = int(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {value}")
    return value


def build_parser():
    parser = _SafeParser(
        prog="sftrl-doctor audit",
        usage="sftrl-doctor audit [--versions DIST==VER[,DIST==VER...]] [--requirements FILE] [--config FILE]... "
              "[--world-size N] [--trainer KIND [--accumulation HOW]] [--json] [--strict] "
              "[--probe [--probe-timeout S]] [-- COMMAND ARGS...]",
        description=__doc__.split("\n\n")[0] + " " + __doc__.split("\n\n")[1].replace("\n", " "),
        epilog="Example: sftrl-doctor audit --versions deepspeed==0.18.9,openrlhf==0.9.10 -- deepspeed --num_gpus 8 "
               "--module openrlhf.cli.train_sft --zero_stage 2 --adam_offload --train_batch_size 64 "
               "--micro_train_batch_size 1")
    parser.add_argument("--versions", action="append", metavar="DIST==VER[,DIST==VER...]",
                        help="the run's versions (default: --requirements, else what is installed here)")
    parser.add_argument("--requirements", metavar="FILE", help="a requirements or `pip freeze` file with the run's pins")
    parser.add_argument("--config", action="append", default=[], metavar="FILE",
                        help="a DeepSpeed JSON, accelerate YAML, TrainingArguments JSON/YAML or Llama-Factory YAML "
                             "(repeatable)")
    parser.add_argument("--world-size", type=positive_int, metavar="N",
                        help="processes of the run, where the launch command does not say")
    parser.add_argument("--trainer", choices=("transformers", "trl", "deepspeed"),
                        help="for a script the audit cannot name: the loop it runs (the HF Trainer, a TRL trainer, or "
                             "its own loop around a DeepSpeed engine); without it such a script's verdicts are unknown")
    parser.add_argument("--accumulation", choices=("engine", "boundary", "manual"),
                        help="with --trainer deepspeed: DeepSpeed's GA counts micro-batches (engine); several "
                             "backward() per step() with set_gradient_accumulation_boundary (boundary) or without (manual)")
    parser.add_argument("--json", action="store_true", help=f"print the audit as JSON (schema {SCHEMA})")
    parser.add_argument("--strict", action="store_true", help="exit 1 on `unknown` too")
    parser.add_argument("--probe", action="store_true",
                        help="prove it: run one probe case built from this run's configuration on the DeepSpeed "
                             "installed here, with the patches off and on, and print each step's micro-batch weights")
    parser.add_argument("--probe-timeout", type=positive_int, default=300, metavar="S",
                        help="with --probe: seconds per child run (two runs; default 300)")
    return parser


def _split_command(argv):
    if "--" in argv:
        index = argv.index("--")
        return argv[:index], argv[index + 1:]
    return argv, None


def run_audit(args, command):
    """(report dict, exit code). InputError propagates."""
    report, code, _ = _audit(args, command)
    return report, code


def _audit(args, command):
    """(report dict, exit code, the run description). InputError propagates."""
    import sftrl_patches
    from .gather import build_run
    from .inputs import installed_versions, parse_versions_option, read_requirements
    from ..verdict import HIT, UNKNOWN, audit

    if args.versions:
        versions, source = parse_versions_option(args.versions), "--versions"
        if args.requirements:
            versions = {**read_requirements(args.requirements), **versions}
            source = f"--versions over {args.requirements}"
    elif args.requirements:
        versions, source = read_requirements(args.requirements), args.requirements
    else:
        versions, source = installed_versions(), "installed here"
    if args.accumulation and args.trainer != "deepspeed":
        raise InputError("--accumulation: only with --trainer deepspeed (the other trainers let DeepSpeed count)")
    run = build_run(versions, args.config, command, args.world_size, args.trainer, args.accumulation)
    findings = audit(sftrl_patches.PATCHES.values(), run)
    report = {"schema": SCHEMA, "versions": versions, "versions_from": source,
              "run": {k: run[k] for k in RUN_ORDER if k in run}, "sources": run["sources"],
              "not_understood": sorted(set(run.get("unclear", {}).values())),
              "command": command, "findings": findings}
    verdicts = {f["verdict"] for f in findings}
    code = EXIT_HIT if HIT in verdicts or (args.strict and UNKNOWN in verdicts) else EXIT_OK
    return report, code, run


def to_text(report):
    versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items()) or "none"
    lines = [f"sftrl-doctor audit: versions {versions} ({report['versions_from']})",
             f"run: {summary(report['run'])}"]
    for reason in report.get("not_understood", ()):
        lines.append(f"not understood: {reason}")
    if report["run"].get("sftrl_patches"):
        lines.append(f"sftrl-patches in this command: {report['run']['sftrl_patches']}")
    order = {"hit": 0, "unknown": 1, "not-hit": 2}
    for f in sorted(report["findings"], key=lambda f: order[f["verdict"]]):
        if f["verdict"] == "not-hit":
            lines.append(f"  not-hit  {f['check']}: {f['because'][0] if f['because'] else ''}")
            continue
        lines.append("")
        lines.append(f"{f['verdict'].upper():8} {f['check']}: {f['title']}")
        for reason in f["because"]:
            lines.append(f"    because: {reason}")
        for missing in f["missing"]:
            lines.append(f"    missing: {missing}")
        lines.append(f"    effect:  {f['effect']}" if f["verdict"] == "hit" else f"    if hit:  {f['effect']}")
        lines.append(f"    fix:     {f['remediation']}")
    hits = sum(f["verdict"] == "hit" for f in report["findings"])
    unknown = sum(f["verdict"] == "unknown" for f in report["findings"])
    lines.append("")
    lines.append(f"{hits} hit, {unknown} unknown, {len(report['findings']) - hits - unknown} not hit")
    return "\n".join(lines)


def _say(line):
    """An error line on stderr: credentials redacted, long values cut (see redact.py)."""
    from .redact import safe_message
    sys.stderr.write(safe_message(line) + "\n")


def main(argv=None):
    from .redact import redact_report, redact_text
    argv = list(sys.argv[1:] if argv is None else argv)
    own, command = _split_command(argv)
    args = build_parser().parse_args(own)
    if command == []:
        _say("sftrl-doctor audit: error: nothing after `--`: give the launch command")
        return EXIT_USAGE
    try:
        report, code, run = _audit(args, command)
        case = _probe_case(args, command, run) if args.probe else None
        # Credentials in the command, configs or sources never reach the output (the verdicts are already made).
        report = redact_report(report)
        out = json.dumps(report, indent=2) if args.json else redact_text(to_text(report))
    except _Refused:
        return EXIT_USAGE
    except InputError as exc:
        _say(f"sftrl-doctor audit: error: {exc}")
        return EXIT_USAGE
    except Exception as exc:  # the audit itself failed: distinct from "hit" and from bad input
        _say(f"sftrl-doctor audit: internal error: {type(exc).__name__}: {exc}")
        return EXIT_FAILED
    if case is None:
        print(out)
        return code
    return _prove(args, report, code, run, case, out)


class _Refused(Exception):
    """--probe cannot build its case; the lines are already said."""


def _probe_case(args, command, run):
    """(case, notes) for --probe, or _Refused after saying what the run description lacks (exit 2)."""
    from .prove import ProbeRefused, probe_case
    try:
        return probe_case(run, run.get("optimizer"))
    except ProbeRefused as exc:
        _say("sftrl-doctor audit: error: --probe: this run's description lacks what the probe case needs "
             "(nothing is guessed; without --probe the audit alone runs):")
        for line in exc.missing:
            _say(f"    {line}")
        raise _Refused() from None


def _prove(args, report, code, run, case, out):
    """Print the audit (text: at once, the probe takes a while), run the probe, print its part; the exit code."""
    from . import prove
    from .redact import redact_report, redact_text
    if not args.json:
        print(out, flush=True)
    try:
        probe = prove.run_probe(*case, run, report["versions"], timeout=args.probe_timeout,
                                hits=[f["check"] for f in report["findings"] if f["verdict"] == "hit"])
    except Exception as exc:  # the probe machinery itself failed
        probe = {"status": "error", "case": case[0], "notes": case[1], "reason": f"{type(exc).__name__}: {exc}",
                 "deepspeed": None, "audited_deepspeed": report["versions"].get("deepspeed")}
    if args.json:
        report["probe"] = redact_report(probe)
        print(json.dumps(report, indent=2))
    else:
        print(redact_text(prove.to_text(probe)))
    return prove.exit_code(probe, code, failed=EXIT_FAILED, hit=EXIT_HIT)
