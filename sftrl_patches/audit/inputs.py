"""Reading what a user hands the audit: versions, requirement files, config files.

Every problem becomes an InputError whose message names the file and the field; the CLI prints it
as one line and exits 2.
"""
import json
import os
import re

from .._version import parse


from ..run import InputError  # noqa: F401  (defined with the run description; raised by every reader)


from ..registry import KNOWN_DISTRIBUTIONS, installed_versions  # noqa: F401  (the doctor's header uses them too)
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


# Config and requirements files are kilobytes; anything this big is the wrong file (or a device).
MAX_FILE_BYTES = 10 * 1024 * 1024
# No real DeepSpeed, accelerate, TrainingArguments or Llama-Factory config nests deeper than ~6 levels.
MAX_DEPTH = 100


def _read_text(path):
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
            if len(data) > MAX_FILE_BYTES:
                size = os.fstat(handle.fileno()).st_size
                size = f"{size:,} bytes" if size > MAX_FILE_BYTES else f"more than {MAX_FILE_BYTES:,} bytes"
                raise InputError(f"{path}: too large ({size}; the limit is {MAX_FILE_BYTES // (1024 * 1024)} MiB: "
                                 "config and requirements files are kilobytes)")
        return data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")  # as text mode reads it
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text file") from None


def _too_deep(path, why="configs are a few levels deep"):
    return InputError(f"{path}: nested deeper than {MAX_DEPTH} levels ({why})")


def _nested_deeper_than(data, limit):
    """None, or why lists/mappings nest deeper than `limit` (a self-referencing YAML anchor nests for ever).

    Iterative, and each container is measured once (YAML aliases share one object many times over).
    """
    containers = (dict, list, tuple, set)
    if not isinstance(data, containers):
        return None

    def children(node):
        return iter(node.values() if isinstance(node, dict) else node)

    heights, on_path = {}, {id(data)}
    stack = [[data, children(data), 1]]  # container, its children left, its height so far
    while stack:
        frame = stack[-1]
        child = next(frame[1], stack)  # `stack` marks the end
        if child is stack:
            stack.pop()
            on_path.discard(id(frame[0]))
            heights[id(frame[0])] = frame[2]
            if stack:
                stack[-1][2] = max(stack[-1][2], frame[2] + 1)
            continue
        if not isinstance(child, containers):
            continue
        if id(child) in on_path:
            return "a YAML anchor contains itself"
        if id(child) in heights:
            if len(stack) + heights[id(child)] > limit:
                return "configs are a few levels deep"
            frame[2] = max(frame[2], heights[id(child)] + 1)
            continue
        if len(stack) + 1 > limit:
            return "configs are a few levels deep"
        on_path.add(id(child))
        stack.append([child, children(child), 1])
    return None


def load_mapping(path):
    """A JSON or YAML file whose top level is a mapping, at most MAX_DEPTH levels deep."""
    text = _read_text(path)
    is_yaml = path.lower().endswith((".yaml", ".yml"))
    if not is_yaml:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            if path.lower().endswith(".json"):
                raise InputError(f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
            is_yaml = True
        except RecursionError:
            raise _too_deep(path) from None
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
        except RecursionError:
            raise _too_deep(path) from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    why = _nested_deeper_than(data, MAX_DEPTH)
    if why:
        raise _too_deep(path, why)  # no later reader may recurse into it
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
