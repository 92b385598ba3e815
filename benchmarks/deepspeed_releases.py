"""Install DeepSpeed releases side by side, one folder each, from their sdists, no ops prebuilt.

    python benchmarks/deepspeed_releases.py install 0.18.9 0.19.8      # into .ds-releases/<version>
    python benchmarks/deepspeed_releases.py list                       # every release from 0.15.1 on
    python benchmarks/deepspeed_releases.py path 0.18.9

The current interpreter must already have torch and DeepSpeed's pure-Python dependencies.
Run a release with PYTHONPATH=<folder>; TORCH_EXTENSIONS_DIR is kept per release because
DeepSpeed caches JIT-built ops by name, not version.
"""
import argparse
import os
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".ds-releases")
FIRST = (0, 15, 1)


def release_dir(version, root=ROOT):
    return os.path.join(root, version)


def is_installed(version, root=ROOT):
    return os.path.isdir(os.path.join(release_dir(version, root), f"deepspeed-{version}.dist-info"))


def install(version, root=ROOT, quiet=True):
    if is_installed(version, root):
        return release_dir(version, root)
    target = release_dir(version, root)
    env = dict(os.environ, DS_BUILD_OPS="0")
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-binary",
               "deepspeed", "--target", target, f"deepspeed=={version}"] + (["-q"] if quiet else [])
    subprocess.run(command, env=env, check=True)
    return target


def child_env(version, root=ROOT, base=None):
    """Environment for a child interpreter that should see exactly this release."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [release_dir(version, root), env.get("PYTHONPATH")]))
    env["TORCH_EXTENSIONS_DIR"] = os.path.join(root, "torch_extensions", version)
    env.setdefault("DS_ACCELERATOR", "cpu")
    return env


def available_releases():
    """Every final DeepSpeed release from 0.15.1 on, as the package index lists them."""
    out = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "deepspeed"], capture_output=True,
                         text=True, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("Available versions:"))
    versions = [v.strip() for v in line.split(":", 1)[1].split(",")]
    finals = [v for v in versions if v.replace(".", "").isdigit()]
    return sorted((v for v in finals if tuple(map(int, v.split("."))) >= FIRST),
                  key=lambda v: tuple(map(int, v.split("."))))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="releases from 0.15.1 on")
    installer = sub.add_parser("install", help="install releases into .ds-releases/")
    installer.add_argument("versions", nargs="+")
    path = sub.add_parser("path", help="print the folder of a release")
    path.add_argument("version")
    args = parser.parse_args(argv)
    if args.command == "list":
        print(" ".join(available_releases()))
    elif args.command == "install":
        for version in args.versions:
            print(f"deepspeed {version}: {install(version)}", flush=True)
    else:
        print(release_dir(args.version))
    return 0


if __name__ == "__main__":
    sys.exit(main())
