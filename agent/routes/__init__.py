"""HTTP and websocket routes of the agent."""
