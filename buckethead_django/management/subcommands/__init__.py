"""The subcommands of ``manage.py buckethead``, one module each, in the order ``--help`` lists them."""

from .base import Subcommand
from .export import Export
from .files import Files
from .flush import Flush
from .history import History
from .import_database import ImportDatabase
from .kv import KV
from .restore import Restore
from .snapshot import Snapshot
from .status import Status

SUBCOMMANDS: tuple[type[Subcommand], ...] = (
    Status,
    Snapshot,
    Flush,
    History,
    Restore,
    ImportDatabase,
    KV,
    Files,
    Export,
)
