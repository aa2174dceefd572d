"""``python -m packetflow``: the same as the ``packetflow`` command."""

from packetflow.cli.app import main

main()
