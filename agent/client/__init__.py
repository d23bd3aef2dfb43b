"""The command-line client: runs workflows and apps on an agent over HTTP/websocket."""
