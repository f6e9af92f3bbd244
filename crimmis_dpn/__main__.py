"""``python -m crimmis_dpn`` is the ``dpn`` command."""

from crimmis_dpn.cli import main

if __name__ == "__main__":
    main()
