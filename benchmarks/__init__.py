"""Speed, memory and MFU benchmarks of training and evaluation (see README.md): `python benchmarks/run.py`."""
