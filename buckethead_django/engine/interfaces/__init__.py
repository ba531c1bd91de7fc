"""Typed views on the in-memory SQLite. Interface is the ABC; KVStore is the first concrete implementation."""

from .base import Interface
from .files import BlobSizeMismatch, FileInfo, FileStore, GcReport, InvalidName, NamedFile, NameTaken, validate_name
from .kv import KVStore

__all__ = [
    "BlobSizeMismatch",
    "FileInfo",
    "FileStore",
    "GcReport",
    "Interface",
    "InvalidName",
    "KVStore",
    "NameTaken",
    "NamedFile",
    "validate_name",
]
