"""Storage adapters: each port of ``pulseboard.ports`` with the implementations chosen by URL."""
