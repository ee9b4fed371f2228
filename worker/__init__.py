"""The worker: arq jobs that react to outbox events, the relay that feeds them, the sweeper."""
