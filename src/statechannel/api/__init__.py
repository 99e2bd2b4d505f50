"""HTTP API of node and watchtower.

`app.create_app` builds the node's API; `client.ApiClient` talks to it. Nothing is imported here, so a
client does not pay for loading FastAPI and the node."""
