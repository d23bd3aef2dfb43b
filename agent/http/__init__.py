"""The agent's HTTP surface: who may call it from a browser and how it is forwarded."""
