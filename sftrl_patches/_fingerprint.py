"""Source fingerprints that are the same whether read from a live function or from a file.

Text-based on purpose: an AST dump changes between Python versions, the source text does not.
Blank lines, comment-only lines and indentation are ignored; everything else counts.
"""


def fingerprint_lines(lines):
    import hashlib
    kept = []
    for line in lines:
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            kept.append(stripped)
    return hashlib.sha256("\n".join(kept).encode("utf-8")).hexdigest()[:16]


def undecorated(obj):
    """The function a decorator wraps, also when the decorator does not say so (no functools.wraps): DeepSpeed's
    instrument_w_nvtx returns a closure over `func`, so the live attribute is that closure, while the file holds the
    decorated method's own source."""
    import inspect
    obj = inspect.unwrap(obj)
    code = getattr(obj, "__code__", None)
    while (code is not None and "<locals>" in getattr(obj, "__qualname__", "") and "func" in code.co_freevars
           and obj.__closure__):
        inner = obj.__closure__[code.co_freevars.index("func")].cell_contents
        if not callable(inner) or getattr(inner, "__name__", None) is None:
            break
        obj = inspect.unwrap(inner)
        code = getattr(obj, "__code__", None)
    return obj


def fingerprint_object(obj):
    """Fingerprint of a live function's source; raises OSError/TypeError when there is none."""
    import inspect
    lines, _ = inspect.getsourcelines(undecorated(obj))
    return fingerprint_lines(lines)


def fingerprint_in_source(source, owner, attribute):
    """Fingerprint of `owner.attribute` (owner '' for module level) found in module source text.

    Returns None when the definition is not there. Used by the static doctor, which must not
    import the target.
    """
    import ast
    tree = ast.parse(source)
    body = tree.body
    for part in filter(None, owner.split(".")):
        body = next((node.body for node in body if isinstance(node, ast.ClassDef) and node.name == part), None)
        if body is None:
            return None
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == attribute:
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            return fingerprint_lines(source.splitlines()[first - 1:node.end_lineno])
    return None
