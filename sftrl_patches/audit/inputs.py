"""Reading what a user hands the audit: versions, requirement files, config files.

Every problem becomes an InputError whose message names the file and the field; the CLI prints it
as one line and exits 2.
"""
import json
import os
import re

from .._version import parse


class InputError(ValueError):
    """Bad or unreadable input: one line, naming the file and the field."""


# Distributions whose versions matter to some record or to how a run is read.
KNOWN_DISTRIBUTIONS = ("torch", "deepspeed", "openrlhf", "trl", "transformers", "accelerate", "llamafactory")
_ALIASES = {"llama-factory": "llamafactory", "llmtuner": "llamafactory"}
_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*===?\s*([^\s;#,]+)")


def normalise_name(name):
    name = re.sub(r"[-_.]+", "-", name.strip().lower())
    return _ALIASES.get(name, name)


def _checked_version(dist, text, where):
    if parse(text) is None:
        raise InputError(f"{where}: {dist}=={text}: not a version")
    return text


def parse_versions_option(values):
    """--versions DIST==VER[,DIST==VER...] (the option may repeat)."""
    versions = {}
    for value in values or ():
        for part in filter(None, (p.strip() for p in value.split(","))):
            if "==" not in part:
                raise InputError(f"--versions: {part!r}: expected DIST==VERSION, e.g. deepspeed==0.18.9")
            dist, version = (p.strip() for p in part.split("==", 1))
            if not dist or not version:
                raise InputError(f"--versions: {part!r}: expected DIST==VERSION, e.g. deepspeed==0.18.9")
            versions[normalise_name(dist)] = _checked_version(dist, version, "--versions")
    return versions


def read_requirements(path):
    """Exact pins from a requirements or `pip freeze` file; ranges and URLs say nothing exact and are skipped."""
    versions = {}
    for number, line in enumerate(_read_text(path).splitlines(), 1):
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        match = _PIN.match(line)
        if match:
            versions[normalise_name(match.group(1))] = _checked_version(
                match.group(1), match.group(2), f"{path}: line {number}")
    return versions


def installed_versions():
    """The known distributions installed here, read from metadata (the doctor's header uses it too)."""
    from ..registry import installed_version
    versions = {dist: installed_version(dist)[0] for dist in KNOWN_DISTRIBUTIONS}
    return {dist: version for dist, version in versions.items() if version}


def _read_text(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text file") from None


def load_mapping(path):
    """A JSON or YAML file whose top level is a mapping."""
    text = _read_text(path)
    is_yaml = path.lower().endswith((".yaml", ".yml"))
    if not is_yaml:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            if path.lower().endswith(".json"):
                raise InputError(f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
            is_yaml = True
    if is_yaml:
        try:
            import yaml
        except ImportError:
            raise InputError(f"{path}: reading YAML needs PyYAML (pip install pyyaml)") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise InputError(f"{path}: malformed YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def resolve_path(reference, where, field, base=None):
    """A file named inside `where` (a file, or "launch command"): beside that file, else in the working directory.

    Paths stay as relative as they were given, so committed audit outputs do not depend on the machine.
    """
    if not isinstance(reference, str) or not reference:
        raise InputError(f"{where}: {field}: expected a file path, got {reference!r}")
    base = os.path.dirname(where) if base is None else base
    candidates = [reference] if os.path.isabs(reference) else [os.path.join(base, reference), reference]
    for candidate in candidates:
        if os.path.isfile(candidate):
            return os.path.normpath(candidate)
    raise InputError(f"{where}: {field}: {reference} not found (looked beside the file and in the "
                     "working directory)")
