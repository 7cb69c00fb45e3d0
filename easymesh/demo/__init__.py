"""Demo programs: ``python -m easymesh.demo.receiver``, ``.sender``, ``.speedtest``."""
