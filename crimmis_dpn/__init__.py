"""crimmis-dpn command-line interface, demo and client."""

__all__: list[str] = []
