"""The application layer: the `vjepa` command line and `vjepa demo`, above the library and the evaluations."""
