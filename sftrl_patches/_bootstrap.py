"""A stdlib-only meta-path finder that runs callbacks right after a watched module executes.

The callback runs on the module that defines a target, before any `from x import y` elsewhere
can copy the original, which is why hooks are registered on defining modules.
"""
import _thread
import sys


class _LoaderProxy:
    def __init__(self, loader, on_executed):
        self._loader = loader
        self._on_executed = on_executed

    def create_module(self, spec):
        create = getattr(self._loader, "create_module", None)
        return create(spec) if create else None

    def exec_module(self, module):
        # Hand the module its real loader back before it runs: nothing downstream should see us.
        module.__loader__ = self._loader
        if getattr(module, "__spec__", None) is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        # Its body has finished: say so before the callbacks, which tell a module still running
        # (one target module importing another) from a finished one by this flag.
        if getattr(module, "__spec__", None) is not None and getattr(module.__spec__, "_initializing", False):
            module.__spec__._initializing = False
        self._on_executed(module)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class PostImportFinder:
    """Finds nothing itself; wraps the loader of watched modules found by the finders after it."""

    def __init__(self):
        self._callbacks = {}
        self._lock = _thread.RLock()
        self._searching = set()

    def watch(self, module_name, callback):
        with self._lock:
            self._callbacks.setdefault(module_name, []).append(callback)
        module = sys.modules.get(module_name)
        if module is not None:
            callback(module)

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self._callbacks or fullname in self._searching:
            return None
        self._searching.add(fullname)
        try:
            spec = None
            for finder in list(sys.meta_path):
                find = getattr(finder, "find_spec", None)
                if finder is self or find is None:
                    continue
                spec = find(fullname, path, target)
                if spec is not None:
                    break
        finally:
            self._searching.discard(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _LoaderProxy(spec.loader, self._run_callbacks)
        return spec

    def _run_callbacks(self, module):
        with self._lock:
            callbacks = list(self._callbacks.get(module.__name__, ()))
        for callback in callbacks:
            callback(module)


def install():
    """The one finder of this interpreter, first on sys.meta_path."""
    for finder in sys.meta_path:
        if type(finder).__name__ == "PostImportFinder" and type(finder).__module__ == __name__:
            return finder
    finder = PostImportFinder()
    sys.meta_path.insert(0, finder)
    return finder
