"""Operator tooling: the ``manage.py buckethead`` command and the pieces it is built from."""
