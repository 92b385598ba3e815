"""Patch records and the only control flow that applies, verifies and reverts them.

A patch module holds data (a `Patch`) and a small wrapper factory per target; everything that
decides whether to touch a target lives here.
"""
import _thread
import functools
import importlib
import os
import sys

from . import _config
from ._fingerprint import fingerprint_in_source, fingerprint_object
from ._version import VersionRange, parse

# Kept off the import path (`import sftrl_patches` must stay cheap): dataclasses, logging and
# importlib.metadata are imported when first needed.


def _logger():
    import logging
    return logging.getLogger("sftrl_patches")

# States, from the user's point of view.
NOT_INSTALLED = "not-installed"      # the distribution is not in this environment
NOT_AFFECTED = "not-affected"        # outside the affected range, or the source is an upstream-fixed shape
PATCHABLE = "patchable"              # affected; the patch applies when the target is imported
PATCHED = "patched"                  # applied and verified in this interpreter
PARTIAL = "partial"                  # applied, but something still reaches the original
UNPATCHABLE = "unpatchable"          # affected, and we will not touch it (unknown source, missing requirement)
UNVERIFIED = "unverified"            # newer than every release we checked, and no known upstream fix
NO_PATCH = "affected-no-patch"       # a known bug this package documents but does not patch
DISABLED = "disabled"                # switched off by SFTRL_PATCHES_DISABLE
REVERTED = "reverted"                # was applied here, then reverted on request
ERROR = "error"                      # applying failed; nothing was left half-applied

# States that need a person to act.
PROBLEM_STATES = frozenset({PARTIAL, UNPATCHABLE, UNVERIFIED, NO_PATCH, ERROR})

PATCH_MARK = "__sftrl_patch__"


class PatchError(RuntimeError):
    """Raised by explicit calls and in strict mode."""


class Target:
    """One attribute to wrap. `owner` is a dotted class path inside `module`, '' for module level.

    fingerprints: source fingerprint -> the releases with that (broken) shape, which we wrap;
    fixed_fingerprints: shapes that already carry the fix, which we leave alone.
    make_wrapper=None makes a guard: its shape is checked like any target's, but it is not
    replaced (for code a wrapper elsewhere relies on).
    harmless_overrides: "module.QualName" of a subclass -> why its own version of the attribute does not
    bypass the wrapper (it refuses the call, or reaches the base through super()); any other overriding
    subclass makes the patch partial.
    """

    def __init__(self, module, owner, attribute, make_wrapper, fingerprints=None, fixed_fingerprints=None,
                 any_shape=False, harmless_overrides=None):
        self.module = module
        self.owner = owner
        self.attribute = attribute
        self.make_wrapper = make_wrapper  # callable(original) -> wrapper
        self.fingerprints = dict(fingerprints or {})
        self.fixed_fingerprints = dict(fixed_fingerprints or {})
        # An observer's wrapper calls the original unchanged and then only looks: any shape is safe to wrap,
        # and a subclass that overrides the attribute still reaches it through super().
        self.any_shape = any_shape
        self.harmless_overrides = dict(harmless_overrides or {})

    @property
    def key(self):
        return (self.module, self.owner, self.attribute)

    @property
    def is_guard(self):
        return self.make_wrapper is None

    @property
    def dotted(self):
        return ".".join(filter(None, (self.module, self.owner, self.attribute)))


class Patch:
    """A known bug: where it lives, which releases have it, and (unless targets is empty) the fix."""

    def __init__(self, name, title, distribution, affected, fixed_in=None, verified_through=None, targets=(),
                 when=None, links=(), remediation="", no_patch_reason="", requires=(), advisory=False,
                 effect="", impact="", covers=None, observer=False):
        self.name = name
        self.title = title
        self.distribution = distribution
        self.affected = affected                  # VersionRange
        self.fixed_in = fixed_in                  # first upstream release with the fix, None if none yet
        self.verified_through = verified_through  # newest release checked; matters only while fixed_in is None
        self.targets = tuple(targets)             # empty: a documented bug with no patch
        self.when = when                          # conditions.Predicate over a run description, None: any run
        self.links = tuple(links)
        self.remediation = remediation
        self.no_patch_reason = no_patch_reason
        self.requires = tuple(requires)           # patches that must be applied (or not needed) first
        self.advisory = advisory                  # the bug needs a run-time option we cannot see: warn, not fail
        self.effect = effect                      # what an unpatched run under `conditions` gets, measured
        self.impact = impact                      # the same for one run, str.format over its description
        self.covers = covers                      # conditions.Predicate: where the wrapper acts (None: every hit run)
        self.observer = observer                  # not a bug: a hook that reports (sftrl_patches.runtime_report)

    @property
    def conditions(self):
        """The `when:` text, rendered from the predicate."""
        return str(self.when) if self.when is not None else ""

    @property
    def target_modules(self):
        return tuple(dict.fromkeys(t.module for t in self.targets))

    def __repr__(self):
        return f"Patch({self.name!r})"


class Status:
    def __init__(self, name, state, reason="", version=None, shapes=(), details=None):
        self.name = name
        self.state = state
        self.reason = reason
        self.version = version
        self.shapes = tuple(shapes)
        self.details = list(details or [])

    def to_dict(self):
        return {"name": self.name, "state": self.state, "reason": self.reason, "version": self.version,
                "shapes": list(self.shapes), "details": list(self.details)}

    def __repr__(self):
        return f"Status({self.name!r}, {self.state!r}, {self.reason!r})"


def installed_version(distribution):
    """(version string or None, installed?) read from metadata, without importing the package."""
    from importlib import metadata
    try:
        return metadata.version(distribution), True
    except metadata.PackageNotFoundError:
        return None, False
    except Exception:  # broken metadata: installed, version unknown
        return None, True


# Distributions whose versions matter to some record or to how a run is read.
KNOWN_DISTRIBUTIONS = ("torch", "deepspeed", "openrlhf", "trl", "transformers", "accelerate", "llamafactory")


def installed_versions():
    """The known distributions installed here, read from metadata (the audit, the doctor's header, the run report)."""
    versions = {dist: installed_version(dist)[0] for dist in KNOWN_DISTRIBUTIONS}
    return {dist: version for dist, version in versions.items() if version}


def version_verdict(patch, version_text):
    """Decide from the version alone: (state or None to look at the source, reason)."""
    version = parse(version_text)
    if version is None:
        return None, f"no readable version ({version_text!r}); deciding from the source"
    if patch.affected.low is not None and version < patch.affected.low:
        return NOT_AFFECTED, f"{version} is older than the affected range {patch.affected}"
    if patch.fixed_in and version >= parse(patch.fixed_in) and version not in patch.affected:
        return NOT_AFFECTED, f"{version} has the upstream fix (first in {patch.fixed_in})"
    if version in patch.affected:
        return None, f"{version} is in the affected range {patch.affected}"
    if not patch.fixed_in and patch.verified_through and version > parse(patch.verified_through):
        return UNVERIFIED, (f"{version} is newer than every release checked (through {patch.verified_through})"
                            " and no upstream fix is known")
    return NOT_AFFECTED, f"{version} is outside the affected range {patch.affected}"


def source_verdict(patch, fingerprints, version_reason):
    """Decide from the fingerprints of every target: (state, reason, shapes)."""
    shapes = []
    for target in patch.targets:
        fp = fingerprints.get(target.key)
        if isinstance(fp, Exception):
            return UNPATCHABLE, f"cannot read the source of {target.dotted}: {fp}", ()
        if fp is None:
            return UNPATCHABLE, f"{target.dotted} not found", ()
        if fp in target.fixed_fingerprints:
            return NOT_AFFECTED, (f"{target.dotted} already has the upstream fix "
                                  f"(shape of {target.fixed_fingerprints[fp]})"), ()
        if fp not in target.fingerprints and target.any_shape:
            shapes.append(f"{_label(patch, target)}: any shape (fingerprint {fp}; the wrapper only observes)")
            continue
        if fp not in target.fingerprints:
            return UNPATCHABLE, (f"{version_reason}, but the source of {target.dotted} (fingerprint {fp}) matches "
                                 "no known shape; left untouched"), ()
        shapes.append(f"{_label(patch, target)}: {target.fingerprints[fp]}")
    return PATCHABLE, version_reason, tuple(shapes)


def _label(patch, target):
    """The attribute's name, with its class where two targets of the patch share that name."""
    if sum(t.attribute == target.attribute for t in patch.targets) > 1 and target.owner:
        return f"{target.owner.split('.')[-1]}.{target.attribute}"
    return target.attribute


def _module_file(distribution, module_name):
    """Path of a module's source inside an installed distribution, found without importing it."""
    from importlib import metadata
    relative = module_name.replace(".", "/") + ".py"
    try:
        candidate = metadata.distribution(distribution).locate_file(relative)
        if os.path.isfile(candidate):
            return str(candidate)
    except Exception:
        pass
    for entry in sys.path:  # editable installs and source trees on PYTHONPATH
        candidate = os.path.join(entry or ".", relative)
        if os.path.isfile(candidate):
            return candidate
    return None


_FILE_FINGERPRINTS = {}  # (path, mtime_ns, size, owner, attribute) -> fingerprint


def _fingerprint_in_file(path, owner, attribute):
    # status() of a patch and of the patches it requires read the same big module: parse it once.
    stat = os.stat(path)
    key = (path, stat.st_mtime_ns, stat.st_size, owner, attribute)
    if key not in _FILE_FINGERPRINTS:
        with open(path, encoding="utf-8") as handle:
            _FILE_FINGERPRINTS[key] = fingerprint_in_source(handle.read(), owner, attribute)
    return _FILE_FINGERPRINTS[key]


def file_fingerprints(patch):
    """Fingerprints of every target read from the installed files: the doctor never imports them."""
    fingerprints = {}
    for target in patch.targets:
        try:
            path = _module_file(patch.distribution, target.module)
            if path is None:
                raise OSError(f"no source file for {target.module}")
            fingerprints[target.key] = _fingerprint_in_file(path, target.owner, target.attribute)
        except (OSError, SyntaxError, ValueError) as exc:
            fingerprints[target.key] = exc
    return fingerprints


def _resolve_owner(module, owner_path):
    owner = module
    for part in filter(None, owner_path.split(".")):
        owner = getattr(owner, part)
    return owner


def _still_executing(module):
    # importlib marks a module's spec while its body runs (a target module can import another one).
    return bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


def _is_ours(obj, patch_name=None):
    mark = getattr(obj, PATCH_MARK, None)
    return mark is not None and (patch_name is None or mark == patch_name)


def _raw_attribute(owner, attribute):
    """The attribute as stored on its owner (a function, not a bound method)."""
    if isinstance(owner, type):
        for klass in owner.__mro__:
            if attribute in vars(klass):
                return vars(klass)[attribute]
        raise AttributeError(f"{owner.__name__} has no attribute {attribute!r}")
    return getattr(owner, attribute)


class Registry:
    def __init__(self, patches):
        self.patches = {patch.name: patch for patch in patches}
        self._originals = {}   # target key -> the first original seen, kept forever
        self._status = {}
        self._reverted = set()  # reverted on request: the import hook leaves these alone
        self._lock = _thread.RLock()

    def check_switches(self):
        """Say when SFTRL_PATCHES_DISABLE names a patch that does not exist: one warning on the
        `sftrl_patches` logger (which reaches stderr through logging's last-resort handler where
        logging is not configured, as every warning of this package does); PatchError in strict mode."""
        try:
            message = _config.unknown_disabled_message(self.patches)
        except Exception:  # never break the importing program over a switch
            return None
        if message and _config.strict():
            raise PatchError(message)
        if message:
            _logger().warning(message)
        return message

    def arm(self, finder):
        """Watch every target module with the import hook; applies at once to those already imported."""
        for module_name in dict.fromkeys(m for p in self.patches.values() for m in p.target_modules):
            try:
                finder.watch(module_name, self.on_module_imported)
            except PatchError:
                raise  # strict mode
            except Exception:  # never break the importing program
                _logger().exception("sftrl_patches: could not arm the hook for %s", module_name)

    # ---- decisions -------------------------------------------------------------------------

    def _decide(self, patch, modules, ignore_switches=False):
        """State for `patch`; reads the live targets when imported, else their files (no import)."""
        version, installed = installed_version(patch.distribution)
        if not installed and not modules:
            return Status(patch.name, NOT_INSTALLED, f"{patch.distribution} is not installed"), {}
        if not ignore_switches:
            switched_off = _config.observer_off(patch.name) if patch.observer else _config.is_disabled(patch.name)
            if switched_off:
                return Status(patch.name, DISABLED, f"switched off by {switched_off if patch.observer else _config.DISABLE_VAR}",
                              version), {}
        state, reason = version_verdict(patch, version)
        if patch.observer:
            reason = f"{patch.distribution} {version}: the hook observes every release"
        if state is not None:
            return Status(patch.name, state, reason, version), {}
        if not patch.targets:
            return Status(patch.name, NO_PATCH, patch.no_patch_reason or reason, version), {}
        for required in patch.requires:
            required_state = self.status(required, ignore_switches).state
            if required_state not in (PATCHED, NOT_AFFECTED, PATCHABLE, NOT_INSTALLED):
                return Status(patch.name, UNPATCHABLE,
                              f"needs patch {required!r}, which is {required_state}", version), {}
        live = all(m in modules for m in patch.target_modules)
        if live:
            originals, fingerprints = self._live_fingerprints(patch, modules)
        else:
            originals, fingerprints = {}, file_fingerprints(patch)
            reason += f"; applies when {', '.join(patch.target_modules)} is imported"
        state, reason, shapes = source_verdict(patch, fingerprints, reason)
        return Status(patch.name, state, reason, version, shapes), originals

    def _live_fingerprints(self, patch, modules):
        originals, fingerprints = {}, {}
        for target in patch.targets:
            try:
                original = self._originals.get(target.key)
                if original is None:
                    original = _raw_attribute(_resolve_owner(modules[target.module], target.owner), target.attribute)
                originals[target.key] = original
                fingerprints[target.key] = fingerprint_object(original)
            except AttributeError:
                fingerprints[target.key] = None
            except (OSError, TypeError) as exc:
                fingerprints[target.key] = exc
        return originals, fingerprints

    # ---- lifecycle -------------------------------------------------------------------------

    def _imported_modules(self, patch, import_missing):
        modules = {}
        for name in patch.target_modules:
            module = sys.modules.get(name)
            if module is not None and _still_executing(module):
                continue  # a patch over several modules waits for each to finish; its hook comes back
            if module is None and import_missing and installed_version(patch.distribution)[1]:
                module = importlib.import_module(name)
            if module is not None:
                modules[name] = module
        return modules

    def apply(self, name, explicit=True):
        """Apply one patch. Idempotent. Explicit calls import the target and raise on problems."""
        patch = self._patch(name)
        with self._lock:
            if explicit:
                self._reverted.discard(name)
            elif name in self._reverted:
                return self._status[name]
            try:
                status = self._apply_locked(patch, import_missing=explicit)
            except Exception as exc:  # never leave a half-applied patch behind
                _logger().exception("sftrl_patches: applying %s failed", name)
                status = Status(name, ERROR, f"{type(exc).__name__}: {exc}")
            self._status[name] = status
        self._report(status, raise_problems=explicit or _config.strict())
        return status

    def _apply_locked(self, patch, import_missing):
        modules = self._imported_modules(patch, import_missing and not _config.is_disabled(patch.name))
        if modules and self._all_ours(patch, modules):
            return self._verify(patch, modules, self._status.get(patch.name))
        status, originals = self._decide(patch, modules)
        if status.state != PATCHABLE or not originals:  # not imported yet: the hook comes back later
            return status
        applied = []
        try:
            for target in patch.targets:
                if target.is_guard:
                    continue
                owner = _resolve_owner(modules[target.module], target.owner)
                original = originals[target.key]
                wrapper = target.make_wrapper(original)
                functools.update_wrapper(wrapper, original)
                setattr(wrapper, PATCH_MARK, patch.name)
                self._originals.setdefault(target.key, original)
                setattr(owner, target.attribute, wrapper)
                applied.append((owner, target, original))
        except Exception:
            for owner, target, original in reversed(applied):
                setattr(owner, target.attribute, original)
            raise
        status.state = PATCHED
        _logger().info("sftrl_patches: applied %s (%s)", patch.name, "; ".join(status.shapes))
        return self._verify(patch, modules, status)

    def _all_ours(self, patch, modules):
        try:
            return all(_is_ours(_raw_attribute(_resolve_owner(modules[t.module], t.owner), t.attribute), patch.name)
                       for t in patch.targets if not t.is_guard)
        except (AttributeError, KeyError):
            return False

    def _verify(self, patch, modules, status):
        """Check that every path to the target reaches our wrapper; downgrade to PARTIAL if not."""
        status = status or Status(patch.name, PATCHED, "", installed_version(patch.distribution)[0])
        status.details = []
        for target in patch.targets:
            if target.is_guard:
                continue
            owner = _resolve_owner(modules[target.module], target.owner)
            current = _raw_attribute(owner, target.attribute)
            if not _is_ours(current, patch.name):
                status.details.append(f"{target.dotted} was replaced by {current!r} after patching")
                continue
            original = self._originals.get(target.key)
            if isinstance(owner, type) and not target.any_shape:
                status.details.extend(_overriding_subclasses(owner, target.attribute, original,
                                                             harmless=target.harmless_overrides))
            else:
                status.details.extend(_stale_aliases(original, modules[target.module], target.attribute))
        status.state = PARTIAL if status.details else PATCHED
        return status

    def revert(self, name):
        """Put back the originals that are still replaced by our wrappers. Others are left alone."""
        patch = self._patch(name)
        with self._lock:
            modules = self._imported_modules(patch, import_missing=False)
            left_alone = []
            reverted = False
            for target in patch.targets:
                module = modules.get(target.module)
                original = self._originals.get(target.key)
                if module is None or original is None:
                    continue
                owner = _resolve_owner(module, target.owner)
                current = _raw_attribute(owner, target.attribute)
                if _is_ours(current, patch.name):
                    setattr(owner, target.attribute, original)
                    reverted = True
                elif current is not original:
                    left_alone.append(f"{target.dotted} is no longer ours; left as it is")
            if patch.targets:
                self._reverted.add(name)
                status = Status(name, REVERTED, "reverted on request; sftrl_patches.apply() re-applies it",
                                installed_version(patch.distribution)[0], details=left_alone)
                self._status[name] = status
            else:
                status = self.status(name)
        if reverted:
            _logger().info("sftrl_patches: reverted %s", name)
        return status

    def status(self, name, ignore_switches=False):
        """The last known state; for a patch not yet acted on, decided without importing the target.

        ignore_switches: what the state would be without SFTRL_PATCHES_DISABLE (for the doctor).
        """
        patch = self._patch(name)
        with self._lock:
            if name in self._status and not ignore_switches:
                return self._status[name]
            modules = self._imported_modules(patch, import_missing=False)
            if modules and self._all_ours(patch, modules):
                return self._verify(patch, modules, None)
            return self._decide(patch, modules, ignore_switches)[0]

    def verify(self, name):
        """Check again, now, that every path to an applied patch reaches its wrapper (status() keeps the last answer)."""
        patch = self._patch(name)
        with self._lock:
            cached = self._status.get(name)
            modules = self._imported_modules(patch, import_missing=False)
            if cached is not None and cached.state in (PATCHED, PARTIAL) and modules and \
                    all(m in modules for m in patch.target_modules):
                status = self._verify(patch, modules, Status(name, PATCHED, cached.reason, cached.version,
                                                             cached.shapes))
                self._status[name] = status
                return status
        return self.status(name)

    def on_module_imported(self, module):
        """Import-hook callback: apply every patch that targets `module`. Never raises unless strict."""
        for patch in self.patches.values():
            if module.__name__ in patch.target_modules:
                self.apply(patch.name, explicit=False)

    # ---- helpers ---------------------------------------------------------------------------

    def _patch(self, name):
        try:
            return self.patches[name]
        except KeyError:
            raise PatchError(f"unknown patch {name!r}; known: {', '.join(sorted(self.patches))}") from None

    def _report(self, status, raise_problems):
        if status.state in PROBLEM_STATES:
            message = f"sftrl_patches: {status.name} is {status.state}: {status.reason}"
            if status.details:
                message += " (" + "; ".join(status.details) + ")"
            if raise_problems:
                raise PatchError(message)
            _logger().warning(message)


def _overriding_subclasses(owner, attribute, original, harmless=()):
    found = []
    pending = list(owner.__subclasses__())
    seen = set()
    while pending:
        klass = pending.pop()
        if klass in seen:
            continue
        seen.add(klass)
        pending.extend(klass.__subclasses__())
        own = vars(klass).get(attribute)
        if f"{klass.__module__}.{klass.__qualname__}" in harmless:
            continue
        if own is not None and not _is_ours(own):
            what = "keeps the unpatched original" if own is original else "overrides it"
            found.append(f"subclass {klass.__module__}.{klass.__qualname__} {what}")
    return found


def _stale_aliases(original, defining_module, attribute):
    """Modules that imported the original function by name before we patched it."""
    found = []
    for module_name, module in list(sys.modules.items()):
        if module is None or module is defining_module:
            continue
        try:
            names = [n for n, v in vars(module).items() if v is original]
        except TypeError:
            continue
        found.extend(f"{module_name}.{n} still holds the unpatched {attribute}" for n in names)
    return found
