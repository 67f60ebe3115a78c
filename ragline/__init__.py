"""Ragline's shared package: contracts, settings, topology, observability, endpoint clients,
search adapters, the local platform and the CLI. Bounded contexts live in `functions/`."""
