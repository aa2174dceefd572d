"""Runnable example topologies: copy one to start your own."""
