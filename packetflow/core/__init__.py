"""The pure model: intents, contexts, capabilities, effects and reactor signatures. No I/O."""
