"""The sync layer: the import gate, the applier, the hub exchange and the status export,
joined by ``agent.Agent`` (the composition root every entry point goes through)."""
