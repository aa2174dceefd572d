"""The engine: codec, transports (kafka, memory), consumer loop, state, dead letters, workers."""
