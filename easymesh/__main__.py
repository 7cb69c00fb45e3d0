"""``python -m easymesh``: run the coordinator (same as the ``easymesh`` command)."""

from easymesh.cli.coordinator import entry

if __name__ == "__main__":
    entry()
