"""Webhooks: a tenant's endpoints for the agent's hook events (types, queries, mutations)."""
