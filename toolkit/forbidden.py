"""The callables that only an attack needs, listed once.

A neutral module on purpose: ``save`` and the loader (``toolkit.pickle_audit``) refuse a
pipeline that references them, and the card parser (``toolkit.card``) refuses a card that
lists them, so no card can ever allow them; neither side has to import the other for it.
"""

from __future__ import annotations

__all__ = ["DENIED_GLOBALS", "DENIED_MODULES", "denied"]


# Whole modules whose every callable runs commands, code, imports, raw memory or I/O:
# nothing a fitted scikit-learn pipeline needs to rebuild itself. A submodule is
# covered by its parent ("os.path" is posixpath, which is not listed).
DENIED_MODULES = frozenset(
    {
        "os",
        "posix",
        "nt",
        "subprocess",
        "_posixsubprocess",
        "pty",
        "shutil",
        "signal",
        "sys",
        "importlib",
        "imp",
        "pkgutil",
        "runpy",
        "code",
        "codeop",
        "types",  # CodeType and FunctionType build code objects
        "marshal",
        "pickle",
        "_pickle",
        "shelve",
        "dill",
        "cloudpickle",
        "ctypes",
        "_ctypes",
        "socket",
        "_socket",
        "urllib",
        "http",
        "ftplib",
        "smtplib",
        "telnetlib",
        "webbrowser",
        "multiprocessing",
        "asyncio",
        "pdb",
        "bdb",
        "timeit",
        "trace",
        "profile",
        "cProfile",
        "gc",
        "inspect",
        "tempfile",
        "__main__",
    }
)
# Single callables in otherwise needed modules. getattr (and attrgetter/methodcaller,
# getattr in disguise) reaches any function's __globals__ from any allowed class, so it is
# refused even though a pickled bound method uses it.
DENIED_GLOBALS = frozenset(
    {
        ("builtins", name)
        for name in (
            "eval",
            "exec",
            "compile",
            "__import__",
            "open",
            "getattr",
            "setattr",
            "delattr",
            "globals",
            "locals",
            "vars",
            "input",
            "breakpoint",
            "exit",
            "quit",
            "help",
            "memoryview",
        )
    }
    | {("operator", n) for n in ("attrgetter", "methodcaller")}
    | {("_operator", n) for n in ("attrgetter", "methodcaller")}
    | {("io", "open"), ("_io", "open"), ("io", "FileIO"), ("_io", "FileIO"), ("codecs", "open")}
    | {("numpy", "load"), ("numpy", "fromfile"), ("numpy.lib.npyio", "load"), ("pandas", "read_pickle")}
    | {("joblib", "load"), ("joblib.numpy_pickle", "load")}
)


def denied(module: str, name: str) -> bool:
    """True when ``module.name`` is a callable that only an attack needs."""
    top = module.split(".", 1)[0]
    return top in DENIED_MODULES or module in DENIED_MODULES or (module, name) in DENIED_GLOBALS
