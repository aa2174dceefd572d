"""The three contestants: raw aiokafka (the ceiling), faust-streaming (the peer), PacketFlow."""
