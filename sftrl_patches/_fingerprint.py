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


def fingerprint_object(obj):
    """Fingerprint of a live function's source; raises OSError/TypeError when there is none."""
    import inspect
    obj = inspect.unwrap(obj)
    lines, _ = inspect.getsourcelines(obj)
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
