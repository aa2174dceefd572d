"""PacketFlow command-line interface."""
