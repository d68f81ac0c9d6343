"""The checkout's paths, its scripts loaded by path, and the environment of Python child
processes."""

import importlib.util
import os
import sys

import fastrnn

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(TESTS)


def load_script(name):
    """scripts/<name>.py as the module `name` (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "scripts",
                                                                     f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as an import would (dataclasses look their module up)
    spec.loader.exec_module(module)
    return module


def child_env(**extra):
    """os.environ, plus `extra`, for a Python child process that imports the fastrnn this
    process imported (from the directory it came from: the checkout when built in place)
    and the helpers."""
    fastrnn_home = os.path.dirname(os.path.dirname(os.path.abspath(fastrnn.__file__)))
    paths = [fastrnn_home, TESTS] + [p for p in os.environ.get("PYTHONPATH", "").split(
        os.pathsep) if p]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths), **extra)
