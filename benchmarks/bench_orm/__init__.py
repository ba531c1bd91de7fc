"""The model `benchmarks/orm.py` measures, in an app of its own."""
