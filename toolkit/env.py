"""Every environment variable the toolkit reads or sets, named once.

A module that reads one imports its name from here; ``tests/test_env.py`` fails on a name spelled
anywhere else in the package, and on a README table that does not list exactly ``VARIABLES``
(and ``EXTERNAL``, read by the libraries and scripts the toolkit runs on our behalf).
Values read from the environment are input like any other: each reader checks its own.
"""

from __future__ import annotations

__all__ = [
    "AUTHOR",
    "BASE_FILE",
    "BASE_IMAGE",
    "BASE_REBUILD",
    "BUILD_BASE",
    "CACHE",
    "CERTIFICATIONS",
    "COLUMNS",
    "DEBUG",
    "DOCKER_HOST",
    "EXTERNAL",
    "HOME",
    "IMAGE",
    "IMAGE_ID",
    "IN_CONTAINER",
    "LINES",
    "LOCK_FILE",
    "LOCK_SHA256",
    "OUT",
    "PIP_CONFIG_FILE",
    "PIP_DISABLE_PIP_VERSION_CHECK",
    "PIP_FIND_LINKS",
    "PYTHONPATH",
    "REGISTRY",
    "SIGNING_KEY",
    "SOURCE_DATE_EPOCH",
    "STATE",
    "STORE",
    "TERM",
    "TRAIN_SUMMARY",
    "TRUSTED_KEYS",
    "VARIABLES",
    "Variable",
]


class Variable:
    """One environment variable: its name, and whether the toolkit reads it, sets it, or both.

    A plain slotted class, not a frozen dataclass as records elsewhere: this module is on the
    gate's start-up path, and the dataclass decorator alone cost ~1.5 ms of it.
    """

    __slots__ = ("meaning", "name", "reads", "sets")

    def __init__(self, *, name: str, reads: bool, sets: bool, meaning: str) -> None:
        self.name = name
        self.reads = reads  # the toolkit's code reads it from its own environment
        self.sets = sets  # the toolkit sets it for a process it starts (a container, pip, a script)
        self.meaning = meaning


# -- what users set -----------------------------------------------------------------------------
REGISTRY = "TOOLKIT_REGISTRY"  # the registry: a directory or postgresql://...
STORE = "TOOLKIT_STORE"  # a team registry's OCI store
TRUSTED_KEYS = "TOOLKIT_TRUSTED_KEYS"  # ':'-separated public keys; set: signatures are required
SIGNING_KEY = "TOOLKIT_SIGNING_KEY"  # --sign-key's default
AUTHOR = "TOOLKIT_AUTHOR"  # who is recorded (also passed into containers)
DEBUG = "TOOLKIT_DEBUG"  # tracebacks of internal errors
SOURCE_DATE_EPOCH = "SOURCE_DATE_EPOCH"  # the card's created_at (reproducible builds' convention)
IMAGE = "TOOLKIT_IMAGE"  # the image `image ...` runs when --image is not given; in a container, the one it runs
BUILD_BASE = "BASE_IMAGE"  # the base `image build` starts from when --base-image is not given
DOCKER_HOST = "DOCKER_HOST"  # the engine (the docker SDK reads it; we name it in messages)
CACHE = "TOOLKIT_CACHE"  # downloads shared by every project (wheels, .deb files, the base's state)
CERTIFICATIONS = "TOOLKIT_CERTIFICATIONS"  # the folder of certifications the gates honour (--policy certified)

# -- what the toolkit sets for what it starts --------------------------------------------------
OUT = "TOOLKIT_OUT"  # where a user's script saves its artifacts
IMAGE_ID = "TOOLKIT_IMAGE_ID"  # the id of the image a container runs (card schema 3's environment.image)
STATE = "TOOLKIT_STATE"  # toolkit base: where the base recipe keeps its state (in the cache)
TRAIN_SUMMARY = "TOOLKIT_TRAIN_SUMMARY"  # "0" in a container: the host prints the summary
HOME = "HOME"  # /tmp in a container running as the caller's uid (the image's home is not theirs)
TERM = "TERM"  # a container given our terminal
COLUMNS = "COLUMNS"  # read for our own tables; set for a container given our terminal
LINES = "LINES"
PYTHONPATH = "PYTHONPATH"  # image run: the user's folder, so the gate finds their modules
PIP_CONFIG_FILE = "PIP_CONFIG_FILE"  # runtime images: only the lock decides what pip downloads
PIP_DISABLE_PIP_VERSION_CHECK = "PIP_DISABLE_PIP_VERSION_CHECK"
PIP_FIND_LINKS = "PIP_FIND_LINKS"  # unset for them, for the same reason

# -- what the image's Dockerfile sets and the fingerprint reads --------------------------------
IN_CONTAINER = "TOOLKIT_IN_CONTAINER"
BASE_IMAGE = "TOOLKIT_BASE_IMAGE"
LOCK_SHA256 = "TOOLKIT_LOCK_SHA256"
LOCK_FILE = "TOOLKIT_LOCK_FILE"

VARIABLES: tuple[Variable, ...] = (
    Variable(name=REGISTRY, reads=True, sets=False, meaning="the registry"),
    Variable(name=STORE, reads=True, sets=False, meaning="a team registry's OCI store"),
    Variable(name=TRUSTED_KEYS, reads=True, sets=False, meaning="trusted public keys"),
    Variable(name=SIGNING_KEY, reads=True, sets=False, meaning="the private key --sign-key defaults to"),
    Variable(name=AUTHOR, reads=True, sets=True, meaning="who is recorded"),
    Variable(name=DEBUG, reads=True, sets=False, meaning="tracebacks of internal errors"),
    Variable(name=SOURCE_DATE_EPOCH, reads=True, sets=True, meaning="the card's created_at"),
    Variable(name=IMAGE, reads=True, sets=True, meaning="the default image; in a container, the one it runs"),
    Variable(name=CACHE, reads=True, sets=False, meaning="the shared download cache"),
    Variable(name=CERTIFICATIONS, reads=True, sets=True, meaning="the certifications folder the gates honour"),
    Variable(name=BUILD_BASE, reads=True, sets=False, meaning="the default base of image build"),
    Variable(name=DOCKER_HOST, reads=True, sets=False, meaning="the Docker engine"),
    Variable(name=OUT, reads=False, sets=True, meaning="where a script saves its artifacts"),
    Variable(name=IMAGE_ID, reads=True, sets=True, meaning="the id of the image a container runs"),
    Variable(name=STATE, reads=False, sets=True, meaning="the base recipe's state folder"),
    Variable(name=TRAIN_SUMMARY, reads=True, sets=True, meaning="no summary in a container"),
    Variable(name=HOME, reads=False, sets=True, meaning="a container's home"),
    Variable(name=TERM, reads=True, sets=True, meaning="a container's terminal"),
    Variable(name=COLUMNS, reads=True, sets=True, meaning="the terminal's width"),
    Variable(name=LINES, reads=False, sets=True, meaning="the terminal's height"),
    Variable(name=PYTHONPATH, reads=False, sets=True, meaning="image run's module path"),
    Variable(name=PIP_CONFIG_FILE, reads=False, sets=True, meaning="no machine-wide pip config"),
    Variable(name=PIP_DISABLE_PIP_VERSION_CHECK, reads=False, sets=True, meaning="a quiet pip"),
    Variable(name=PIP_FIND_LINKS, reads=False, sets=True, meaning="unset for pip: no machine-wide links"),
    Variable(name=IN_CONTAINER, reads=True, sets=False, meaning="set by the image"),
    Variable(name=BASE_IMAGE, reads=True, sets=False, meaning="set by the image"),
    Variable(name=LOCK_SHA256, reads=True, sets=False, meaning="set by the image"),
    Variable(name=LOCK_FILE, reads=True, sets=False, meaning="set by the image"),
)

# The base recipe's own variables (toolkit base sets them for it).
BASE_FILE = "BASE_FILE"
BASE_REBUILD = "BASE_REBUILD"

# Read on the toolkit's behalf by what it runs or uses, never by its own code: libpq, the docker
# SDK, scripts/base.sh. The README's table lists these too.
EXTERNAL = (
    "DOCKER_CONFIG",
    "PGPASSWORD",
    "PGPASSFILE",
    "DEBIAN_MIRROR",
    "BASE_REGISTRY",
    BASE_FILE,
    BASE_REBUILD,
)
