"""PacketFlow side by side with raw aiokafka and faust-streaming: ``python -m benchmarks``."""
