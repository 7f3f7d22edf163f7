"""Small C sources compiled with the machine's compiler on first use (see build.py)."""
